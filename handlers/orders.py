from handlers.aggregate import Aggregate, Row
from handlers.collapse import EntityChange
from database.models import Order

COLUMNS = ("id", "user_id", "total", "status", "version", "created_at", "updated_at")


def _full_row(change: EntityChange) -> Row:
    event = change.full
    data = event.data
    return (change.entity_id, data.user_id, data.total, data.status, event.version, change.first_occurred_at, event.occurred_at)


def _cancel_row(change: EntityChange) -> Row:
    # Inserted only when the order is absent: a placeholder that remembers the cancel's version.
    event = change.patch
    return (change.entity_id, None, None, "cancelled", event.version, change.first_occurred_at, event.occurred_at)


orders = Aggregate(
    name="orders",
    table=Order.__table__,
    full_event_types=frozenset({"order.created", "order.updated"}),
    partial_event_types=frozenset({"order.cancelled"}),
    columns=COLUMNS,
    full_row=_full_row,
    patch_row=_cancel_row,
    patch_update=("status", "version", "updated_at"),
)
