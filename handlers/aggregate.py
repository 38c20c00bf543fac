"""One aggregate (a compiled handlers.projection.Projection): how its events collapse and how they are written."""

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.collapse import EntityChange, applies_one_by_one, collapse
from handlers.projection import Projection
from handlers.sql import array_literal, batch_table, columns_params, copied_upsert, stored_versions_then, unnest_upsert

Row = tuple  # a row's values in its Aggregate's `columns` order


@dataclass(frozen=True, slots=True)
class Applied:
    applied: int
    stale: int
    # per event given to apply(), in order: applied (True) or stale; for metrics, not compared
    outcomes: tuple[bool, ...] = field(default=(), compare=False)


class Aggregate:
    """One projection compiled: its version-guarded upserts and the Python path's row builders.
    Full-state events replace the row; patch events (delete, cancel) update some columns, and
    insert a placeholder row when the entity is absent."""

    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self.name = projection.name
        self.table = table = projection.table
        self.full_event_types = projection.full_event_types
        self.event_types = frozenset(projection.models)
        self.columns = columns = projection.column_names
        self._full_sources = tuple(projection.sources("full").values())
        self._patch_sources = tuple(projection.sources("patch").values())
        self._timestamps = frozenset(c.name for c in table.columns if isinstance(c.type, DateTime))
        full_update, patch_update = projection.updates("full"), projection.updates("patch")
        self._full_upsert = unnest_upsert(table, columns, full_update)
        self._patch_upsert = unnest_upsert(table, columns, patch_update)
        self._versions_with_full = stored_versions_then(table, self._full_upsert)
        self._versions_only = stored_versions_then(table, None)
        # The native path's rows arrive by binary COPY into batch tables (handlers.native).
        self.batch_tables = (batch_table(table, columns, "full"), batch_table(table, columns, "patch"))
        self._copied_full_upsert = copied_upsert(table, self.batch_tables[0], full_update)
        self._copied_patch_upsert = copied_upsert(table, self.batch_tables[1], patch_update)
        self._versions_with_copied_full = stored_versions_then(table, self._copied_full_upsert)

    def _full_row(self, change: EntityChange) -> Row:
        event = change.full
        return tuple(source.value(change, event) for source in self._full_sources)

    def _patch_row(self, change: EntityChange) -> Row:
        event = change.patch
        return tuple(source.value(change, event) for source in self._patch_sources)

    def _is_full(self, event) -> bool:
        return event.event_type in self.full_event_types

    def prepare(self, events: Sequence) -> "Prepared":
        """Pure: the batch's events (in offset order) collapsed into the statements' parameters.
        The loop prepares the next batch while the database works on this one."""
        changes, _ = collapse(events, self._is_full)
        full_rows = [self._full_row(c) for c in changes if c.full is not None]
        patch_rows = [self._patch_row(c) for c in changes if c.patch is not None]
        return Prepared(
            aggregate=self,
            events=events,
            entities=len(changes),
            entity_ids=array_literal([c.entity_id for c in changes]),
            full_rows=columns_params(self.columns, full_rows, self._timestamps) if full_rows else None,
            patch_rows=columns_params(self.columns, patch_rows, self._timestamps) if patch_rows else None,
        )

    async def write(self, conn: AsyncConnection, prepared: "Prepared") -> Applied:
        """Writes a prepared batch inside the caller's transaction. Never commits."""
        if not prepared.entities:
            return Applied(0, 0, ())
        if prepared.copied:
            return await self._write_copied(conn, prepared)
        if prepared.full_rows is not None:
            result = await conn.execute(self._versions_with_full, {"entity_ids": prepared.entity_ids, **prepared.full_rows})
        else:
            result = await conn.execute(self._versions_only, {"entity_ids": prepared.entity_ids})
        ids, versions = result.one()
        stored = dict(zip(ids, versions)) if ids else {}
        if prepared.patch_rows is not None:
            await conn.execute(self._patch_upsert, prepared.patch_rows)
        return self._applied(prepared, stored)

    async def _write_copied(self, conn: AsyncConnection, prepared: "Prepared") -> Applied:
        """The native path: the rows as binary COPY data into this connection's batch tables
        (created by handlers.native.prepare_connection, emptied at commit), then the same
        version-guarded upserts reading them."""
        driver = (await conn.get_raw_connection()).driver_connection
        if not driver.is_in_transaction():
            # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement it executes; a
            # COPY straight on the driver before it would commit on its own (and the batch table
            # be emptied at once).
            await conn.exec_driver_sql("SELECT 1")
        full_table, patch_table = self.batch_tables
        if prepared.full_rows is not None:
            await driver.copy_to_table(full_table.name, source=io.BytesIO(prepared.full_rows), format="binary")
            result = await conn.execute(self._versions_with_copied_full, {"entity_ids": prepared.entity_ids})
        else:
            result = await conn.execute(self._versions_only, {"entity_ids": prepared.entity_ids})
        ids, versions = result.one()
        stored = dict(zip(ids, versions)) if ids else {}
        if prepared.patch_rows is not None:
            await driver.copy_to_table(patch_table.name, source=io.BytesIO(prepared.patch_rows), format="binary")
            await conn.execute(self._copied_patch_upsert)
        return self._applied(prepared, stored)

    @staticmethod
    def _applied(prepared: "Prepared", stored: dict[int, int]) -> Applied:
        if prepared.native is not None:
            outcomes = prepared.native.outcomes(stored)
        else:
            outcomes = tuple(applies_one_by_one(prepared.events, stored))
        applied = sum(outcomes)
        return Applied(applied, len(outcomes) - applied, outcomes)

    async def apply(self, conn: AsyncConnection, events: Sequence) -> Applied:
        """Applies events (in offset order) inside the caller's transaction. Never commits."""
        return await self.write(conn, self.prepare(events))


@dataclass(frozen=True, slots=True)
class Prepared:
    aggregate: Aggregate
    events: Sequence
    entities: int  # how many entities the batch changes
    entity_ids: str  # their ids, an array literal
    # the full-state upsert's parameters (an array literal per column); on the native path the
    # rows as binary COPY data (bytes); None without full-state rows
    full_rows: dict[str, str] | bytes | None
    patch_rows: dict[str, str] | bytes | None
    # the native path's per-event outcomes (events is empty then), else None
    native: Any = None
    copied: bool = False  # the rows are binary COPY data for the batch tables
