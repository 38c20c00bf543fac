"""The native path's binary COPY (native/src/lib.rs -> handlers.native -> Aggregate._write_copied)
against the Python path's array literals (pydantic + handlers.apply), in the real
PostgreSQL: the same batches, applied one after another through each path, must leave identical
`users` and `orders` rows (every column, compared by repr: the numeric's scale and the exact
instants included) and identical applied/stale counts; both are also held to tests.model.ReadModel.

1. hypothesis: few entities, few versions (so later batches hit the ON CONFLICT path and stale
   events occur), deletes/cancels (patch rows, placeholders), adversarial totals, timestamps,
   names and emails;
2. the project's generator (bench/workload.py's traffic) in consecutive batches;
3. the per-connection batch tables (temporary, ON COMMIT DELETE ROWS) across a rolled-back
   transaction and across successive transactions on one connection.
"""

import calendar
import json
import string
import uuid
from collections import Counter
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aiokafka import TopicPartition

from consumer.generate import Generator, topic_for
from consumer.offsets import lock_positions
from handlers.apply import Outcomes, PreparedEvents, prepare_events, write_prepared
from handlers.decode import Poison, Tombstone
from handlers.events import BIGINT_MAX
from handlers.native import NativePath
from handlers.registry import build_registry
from tests.model import OrderRow, ReadModel, UserRow, diff, rows_from_db
from tests.tricky import TRICKY_EMAILS, TRICKY_NAMES

REGISTRY = build_registry()
NATIVE = NativePath(REGISTRY)
decode = REGISTRY.decode
USERS_FULL, USERS_PATCH = (t.name for t in REGISTRY["user.created"].batch_tables)
ORDERS_FULL, ORDERS_PATCH = (t.name for t in REGISTRY["order.created"].batch_tables)
BATCH_TABLES = (USERS_FULL, USERS_PATCH, ORDERS_FULL, ORDERS_PATCH)

Chunk = tuple[str, list[bytes]]  # (topic, values in offset order): one partition's records
Batch = list[Chunk]


# -- writing through each path ------------------------------------------------------------------


def native_prepare(batch: Batch):
    part = NATIVE.part()
    for topic, values in batch:
        declined = part.add(values, topic)
        assert declined == [], declined  # valid events, all in the native path's range
    parts = part.finish()
    prepared, labels = PreparedEvents(parts), [label for _, labels in parts for label in labels]
    for p, _ in prepared.parts:  # really the production form: binary COPY data
        assert p.copied and p.native is not None
        assert all(rows is None or isinstance(rows, bytes) for rows in (p.full_rows, p.patch_rows))
    return prepared, labels


async def first_statement(conn, batch: Batch) -> None:
    """What consumer.loop._apply_in runs before write_prepared: lock_positions, a SELECT ... FOR
    UPDATE of the batch's partitions. It matters: SQLAlchemy's asyncpg adapter sends BEGIN only
    with a transaction's first execute, and Aggregate._write_copied COPYs through the driver
    connection, so a COPY that comes first runs (and commits) outside the transaction (see
    test_rows_copied_by_the_transactions_first_statement_are_kept)."""
    await lock_positions(conn, "test-native-copy", sorted({TopicPartition(topic, 0) for topic, _ in batch}))


async def write_native(engine: AsyncEngine, batch: Batch) -> Counter:
    """As consumer.loop._apply does it: a connection, its batch tables, one transaction."""
    prepared, labels = native_prepare(batch)
    async with engine.begin() as conn:
        await first_statement(conn, batch)
        counts = as_counts(await write_prepared(conn, prepared))
    assert Counter(labels) == Counter(python_labels(batch))
    return counts


def python_labels(batch: Batch) -> list[tuple[str, str]]:
    return [(topic, decode(v).event_type) for topic, values in batch for v in values]


def python_prepare(batch: Batch):
    events, labels = [], []
    for topic, values in batch:
        for value in values:
            event = decode(value)
            assert not isinstance(event, (Poison, Tombstone)), (value, event)
            events.append(event)
            labels.append((topic, event.event_type))
    return prepare_events(REGISTRY, events, labels)


