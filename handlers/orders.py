from handlers.aggregate import Aggregate, Row
from handlers.collapse import EntityChange
from database.models import Order


def _full_row(change: EntityChange) -> Row:
    event = change.full
    return {
        "id": change.entity_id,
        "user_id": event.data.user_id,
        "total": event.data.total,
        "status": event.data.status,
        "version": event.version,
        "created_at": change.first_occurred_at,
        "updated_at": event.occurred_at,
    }


def _cancel_row(change: EntityChange) -> Row:
    # Inserted only when the order is absent: a placeholder that remembers the cancel's version.
    event = change.patch
    return {
        "id": change.entity_id,
        "user_id": None,
        "total": None,
        "status": "cancelled",
        "version": event.version,
        "created_at": change.first_occurred_at,
        "updated_at": event.occurred_at,
    }


orders = Aggregate(
    name="orders",
    table=Order.__table__,
    full_event_types=frozenset({"order.created", "order.updated"}),
    partial_event_types=frozenset({"order.cancelled"}),
    full_row=_full_row,
    patch_row=_cancel_row,
    patch_update=("status", "version", "updated_at"),
)
