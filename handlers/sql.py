"""Set-based, version-guarded upserts built from the models' tables (compiled once, cached)."""

from typing import Sequence

from sqlalchemy import BigInteger, Table, any_, bindparam, cast, column, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert


def unnest_upsert(table: Table, columns: Sequence[str], update: Sequence[str]) -> Insert:
    """INSERT INTO t (cols) SELECT * FROM unnest($1::type[], ...) ON CONFLICT (id) DO UPDATE
    SET ... WHERE excluded.version > t.version. One bind parameter (a list) per column."""
    cols = [table.c[name] for name in columns]
    source = (
        func.unnest(*[cast(bindparam(c.name), ARRAY(c.type)) for c in cols])
        .table_valued(*[column(c.name, c.type) for c in cols])
        .render_derived(name="batch")
    )
    stmt = insert(table).from_select(list(columns), select(*source.c))
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id],
        set_={name: stmt.excluded[name] for name in update},
        where=stmt.excluded.version > table.c.version,
    )


def stored_versions_then(table: Table, upsert: Insert | None) -> Select:
    """SELECT id, version of the batch's entities as they were before `upsert`, which runs in the
    same statement (a data-modifying CTE sees the pre-statement snapshot)."""
    ids = cast(bindparam("entity_ids"), ARRAY(BigInteger))
    stmt = select(table.c.id, table.c.version).where(table.c.id == any_(ids))
    if upsert is not None:
        stmt = stmt.add_cte(upsert.cte("apply_full_state"))
    return stmt


def columns_of(rows: Sequence[dict], columns: Sequence[str]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in columns}