async def write_python(engine: AsyncEngine, batch: Batch) -> Counter:
    prepared = python_prepare(batch)
    async with engine.begin() as conn:
        return as_counts(await write_prepared(conn, prepared))


async def truncate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE users, orders"))


async def read_tables(engine: AsyncEngine) -> tuple[list, list]:
    async with engine.connect() as conn:
        users = (await conn.execute(text("SELECT * FROM users ORDER BY id"))).all()
        orders = (await conn.execute(text("SELECT * FROM orders ORDER BY id"))).all()
    return users, orders


def exact(rows: list) -> list[tuple[str, ...]]:
    """Rows as the reprs of their values: Decimal('12.50') is not Decimal('12.5'), a datetime's
    tzinfo and microseconds show, a str's every character."""
    return [tuple(repr(v) for v in row) for row in rows]


def as_counts(outcomes: Outcomes) -> Counter:
    """The totals and the per-label counts in one Counter, as model_counts gives them."""
    counts = outcomes.totals()
    counts.update({("applied", label): n for label, n in outcomes.applied.items() if n})
    counts.update({("stale", label): n for label, n in outcomes.stale.items() if n})
    return counts


def model_counts(model: ReadModel, batch: Batch) -> Counter:
    """The pure model's verdicts for one batch, event by event, counted as write_prepared counts."""
    counts: Counter = Counter(applied=0, stale=0)
    for topic, values in batch:
        for value in values:
            event = decode(value)  # pydantic, the authority
            assert not isinstance(event, (Poison, Tombstone)), (value, event)
            verdict = "applied" if model.apply(event) else "stale"
            counts[verdict] += 1
            counts[(verdict, (topic, event.event_type))] += 1
    return counts


def assert_model_matches(model: ReadModel, users: list, orders: list) -> None:
    problems = diff(model.users, rows_from_db(users, UserRow)) + diff(model.orders, rows_from_db(orders, OrderRow))
    assert not problems, "database differs from the model:\n" + "\n".join(problems)
    assert len(users) == len(model.users) and len(orders) == len(model.orders)


def first_difference(mine: list, theirs: list) -> str:
    for a, b in zip(mine, theirs):
        if a != b:
            return f"native {a}\npython {b}"
    return f"{len(mine)} native rows, {len(theirs)} python rows"


async def assert_paths_agree(engine: AsyncEngine, batches: list[Batch]) -> tuple[list, list]:
    """The batches in turn through the native path, then (from empty tables) through the Python
    path: identical tables and counts, and both as the model says. Returns the tables."""
    await truncate(engine)
    native_counts = [await write_native(engine, batch) for batch in batches]
    native_users, native_orders = await read_tables(engine)
    await truncate(engine)
    python_counts = [await write_python(engine, batch) for batch in batches]
    python_users, python_orders = await read_tables(engine)

    assert exact(native_users) == exact(python_users), "users differ:\n" + first_difference(exact(native_users), exact(python_users))
    assert exact(native_orders) == exact(python_orders), "orders differ:\n" + first_difference(exact(native_orders), exact(python_orders))
    assert native_counts == python_counts

    model = ReadModel()
    expected_counts = [model_counts(model, batch) for batch in batches]
    assert native_counts == expected_counts
    assert_model_matches(model, native_users, native_orders)
    return native_users, native_orders


# -- 1. hypothesis: adversarial valid values -----------------------------------------------------

_OFFSETS = ["Z", "Z", "+00:00", "-00:30", "+05:30", "-11:00", "+14:00", "-14:00", "-23:59", "+23:59", "+00:01"]
_YEARS = st.sampled_from([2, 3, 4, 100, 1600, 1900, 1970, 1999, 2000, 2023, 2024, 2026, 2100, 2400, 9996, 9997, 9998]) | st.integers(2, 9998)
_CLOCKS = st.sampled_from([(0, 0, 0), (23, 59, 59), (0, 0, 1), (12, 30, 0)]) | st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))


