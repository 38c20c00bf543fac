"""bytes -> Event | Poison | Tombstone like handlers.decode.decode, with msgspec for the common case.

The Structs below mirror the pydantic contract in handlers/events.py and are deliberately stricter
than it. Whatever they decline (msgspec raises, or a check in a __post_init__ fails) goes to
handlers.decode.decode, which stays the authority and diagnoses every bad record; whatever they
accept, pydantic accepts too, with equal values. tests/unit/test_fast_decode.py holds them to that.
Downstream code only reads attributes, which both kinds of event have under the same names."""

import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Union
from uuid import UUID

import msgspec
from msgspec.structs import force_setattr

from handlers.decode import TOMBSTONE, Poison, Tombstone, decode
from handlers.email import normalize_email
from handlers.events import BIGINT_MAX, Event

EntityId = Annotated[int, msgspec.Meta(gt=0, le=BIGINT_MAX)]
Version = Annotated[int, msgspec.Meta(ge=1, le=BIGINT_MAX)]
Email = Annotated[str, msgspec.Meta(max_length=255)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
OrderStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled"]

# Lengths of YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z and of YYYY-MM-DDTHH:MM:SS[.f{1,6}]+HH:MM.
_UTC_LENGTHS = frozenset({20, *range(22, 28)})
_OFFSET_LENGTHS = frozenset({25, *range(27, 33)})
_MONEY_TEXT = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,2})?")
_MONEY_LIMIT = 10**10


class _Struct(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    # forbid_unknown_fields: msgspec skips unknown values without the checks pydantic makes on them
    # (UTF-8, nesting depth, integer size), so a record with extra keys is left to pydantic.
    pass


class UserState(_Struct):
    id: EntityId
    email: Email  # normalized by __post_init__
    name: Name
    is_active: bool = True

    def __post_init__(self) -> None:
        email = normalize_email(self.email)  # ValueError for an invalid address
        if "\x00" in email or "\x00" in self.name:
            raise ValueError("NUL character")
        force_setattr(self, "email", email)


class OrderState(_Struct):
    id: EntityId
    user_id: EntityId
    total: Union[int, float, str]  # as sent; a Decimal once __post_init__ has run
    status: OrderStatus

    def __post_init__(self) -> None:
        """pydantic's Money (ge=0, lt=10**10, at most 2 places, finite) for the forms it is sure of."""
        raw = self.total
        if type(raw) is str:
            if _MONEY_TEXT.fullmatch(raw) is None:
                raise ValueError("not a plain decimal")
            total = Decimal(raw)
        elif type(raw) is int:
            if not 0 <= raw < _MONEY_LIMIT:
                raise ValueError("out of range")
            total = Decimal(raw)
        else:
            # pydantic reads a float as the shortest decimal that rounds to it (repr). When the
            # float is the one nearest to cents/100, that decimal is cents/100: two decimals of
            # at most 15 significant digits never round to the same float. repr would cost more.
            if not 0.0 <= raw < _MONEY_LIMIT:  # type: ignore[operator]
                raise ValueError("out of range")
            cents = round(raw * 100)  # type: ignore[operator]
            if cents / 100 != raw:
                raise ValueError("more than 2 decimal places")
            total = Decimal(cents).scaleb(-2)
        force_setattr(self, "total", total)


class EntityRef(_Struct):
    id: EntityId


class _Envelope(_Struct, tag_field="event_type"):
    event_id: UUID
    occurred_at: str  # as sent; an aware datetime once __post_init__ has run
    version: Version

    def __post_init__(self) -> None:
        # Only YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM), the form speedate (pydantic) and
        # fromisoformat read alike; each is looser, differently: fromisoformat takes "+02:99",
        # "05.Z", "20260102T030405Z", "2026-W01-1", speedate "t", "05,5", "+0200". fromisoformat
        # checks the digits (ASCII only) and the ranges; the shape is checked here, as a regular
        # expression would, at half the cost. (msgspec's own datetime will not do: it rounds a
        # 7th fraction digit where speedate truncates.)
        text: str = self.occurred_at  # type: ignore[assignment]
        occurred = datetime.fromisoformat(text)
        if text[-1] == "Z":
            shaped = len(text) in _UTC_LENGTHS
        else:
            shaped = len(text) in _OFFSET_LENGTHS and text[-6] in "+-" and text[-3] == ":" and text[-2] < "6"
        if not (shaped and text[4:17:3] == "--T::" and text[19] in ".Z+-"):
            raise ValueError("not YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM)")
        # handlers.events._convertible_to_utc, tried only where it can fail: with |offset| < 24 h,
        # only a time within a day of datetime.min/max can leave the range once shifted to UTC.
        if occurred.year == 1 or occurred.year == 9999:
            try:
                occurred.astimezone(timezone.utc)
            except OverflowError:
                raise ValueError("out of range once converted to UTC") from None
        force_setattr(self, "occurred_at", occurred)

    @property
    def entity_id(self) -> int:
        return self.data.id  # type: ignore[attr-defined]


class UserCreated(_Envelope, tag="user.created"):
    event_type: ClassVar[str] = "user.created"
    data: UserState


class UserUpdated(_Envelope, tag="user.updated"):
    event_type: ClassVar[str] = "user.updated"
    data: UserState


class UserDeleted(_Envelope, tag="user.deleted"):
    event_type: ClassVar[str] = "user.deleted"
    data: EntityRef


class OrderCreated(_Envelope, tag="order.created"):
    event_type: ClassVar[str] = "order.created"
    data: OrderState


class OrderUpdated(_Envelope, tag="order.updated"):
    event_type: ClassVar[str] = "order.updated"
    data: OrderState


class OrderCancelled(_Envelope, tag="order.cancelled"):
    event_type: ClassVar[str] = "order.cancelled"
    data: EntityRef


FastEvent = Union[UserCreated, UserUpdated, UserDeleted, OrderCreated, OrderUpdated, OrderCancelled]
FAST_EVENT_TYPES: tuple[type[_Envelope], ...] = (UserCreated, UserUpdated, UserDeleted, OrderCreated, OrderUpdated, OrderCancelled)

_decoder = msgspec.json.Decoder(FastEvent)


def _decode_msgspec(value: bytes) -> FastEvent | None:
    """The fast path alone: the event, or None when it is not sure."""
    try:
        return _decoder.decode(value)
    except Exception:  # noqa: BLE001 - whatever the fast path cannot vouch for goes to pydantic
        return None


def decode_fast(value: bytes | None) -> FastEvent | Event | Poison | Tombstone:
    if value is None:
        return TOMBSTONE
    try:
        return _decoder.decode(value)  # _decode_msgspec, inlined: this is the hot path
    except Exception:  # noqa: BLE001
        return decode(value)
