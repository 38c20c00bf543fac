"""The native fast path: `ec_native`, a Rust extension built from native/ (scripts/bootstrap.sh).

For one batch part it decodes the record values, collapses them per entity and builds the upserts'
array literals, with the GIL released, so the event loop's thread runs beside it. It mirrors
handlers/fast_decode.py and is stricter still: a value it is not sure of is declined and the caller
asks pydantic (handlers.decode.decode, the authority); if pydantic finds a valid event there, the
caller prepares the whole part on the Python path instead, so the collapse stays in offset order.
tests/unit/test_native.py holds it to pydantic and to the Python path.

Optional: without the extension (or with a registry other than the built-in one, whose event
types, aggregates and columns the extension knows), the consumer runs the Python path."""

import weakref
from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable

from handlers.aggregate import Aggregate, Prepared
from handlers.apply import PreparedEvents
from handlers.sql import column_param

try:
    import ec_native
except ImportError as exc:  # not built: the Python path runs
    ec_native = None
    _IMPORT_ERROR: str | None = f"ec_native is not installed ({exc}); run scripts/bootstrap.sh with cargo on the PATH"
else:
    _IMPORT_ERROR = None


def unavailable_reason(registry: Mapping[str, Aggregate]) -> str | None:
    """None when the native path can serve this registry; otherwise why not."""
    if ec_native is None:
        return _IMPORT_ERROR
    if set(registry) != set(ec_native.EVENT_TYPES):
        return f"the registry's event types {sorted(registry)} are not the native path's {sorted(ec_native.EVENT_TYPES)}"
    columns = {"users": tuple(ec_native.USERS_COLUMNS), "orders": tuple(ec_native.ORDERS_COLUMNS)}
    for event_type, (name, is_full) in ec_native.EVENT_TYPES.items():
        aggregate = registry[event_type]
        if aggregate.name != name or (event_type in aggregate.full_event_types) != is_full:
            return f"{event_type} is handled by {aggregate.name!r} differently from the native path's {name!r}"
        if tuple(aggregate.columns) != columns[name]:
            return f"{name}: columns {aggregate.columns} are not the native path's {columns[name]}"
    return None


class NativePart:
    """One batch part on the native path: add() each partition's values in turn, then finish()."""

    def __init__(self, registry: Mapping[str, Aggregate], *, copy: bool = True) -> None:
        """copy: the rows as binary COPY data (what the consumer writes); otherwise as the Python
        path's array literals (for comparing the two)."""
        self._aggregates = {aggregate.name: aggregate for aggregate in registry.values()}
        self._builder = ec_native.PartBuilder()
        self._copy = copy

    def add(self, values: list, topic: str) -> list[int]:
        """Decodes one partition's values (offset order); returns the indices it declined."""
        return self._builder.add(values, topic)

    def finish(self) -> tuple[PreparedEvents, list]:
        """The part's prepared statements (as handlers.apply.prepare_events gives them) and the
        (topic, event_type) label of every event."""
        parts: list = []
        all_labels: list = []
        for name, entities, entity_ids, full, patch, labels, outcomes in self._builder.finish(self._copy):
            aggregate = self._aggregates[name]
            if not self._copy:
                params = [column_param(c) for c in aggregate.columns]
                full = dict(zip(params, full, strict=True)) if full is not None else None
                patch = dict(zip(params, patch, strict=True)) if patch is not None else None
            prepared = Prepared(
                aggregate=aggregate,
                events=(),
                entities=entities,
                entity_ids=entity_ids,
                full_rows=full,
                patch_rows=patch,
                native=outcomes,
                copied=self._copy,
            )
            parts.append((prepared, labels))
            all_labels += labels
        return PreparedEvents(parts), all_labels


_prepared_connections: "weakref.WeakSet" = weakref.WeakSet()


async def prepare_connection(conn: AsyncConnection, registry: Mapping[str, Aggregate]) -> None:
    """Creates the aggregates' batch tables (temporary, emptied at every commit) on this
    connection once, committed on their own so that no batch's rollback undoes them. Call it
    before the connection's transaction begins."""
    driver = (await conn.get_raw_connection()).driver_connection
    if driver in _prepared_connections:
        return
    aggregates = {aggregate.name: aggregate for aggregate in registry.values()}.values()
    for aggregate in aggregates:
        for table in aggregate.batch_tables:
            await conn.execute(CreateTable(table, if_not_exists=True))
    await conn.commit()
    _prepared_connections.add(driver)


def decode_one(value: bytes) -> tuple | None:
    """The native decoder alone (for tests and benchmarks)."""
    return ec_native.decode_one(value)


__all__: Sequence[str] = ("NativePart", "unavailable_reason", "prepare_connection", "decode_one", "ec_native")
