"""The event envelope, as pydantic models. This module is the contract producers validate against
(its JSON Schema is exported to schemas/event.schema.json)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal, Union
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, TypeAdapter
from pydantic_core import CoreSchema

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


# --- The JSON Schema of the aliases below ---------------------------------------------------------------
# schemas/event.schema.json and asyncapi.yaml are generated from these models and must accept exactly
# what decode() accepts (tests/unit/test_schema_agrees.py compares the two). Where pydantic's generated
# schema says less than its validation does, the aliases add it here; nothing below changes validation.
# Patterns are written in the common subset of ECMA-262 and Python's re, and end with _END, not `$`
# alone: Python's `$` also matches before a final newline. What JSON Schema cannot say is noted at each
# alias as "Gap:" (the differential test excludes exactly those, by name). So are the ways the
# consumer's JSON parser differs from a plain JSON reader, where no schema can follow: it refuses a
# value more than 200 levels below the root, a number with more than 4300 digits before its point and
# an unpaired surrogate escape, and takes NaN and Infinity in the fields it ignores.


@dataclass(frozen=True)
class _JsonSchema:
    """JSON Schema metadata only: `edit` gets the schema pydantic generates and returns the one to publish."""

    edit: Callable[[dict[str, Any]], dict[str, Any]]

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return self.edit(handler(core_schema))


_END = r"$(?!\n)"
_NO_NUL = r"^[^\u0000]*$"
# The characters str.isspace() is true for: what Decimal() strips around a number.
_SPACE = r"[\t-\r\u001c- \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

MONEY_DIGITS = 10  # before the decimal point: totals are below 10**MONEY_DIGITS
MONEY_PLACES = 2  # after it


def _money_pattern() -> str:
    """The strings Decimal() reads as a total (underscores anywhere are dropped, the space around
    stripped), in positional notation; '-' only on a zero."""
    digit, zero, nonzero = "[0-9]_*", "0_*", "[1-9]_*"
    whole = f"(?:(?:{zero})*{nonzero}(?:{digit}){{0,{MONEY_DIGITS - 1}}}|(?:{zero})+)"
    places = f"(?:{digit}){{0,{MONEY_PLACES}}}(?:{zero})*"
    positive = rf"(?:\+_*)?(?:{whole}(?:\._*{places})?|\._*(?:{digit}){{1,{MONEY_PLACES}}}(?:{zero})*)"
    negative_zero = rf"-_*(?:(?:{zero})+(?:\._*(?:{zero})*)?|\._*(?:{zero})+)"
    return f"^{_SPACE}*_*(?:{positive}|{negative_zero}){_SPACE}*{_END}"


def _money_schema(generated: dict[str, Any]) -> dict[str, Any]:
    number, string = generated["anyOf"]  # pydantic's: the bounds on the number, the string unconstrained
    assert number["type"] == "number" and string == {"type": "string"}, generated
    return {
        "anyOf": [
            {**number, "multipleOf": 10**-MONEY_PLACES},
            {"type": "string", "pattern": _money_pattern()},
        ],
        "description": (
            f"A non-negative amount below 10^{MONEY_DIGITS} with at most {MONEY_PLACES} decimal places, as a "
            "JSON number or a decimal string (e.g. \"129.90\")."
        ),
    }


# Gap (ids and versions): JSON Schema's "integer" is any number with a zero fraction, so 7.0 and 1e2
# are integers to it; the consumer takes only integer literals (7, 100).
EntityId = Annotated[int, Field(gt=0, le=BIGINT_MAX, strict=True)]
Version = Annotated[int, Field(ge=1, le=BIGINT_MAX, strict=True)]
# Gap: the consumer checks addresses with email-validator (pydantic's EmailStr: internationalized, a
# domain with a dot, no quoted local part, "Name <address>" and surrounding space accepted); the
# "idn-email" format is only close to that, and validators check it loosely if at all.
Email = Annotated[
    str,
    Field(max_length=255, json_schema_extra={"format": "idn-email", "pattern": _NO_NUL}),
    AfterValidator(normalize_email),
    AfterValidator(_no_nul),
]
Name = Annotated[str, Field(min_length=1, max_length=100, json_schema_extra={"pattern": _NO_NUL}), AfterValidator(_no_nul)]
# Gaps: a total in exponent notation ("1e2") or with non-ASCII digits (U+FF11 U+FF12) is accepted by the
# consumer but not by the pattern (exponents make the range non-regular); and the consumer reads a JSON
# number as a double, so a literal past a double's precision (0.0100000000000000001) is judged by its
# rounded value, the schema by its exact one.
Money = Annotated[
    Decimal,
    Field(ge=0, lt=Decimal(10) ** MONEY_DIGITS, decimal_places=MONEY_PLACES, allow_inf_nan=False),
    _JsonSchema(_money_schema),
]
OrderStatus = Literal["pending", "paid", "shipped", "delivered", "cancelled"]

_HEX = "[0-9A-Fa-f]"
_UUID = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
EventId = Annotated[
    UUID,
    _JsonSchema(
        lambda generated: {
            "anyOf": [
                {**generated, "pattern": f"^{_UUID}{_END}"},
                {
                    "type": "string",
                    "pattern": rf"^(?:{_HEX}{{32}}|\{{{_UUID}\}}|urn:uuid:{_UUID}){_END}",
                    "description": "The other spellings the consumer reads: 32 hex digits, {braced}, urn:uuid:.",
                },
            ]
        }
    ),
]

# What the consumer reads as occurred_at (pydantic's datetime parser, speedate, then aware and
# convertible to UTC): RFC 3339 and some more ISO 8601 forms, and Unix time in seconds, or in
# milliseconds where |t| > 2e10, as a number or a string.
_DATE = (
    "(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_HOUR, _MINUTE = "(?:[01][0-9]|2[0-3])", "[0-5][0-9]"
# Gap: an instant before 0001-01-01T00:00Z or after 9999-12-31T23:59:59.999999Z has no UTC value, which
# the consumer refuses; a pattern cannot compare the time with the offset, so on those two days it
# refuses every offset that could push the instant out (a few valid values included).
_IN_UTC_RANGE = r"(?!0001-01-01[^+]*\+(?!00:?00)|9999-12-31[^-\u2212]*[-\u2212](?!00:?00))"
_RFC3339 = (
    rf"^{_IN_UTC_RANGE}{_DATE}[Tt]{_HOUR}:{_MINUTE}:{_MINUTE}(?:\.[0-9]+)?(?:[Zz]|[-+]{_HOUR}:{_MINUTE}){_END}"
)
_ISO8601 = (
    rf"^{_IN_UTC_RANGE}{_DATE}[Tt _]{_HOUR}:{_MINUTE}(?::{_MINUTE}(?:[.,][0-9]+)?)?"
    rf"(?:[Zz]|[-+\u2212]{_HOUR}:?{_MINUTE}){_END}"
)
_UNIX_MS_MIN = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_UNIX_MS_MAX = 253_402_300_799_999.97  # the largest double before 10000-01-01T00:00:00Z (...999.96875)


def _at_most(limit: str) -> str:
    """The plain decimals (leading zeros allowed; "7", "7.", "7.5", ".5") whose value is at most `limit`."""
    whole, _, fraction = limit.partition(".")
    assert len(whole) > 1 and whole[0] != "0", limit

    def lower(digit: str) -> str:
        return "0" if digit == "1" else f"[0-{int(digit) - 1}]"

    def digits(n: int) -> str:
        return "" if n == 0 else "[0-9]" if n == 1 else f"[0-9]{{{n}}}"

    shorter = [f"[0-9]{{1,{len(whole) - 1}}}"]  # fewer digits, then same length and smaller at one digit
    shorter += [whole[:i] + lower(d) + digits(len(whole) - i - 1) for i, d in enumerate(whole) if d != "0"]
    below = rf"0*(?:{'|'.join(shorter)})(?:\.[0-9]*)?|0*\.[0-9]+"
    places = [f"{fraction}0*"] + [fraction[:i] + lower(d) + "[0-9]*" for i, d in enumerate(fraction) if d != "0"]
    places += [fraction[:i] for i in range(len(fraction))]
    return rf"(?:{below}|0*{whole}(?:\.(?:{'|'.join(places)}))?)"


# Gap: a Unix time string in exponent notation ("1.7e9") is read by the consumer (when it has a '.'),
# not by the pattern; and, as for totals, one with a '.' is read as a double, so digits past a double's
# precision do not count for the consumer.
_UNIX_STRING = rf"^(?:\+?{_at_most(repr(_UNIX_MS_MAX))}|-{_at_most(str(-_UNIX_MS_MIN))}){_END}"


def _occurred_at_schema(generated: dict[str, Any]) -> dict[str, Any]:
    assert generated == {"type": "string", "format": "date-time"}, generated
    return {
        "anyOf": [
            {**generated, "pattern": _RFC3339},
            {
                "type": "string",
                "pattern": _ISO8601,
                "description": "Also read: a space or _ for the T, no seconds, a decimal comma, +hhmm offsets, U+2212 for the minus.",
            },
            {
                "type": "number",
                "minimum": _UNIX_MS_MIN,
                "maximum": _UNIX_MS_MAX,
                "description": "Unix time: seconds where |t| <= 2e10, else milliseconds.",
            },
            {"type": "string", "pattern": _UNIX_STRING, "description": "Unix time, as above, as a decimal string."},
        ],
        "description": "When it happened, with a UTC offset: RFC 3339 (e.g. 2026-01-01T12:00:00Z) is the form to send.",
    }


OccurredAt = Annotated[AwareDatetime, AfterValidator(_convertible_to_utc), _JsonSchema(_occurred_at_schema)]


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
    event_id: EventId
    occurred_at: OccurredAt
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
