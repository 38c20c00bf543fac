from handlers.aggregate import Aggregate, Row
from handlers.collapse import EntityChange
from database.models import User

COLUMNS = ("id", "email", "name", "is_active", "version", "deleted_at", "created_at", "updated_at")


def _full_row(change: EntityChange) -> Row:
    event = change.full
    data = event.data
    # deleted_at None: a full state after a delete revives the user
    return (change.entity_id, data.email, data.name, data.is_active, event.version, None, change.first_occurred_at, event.occurred_at)


def _delete_row(change: EntityChange) -> Row:
    # Inserted only when the user is absent: a placeholder that remembers the delete's version.
    event = change.patch
    return (change.entity_id, None, None, False, event.version, event.occurred_at, change.first_occurred_at, event.occurred_at)


users = Aggregate(
    name="users",
    table=User.__table__,
    full_event_types=frozenset({"user.created", "user.updated"}),
    partial_event_types=frozenset({"user.deleted"}),
    columns=COLUMNS,
    full_row=_full_row,
    patch_row=_delete_row,
    patch_update=("is_active", "version", "deleted_at", "updated_at"),
)