@st.composite
def timestamps(draw) -> str:
    """YYYY-MM-DDTHH:MM:SS[.f{0,6}](Z|±HH:MM), biased to leap days, month and year ends, years 2 and 9998."""
    year = draw(_YEARS)
    month = draw(st.sampled_from([1, 2, 2, 3, 12]) | st.integers(1, 12))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.sampled_from([1, last, last - 1, 28]) | st.integers(1, last))
    hour, minute, second = draw(_CLOCKS)
    digits = draw(st.integers(0, 6))
    fraction = "." + draw(st.text("0123456789", min_size=digits, max_size=digits)) if digits else ""
    if digits and draw(st.booleans()):
        fraction = "." + draw(st.sampled_from(["0", "9"])) * digits
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{draw(st.sampled_from(_OFFSETS))}"


_TOTAL_TEXTS = ["0", "0.0", "0.00", "0.05", "0.5", "1", "1.1", "1.10", "12.5", "12.50", "0012.50", "0000000000", "0000000000.01",
                "100", "1000", "9999", "10000", "10000.0", "10000.01", "10000.10", "99999999.99", "100000000", "100000000.01",
                "9999999999", "9999999999.9", "9999999999.99", "1234567890.12"]
_TOTAL_INTS = [0, 1, 99, 100, 9999, 10000, 10001, 99999999, 100000000, 100010000, 9999999999]
_TOTAL_FLOATS = [0.0, 0.01, 0.05, 0.07, 0.1, 0.29, 0.5, 1.1, 12.5, 100.0, 10000.0, 10000.01, 99999999.99, 9999999999.0, 9999999999.99]


@st.composite
def plain_decimal_text(draw) -> str:
    places = draw(st.integers(0, 2))
    unscaled = draw(st.integers(0, 10**10 * 10**places - 1))
    int_part, frac = divmod(unscaled, 10**places)
    width = draw(st.integers(1, 10))  # leading zeros, up to 10 integer digits
    return f"{int_part:0{width}d}" + (f".{frac:0{places}d}" if places else "")


@st.composite
def float_totals(draw) -> float:
    places = draw(st.integers(0, 2))
    return draw(st.integers(0, 10**10 * 10**places - 1)) / 10**places


_totals = st.one_of(
    st.sampled_from(_TOTAL_TEXTS),
    plain_decimal_text(),
    st.sampled_from(_TOTAL_INTS),
    st.integers(0, 10**10 - 1),
    st.sampled_from(_TOTAL_FLOATS),
    float_totals(),
)

