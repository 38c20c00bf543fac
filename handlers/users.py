from database.models import User
from handlers.events import UserCreated, UserDeleted, UserUpdated
from handlers.projection import ENTITY_ID, FIRST_OCCURRED_AT, NULL, OCCURRED_AT, VERSION, Projection, const, data, on_insert

USERS = Projection(
    table=User.__table__,
    full=(UserCreated, UserUpdated),
    patch=(UserDeleted,),
    description="A user's latest state; a delete is soft (is_active false, deleted_at set, the row stays).",
    columns={
        # column      full state           delete
        "id": ENTITY_ID,
        "email": (data("email"), on_insert(NULL)),
        "name": (data("name"), on_insert(NULL)),
        "is_active": (data("is_active"), const(False)),
        "version": VERSION,
        "deleted_at": (NULL, OCCURRED_AT),  # a full state after a delete revives the user
        "created_at": FIRST_OCCURRED_AT,
        "updated_at": OCCURRED_AT,
    },
)
