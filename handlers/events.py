"""The event envelope, as pydantic models. This module is the contract producers validate against
(its JSON Schema is exported to schemas/event.schema.json)."""

from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Literal, Union
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from handlers.email import normalize_email

BIGINT_MAX = 2**63 - 1


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; reject it here so it becomes a clear validation error.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


def _convertible_to_utc(value: datetime) -> datetime:
    # PostgreSQL stores timestamptz in UTC; 0001-01-01T00:00+14:00 has no UTC representation.
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    return value


EntityId = Annotated[int, Field(gt=0, le=BIGINT_MAX, strict=True)]
Version = Annotated[int, Field(ge=1, le=BIGINT_MAX, strict=True)]
Email = Annotated[str, Field(max_length=255, json_schema_extra={"format": "email"}), AfterValidator(normalize_email), AfterValidator(_no_nul)]
Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
Money = Annotated[Decimal, Field(ge=0, lt=Decimal(10) ** 10, decimal_places=2, allow_inf_nan=False)]
OrderStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UserState(_Model):
    id: EntityId
    email: Email
    name: Name
    is_active: Annotated[bool, Field(strict=True)] = True


class OrderState(_Model):
    id: EntityId
    user_id: EntityId
    total: Money
    status: OrderStatus


class EntityRef(_Model):
    id: EntityId


class _Envelope(_Model):
    event_id: UUID
    occurred_at: Annotated[AwareDatetime, AfterValidator(_convertible_to_utc)]
    version: Version

    @property
    def entity_id(self) -> int:
        return self.data.id  # type: ignore[attr-defined]


class UserCreated(_Envelope):
    event_type: Literal["user.created"]
    data: UserState


class UserUpdated(_Envelope):
    event_type: Literal["user.updated"]
    data: UserState


class UserDeleted(_Envelope):
    event_type: Literal["user.deleted"]
    data: EntityRef


class OrderCreated(_Envelope):
    event_type: Literal["order.created"]
    data: OrderState


class OrderUpdated(_Envelope):
    event_type: Literal["order.updated"]
    data: OrderState


class OrderCancelled(_Envelope):
    event_type: Literal["order.cancelled"]
    data: EntityRef


Event = Annotated[
    Union[UserCreated, UserUpdated, UserDeleted, OrderCreated, OrderUpdated, OrderCancelled],
    Field(discriminator="event_type"),
]
EVENT_TYPES: tuple[type[_Envelope], ...] = (
    UserCreated,
    UserUpdated,
    UserDeleted,
    OrderCreated,
    OrderUpdated,
    OrderCancelled,
)
EVENT_TYPE_NAMES: frozenset[str] = frozenset(
    cls.model_fields["event_type"].annotation.__args__[0] for cls in EVENT_TYPES  # type: ignore[union-attr]
)

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def event_json_schema() -> dict:
    schema = event_adapter.json_schema()
    schema["title"] = "event-consumer envelope"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def occurred(event: _Envelope) -> datetime:
    return event.occurred_at
