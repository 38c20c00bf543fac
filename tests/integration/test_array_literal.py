"""handlers.sql.array_literal read back by the real PostgreSQL: every value arrives as it left."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from handlers.sql import array_literal

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))])


async def read_back(engine, values: list, sql_type: str) -> list:
    async with engine.connect() as conn:
        return (await conn.execute(text(f"SELECT CAST(CAST(:lit AS TEXT) AS {sql_type}[])"), {"lit": array_literal(values)})).scalar_one()


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), _texts), max_size=20))
@example(values=['a"b', "c\\d", "e\nf", "\t", "null", "NULL", "", "{", "}", ",", " padded ", "é", "\u2028", "\\n", '\\"', None])
async def test_text_values_round_trip(engine, values):
    assert await read_back(engine, values, "TEXT") == values


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), max_size=20))
async def test_bigint_values_round_trip(engine, values):
    assert await read_back(engine, values, "BIGINT") == values


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2)), max_size=20))
@example(values=[Decimal(0).scaleb(-2), Decimal("1E+2"), Decimal("12.50"), None])
async def test_numeric_values_round_trip(engine, values):
    assert await read_back(engine, values, "NUMERIC") == values


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=_zones)), max_size=20))
async def test_aware_datetimes_round_trip_as_the_same_instants(engine, values):
    assert await read_back(engine, values, "TIMESTAMPTZ") == values  # aware datetimes compare as instants


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.booleans()), max_size=20))
async def test_booleans_round_trip(engine, values):
    assert await read_back(engine, values, "BOOLEAN") == values
