from database.models import Order
from handlers.events import OrderCancelled, OrderCreated, OrderUpdated
from handlers.projection import ENTITY_ID, FIRST_OCCURRED_AT, NULL, OCCURRED_AT, VERSION, Projection, const, data, on_insert

ORDERS = Projection(
    table=Order.__table__,
    full=(OrderCreated, OrderUpdated),
    patch=(OrderCancelled,),
    description="An order's latest state; a cancel sets the status and keeps user_id and total.",
    columns={
        # column      full state           cancel
        "id": ENTITY_ID,
        "user_id": (data("user_id"), on_insert(NULL)),
        "total": (data("total"), on_insert(NULL)),
        "status": (data("status"), const("cancelled")),
        "version": VERSION,
        "created_at": FIRST_OCCURRED_AT,
        "updated_at": OCCURRED_AT,
    },
)
