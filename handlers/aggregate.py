"""One aggregate (users, orders): how its events collapse and how they are written."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.collapse import EntityChange, applies_one_by_one, collapse
from handlers.sql import columns_of, stored_versions_then, unnest_upsert

Row = dict[str, object]


@dataclass(frozen=True, slots=True)
class Applied:
    applied: int
    stale: int
    # per event given to apply(), in order: applied (True) or stale; for metrics, not compared
    outcomes: tuple[bool, ...] = field(default=(), compare=False)


class Aggregate:
    """Full-state events replace the row; partial events (delete, cancel) patch it. Both are
    version-guarded upserts; the partial one inserts a placeholder row when the entity is absent."""

    def __init__(
        self,
        name: str,
        table: Table,
        full_event_types: frozenset[str],
        partial_event_types: frozenset[str],
        full_row: Callable[[EntityChange], Row],
        patch_row: Callable[[EntityChange], Row],
        patch_update: Sequence[str],
    ) -> None:
        self.name = name
        self.table = table
        self.full_event_types = full_event_types
        self.event_types = full_event_types | partial_event_types
        self._full_row = full_row
        self._patch_row = patch_row
        columns = [c.name for c in table.columns]
        self._columns = columns
        self._full_upsert = unnest_upsert(table, columns, [c for c in columns if c not in ("id", "created_at")])
        self._patch_upsert = unnest_upsert(table, columns, patch_update)
        self._versions_with_full = stored_versions_then(table, self._full_upsert)
        self._versions_only = stored_versions_then(table, None)

    def _is_full(self, event) -> bool:
        return event.event_type in self.full_event_types

    async def apply(self, conn: AsyncConnection, events: Sequence) -> Applied:
        """Applies events (in offset order) inside the caller's transaction. Never commits."""
        changes, _ = collapse(events, self._is_full)
        if not changes:
            return Applied(0, 0, ())
        entity_ids = [c.entity_id for c in changes]
        full_rows = [self._full_row(c) for c in changes if c.full is not None]
        if full_rows:
            params = {"entity_ids": entity_ids, **columns_of(full_rows, self._columns)}
            result = await conn.execute(self._versions_with_full, params)
        else:
            result = await conn.execute(self._versions_only, {"entity_ids": entity_ids})
        stored = {row.id: row.version for row in result}
        patch_rows = [self._patch_row(c) for c in changes if c.patch is not None]
        if patch_rows:
            await conn.execute(self._patch_upsert, columns_of(patch_rows, self._columns))
        outcomes = tuple(applies_one_by_one(events, stored))
        applied = sum(outcomes)
        return Applied(applied, len(outcomes) - applied, outcomes)
