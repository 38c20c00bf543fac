from handlers.aggregate import Aggregate, Row
from handlers.collapse import EntityChange
from database.models import User


def _full_row(change: EntityChange) -> Row:
    event = change.full
    return {
        "id": change.entity_id,
        "email": event.data.email,
        "name": event.data.name,
        "is_active": event.data.is_active,
        "version": event.version,
        "deleted_at": None,  # a full state after a delete revives the user
        "created_at": change.first_occurred_at,
        "updated_at": event.occurred_at,
    }


def _delete_row(change: EntityChange) -> Row:
    # Inserted only when the user is absent: a placeholder that remembers the delete's version.
    event = change.patch
    return {
        "id": change.entity_id,
        "email": None,
        "name": None,
        "is_active": False,
        "version": event.version,
        "deleted_at": event.occurred_at,
        "created_at": change.first_occurred_at,
        "updated_at": event.occurred_at,
    }


users = Aggregate(
    name="users",
    table=User.__table__,
    full_event_types=frozenset({"user.created", "user.updated"}),
    partial_event_types=frozenset({"user.deleted"}),
    full_row=_full_row,
    patch_row=_delete_row,
    patch_update=("is_active", "version", "deleted_at", "updated_at"),
)