_names = st.one_of(
    st.sampled_from(TRICKY_NAMES),
    st.sampled_from(['a"b', "c\\d", "e,f", "{g}", "h\ni", "j\tk", "😀", "Zoë 😀 \"q\" \\ {a,b}\n\t", "日本語", "x" * 100, "\\N", "\\.", "\r"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=100),
)

_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
_local = st.lists(st.text(_ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True).filter(lambda s: "--" not in s)
_tld = st.sampled_from(["com", "COM", "Org", "io", "DE", "eXample", "museum"])
_emails = st.one_of(
    st.sampled_from(TRICKY_EMAILS),
    st.builds(lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}", _local, st.lists(_label, min_size=1, max_size=3), _tld),
)

_ids = st.integers(1, 4) | st.sampled_from([BIGINT_MAX, 10**12])
_versions = st.integers(1, 6) | st.sampled_from([BIGINT_MAX - 1, BIGINT_MAX])
_EVENT_TYPES = ["user.created", "user.updated", "user.deleted", "order.created", "order.updated", "order.cancelled"]


@st.composite
def events(draw) -> dict:
    event_type = draw(st.sampled_from(_EVENT_TYPES))
    entity_id = draw(_ids)
    if event_type in ("user.created", "user.updated"):
        data = {"id": entity_id, "email": draw(_emails), "name": draw(_names)}
        if draw(st.booleans()):
            data["is_active"] = draw(st.booleans())
    elif event_type in ("order.created", "order.updated"):
        data = {"id": entity_id, "user_id": draw(st.integers(1, 3) | st.just(BIGINT_MAX)), "total": draw(_totals),
                "status": draw(st.sampled_from(["pending", "paid", "shipped", "delivered", "cancelled"]))}
    else:
        data = {"id": entity_id}
    return {"event_id": str(draw(st.uuids())), "event_type": event_type, "occurred_at": draw(timestamps()),
            "version": draw(_versions), "data": data}


def encode(event: dict, how: str) -> bytes:
    if how == "orjson":
        return orjson.dumps(event)
    return json.dumps(event, ensure_ascii=how == "json-ascii").encode()


@st.composite
def batches(draw) -> list[Batch]:
    """1 to 4 batches of 1 to 10 events, each split into consecutive chunks (partitions) on the
    "users" or "orders" topic: by event type, or anyhow (a label is only a label)."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        batch: Batch = []
        by_type = draw(st.booleans())
        how = draw(st.sampled_from(["orjson", "orjson", "json", "json-ascii"]))
        for event in draw(st.lists(events(), min_size=1, max_size=10)):
            topic = topic_for(event) if by_type else draw(st.sampled_from(["users", "orders"]))
            if batch and batch[-1][0] == topic and draw(st.integers(0, 3)):
                batch[-1][1].append(encode(event, how))
            else:
                batch.append((topic, [encode(event, how)]))
        out.append(batch)
    return out


def _e(event_type: str, entity_id: int, version: int, occurred_at: str, **data) -> bytes:
    return orjson.dumps({"event_id": str(uuid.UUID(int=entity_id * 10**6 + version * 100 + len(event_type))), "event_type": event_type,
                         "occurred_at": occurred_at, "version": version, "data": {"id": entity_id, **data}})


def _order(entity_id: int, version: int, total, at: str = "2024-02-29T23:59:59.999999-11:00") -> bytes:
    return _e("order.updated", entity_id, version, at, user_id=7, total=total, status="paid")


def _user(entity_id: int, version: int, name: str, email: str = "Ada@Example.COM", at: str = "2000-02-29T00:00:00.5+05:30") -> bytes:
    return _e("user.updated", entity_id, version, at, email=email, name=name)


# The listed adversarial values for certain, in three batches (each later one updates the rows).
HAND_MADE = [
    [("orders", [_order(i + 1, 1, t, "2024-02-29T23:59:59.999999-23:59")
                for i, t in enumerate(["0", "0.05", "12.5", "9999999999.99", "0012.50", "100", "10000", "10000.01", "1.10"])]),
     ("users", [_user(1, 1, 'q"uo\\te,{}\n\t😀é'), _e("user.deleted", 2, 3, "0002-01-01T00:00:00+14:00")])],
    [("orders", [_order(i + 1, 2, t, "9998-12-31T23:59:59.1-11:00") for i, t in enumerate([0, 0.05, 12.5, 9999999999.99, 12, 100, 10000, 10000.01, 1.1])]
      + [_e("order.cancelled", 3, 3, "2100-02-28T23:59:59Z"), _e("order.cancelled", 20, 1, "1900-02-28T12:00:00.123-23:59")]),
     ("users", [_user(2, 4, "revived", at="2024-12-31T23:59:59.99999+14:00"), _e("user.deleted", 1, 2, "2026-03-31T00:00:00.000001Z")])],
    [("orders", [_order(1, 1, "5"), _order(20, 2, "10000.10", "0002-03-01T00:00:00-23:59")]),
     ("users", [_user(1, 3, "back", at="2400-02-29T12:00:00.000000Z"), _user(1, 3, "stale duplicate")])],
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=batches())
@example(batches=HAND_MADE)
async def test_hypothesis_batches_leave_the_same_rows(engine, batches):
    await assert_paths_agree(engine, batches)


# -- 2. the project's generator, in consecutive batches -------------------------------------------


def generated_batches(seed: int, n: int, count: int) -> list[Batch]:
    """bench/workload.py's traffic (5% duplicates, 5% late older versions, 30% users), cut into
    `count` consecutive batches, each as the users and orders topics' three partitions."""
    events = Generator(seed).stream(n, duplicates=0.05, older=0.05, user_share=0.3)
    size = -(-len(events) // count)
    out = []
    for start in range(0, len(events), size):
        partitions: dict[tuple[str, int], list[bytes]] = {}
        for event in events[start : start + size]:
            partitions.setdefault((topic_for(event), event["data"]["id"] % 3), []).append(orjson.dumps(event))
        out.append([(topic, values) for (topic, _), values in sorted(partitions.items())])
    return out


@pytest.mark.parametrize(("seed", "count"), [(5, 3), (23, 4)])
async def test_generated_traffic_leaves_the_same_rows(engine, clean_db, seed, count):
    batches = generated_batches(seed, 4000, count)
    users, orders = await assert_paths_agree(engine, batches)
    # the traffic exercised what it should: placeholders or deleted users, cancelled orders, updates
    assert len(users) > 100 and len(orders) > 100
    assert any(row.deleted_at is not None for row in users)
    assert any(row.status == "cancelled" for row in orders)
    assert any(row.version > 1 for row in users) and any(row.version > 1 for row in orders)
    assert all(isinstance(row.total, Decimal) and row.total.as_tuple().exponent == -2 for row in orders if row.total is not None)


# -- 3. the batch tables: a rolled-back transaction, successive transactions ------------------------


class Boom(Exception):
    pass


async def batch_table_counts(conn) -> dict[str, int]:
    """Rows in this connection's batch tables (inside the caller's transaction)."""
    return {name: (await conn.execute(text(f"SELECT count(*) FROM {name}"))).scalar_one() for name in BATCH_TABLES}


EMPTY = {name: 0 for name in BATCH_TABLES}

AT = "2026-02-28T23:59:59.5+05:30"
DOOMED: Batch = [
    ("users", [_user(i, 1, f"doomed {i}", at=AT) for i in range(1, 6)] + [_e("user.deleted", 6, 2, AT)]),
    ("orders", [_order(i, 1, "12.50", AT) for i in range(1, 4)] + [_e("order.cancelled", 4, 2, AT)]),
]
GOOD: Batch = [
    ("users", [_user(10, 1, "kept"), _user(11, 2, "kept too"), _e("user.deleted", 13, 1, AT)]),
    ("orders", [_order(10, 1, "0.05"), _e("order.cancelled", 14, 1, AT)]),
]
FIRST: Batch = [("users", [_user(i, 1, f"first {i}") for i in range(1, 4)] + [_e("user.deleted", 4, 1, AT)]),
                ("orders", [_order(i, 1, "1.10") for i in range(1, 3)] + [_e("order.cancelled", 3, 1, AT)])]
SECOND: Batch = [("users", [_user(5, 1, "second"), _user(1, 2, "first, updated")]), ("orders", [_order(5, 1, "100")])]


async def expected_tables(engine: AsyncEngine, batch: Batch) -> tuple[list, list]:
    """One batch alone on the Python path, from empty tables."""
    await truncate(engine)
    await write_python(engine, batch)
    return tuple(exact(rows) for rows in await read_tables(engine))


async def test_batch_tables_survive_a_rolled_back_transaction(engine, clean_db):
    want = await expected_tables(engine, GOOD)
    await truncate(engine)
    doomed, _ = native_prepare(DOOMED)
    good, _ = native_prepare(GOOD)
    async with engine.connect() as conn:
        with pytest.raises(Boom):
            async with conn.begin():
                await first_statement(conn, DOOMED)
                counts = as_counts(await write_prepared(conn, doomed))
                assert counts["applied"] == 10 and counts["stale"] == 0
                assert await batch_table_counts(conn) == {USERS_FULL: 5, USERS_PATCH: 1, ORDERS_FULL: 3, ORDERS_PATCH: 1}
                assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 6
                raise Boom  # e.g. a StaleBatch, or a failed dead-letter send: the transaction rolls back
        async with conn.begin():
            # the tables are still there (created and committed at checkout), empty
            for name in BATCH_TABLES:
                assert (await conn.execute(text("SELECT to_regclass(:name)"), {"name": f"pg_temp.{name}"})).scalar_one() is not None, name
            assert await batch_table_counts(conn) == EMPTY
            assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0
        async with conn.begin():
            await first_statement(conn, GOOD)
            counts = as_counts(await write_prepared(conn, good))
            assert await batch_table_counts(conn) == {USERS_FULL: 2, USERS_PATCH: 1, ORDERS_FULL: 1, ORDERS_PATCH: 1}
        assert counts == model_counts(ReadModel(), GOOD)  # as on empty tables
        async with conn.begin():
            assert await batch_table_counts(conn) == EMPTY  # emptied at the commit
    assert tuple(exact(rows) for rows in await read_tables(engine)) == want  # nothing of the rolled-back batch


async def test_successive_transactions_do_not_see_each_others_batch_rows(engine, clean_db):
    want = await expected_tables(engine, SECOND)
    await truncate(engine)
    first, _ = native_prepare(FIRST)
    second, _ = native_prepare(SECOND)
    async with engine.connect() as conn:
        async with conn.begin():
            await first_statement(conn, FIRST)
            counts = as_counts(await write_prepared(conn, first))
            assert await batch_table_counts(conn) == {USERS_FULL: 3, USERS_PATCH: 1, ORDERS_FULL: 2, ORDERS_PATCH: 1}
        assert (counts["applied"], counts["stale"]) == (7, 0)
        # Empty the read model, on the same connection: were the first batch's rows still in the
        # batch tables, the second transaction's upserts (which read the whole tables) would write them again.
        async with conn.begin():
            await conn.execute(text("TRUNCATE users, orders"))
            assert await batch_table_counts(conn) == EMPTY
        async with conn.begin():
            await first_statement(conn, SECOND)
            counts = as_counts(await write_prepared(conn, second))
            assert await batch_table_counts(conn) == {USERS_FULL: 2, USERS_PATCH: 0, ORDERS_FULL: 1, ORDERS_PATCH: 0}
        assert counts == model_counts(ReadModel(), SECOND)  # as on empty tables
        assert (counts["applied"], counts["stale"]) == (3, 0)
    assert tuple(exact(rows) for rows in await read_tables(engine)) == want


# -- 4. the two discrepancies found, each as its smallest input --------------------------------------


async def test_rows_copied_by_the_transactions_first_statement_are_kept(engine, clean_db):
    """Aggregate.write "writes a prepared batch inside the caller's transaction": here
    write_prepared is the transaction's first statement (as in handlers/native.py's recipe, or
    any caller that has nothing to lock first)."""
    batch: Batch = [("users", [_user(1, 1, "Ada")]), ("orders", [_order(1, 1, "1.10")])]
    want = await expected_tables(engine, batch)
    await truncate(engine)
    prepared, _ = native_prepare(batch)
    async with engine.connect() as conn:
        async with conn.begin():
            counts = as_counts(await write_prepared(conn, prepared))
    assert counts == model_counts(ReadModel(), batch)
    assert tuple(exact(rows) for rows in await read_tables(engine)) == want


@pytest.mark.parametrize("offset", ["+15:59", "-15:59", "+16:00", "-23:59", "+23:59"])
async def test_offsets_the_contract_allows_leave_the_same_rows(engine, clean_db, offset):
    """The contract (pydantic's AwareDatetime) and both decoders take any offset under 24 h."""
    batch: Batch = [("users", [_user(1, 1, "Ada", at=f"2026-01-02T03:04:05{offset}"), _e("user.deleted", 2, 1, f"2026-01-02T03:04:05{offset}")]),
                    ("orders", [_order(1, 1, "1.10", at=f"2024-02-29T23:59:59.999999{offset}")])]
    await assert_paths_agree(engine, [batch])
