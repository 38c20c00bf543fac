"""Set-based, version-guarded upserts built from the models' tables (compiled once, cached).

A batch's rows travel as ONE JSON text parameter, unpacked by PostgreSQL's json_to_recordset.
Measured against one array parameter per column (unnest): the client spends about half the CPU
per event (orjson serializes the rows in C; asyncpg's array encoding checks every element), and
PostgreSQL a little more, on the other core (bench/README.md, "The write path")."""

from collections.abc import Sequence
from decimal import Decimal

import orjson
from sqlalchemy import BigInteger, Boolean, DateTime, Numeric, String, Table, Text, any_, bindparam, cast, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY, JSON, insert
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine


def _unbounded(type_: TypeEngine) -> TypeEngine:
    # The recordset's column types carry no length or scale: a too-long value must reach the
    # INSERT, whose assignment to the real column rejects it (a clear data error), rather than
    # be cut to fit by a cast.
    if isinstance(type_, String):
        return Text()
    if isinstance(type_, Numeric):
        return Numeric()
    if isinstance(type_, DateTime):
        return DateTime(timezone=type_.timezone)
    if isinstance(type_, (BigInteger, Boolean)):
        return type_
    raise TypeError(f"no recordset type for {type_!r}")


def recordset_upsert(table: Table, columns: Sequence[str], update: Sequence[str]) -> Insert:
    """INSERT INTO t (cols) SELECT cols FROM json_to_recordset(:rows) AS batch(col type, ...)
    ON CONFLICT (id) DO UPDATE SET ... WHERE excluded.version > t.version."""
    cols = [table.c[name] for name in columns]
    source = (
        func.json_to_recordset(cast(bindparam("rows", type_=Text()), JSON))
        .table_valued(*[column(c.name, _unbounded(c.type)) for c in cols])
        .render_derived(name="batch", with_types=True)
    )
    stmt = insert(table).from_select(list(columns), select(*source.c))
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={name: stmt.excluded[name] for name in update},
        where=stmt.excluded.version > table.c.version,
    )


def stored_versions_then(table: Table, upsert: Insert | None) -> Select:
    """SELECT array_agg(id), array_agg(version) of the batch's entities as they were before
    `upsert`, which runs in the same statement (a data-modifying CTE sees the pre-statement
    snapshot). Two arrays in one row: cheaper to decode than a row per entity."""
    ids = cast(bindparam("entity_ids"), ARRAY(BigInteger))
    stmt = select(func.array_agg(table.c.id), func.array_agg(table.c.version)).where(table.c.id == any_(ids))
    if upsert is not None:
        stmt = stmt.add_cte(upsert.cte("apply_full_state"))
    return stmt


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact: numeric parses the text
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def rows_json(rows: Sequence[dict]) -> str:
    return orjson.dumps(rows, default=_json_default).decode()
