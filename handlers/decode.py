"""bytes -> Event | Poison | Tombstone. Pure: no I/O, never raises for bad input."""

from collections.abc import Collection
from dataclasses import dataclass

import orjson
from pydantic import TypeAdapter, ValidationError

from handlers.events import EVENT_TYPE_NAMES, Event, event_adapter

MAX_ERROR_MESSAGE = 1000


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that can never be applied. error_type is one of:
    not_utf8, invalid_json, not_object, unknown_event_type, validation_error (and, later in the
    pipeline, database_error)."""

    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A record with a null value: skipped and counted, never dead-lettered."""


TOMBSTONE = Tombstone()


def decode(
    value: bytes | None, adapter: TypeAdapter = event_adapter, event_types: Collection[str] = EVENT_TYPE_NAMES
) -> Event | Poison | Tombstone:
    """By default the built-in contract's event types; handlers.registry.Contract.decode passes its own."""
    if value is None:
        return TOMBSTONE
    try:
        return adapter.validate_json(value)
    except ValidationError as exc:
        return _diagnose(value, exc, event_types)


def _diagnose(value: bytes, exc: ValidationError, event_types: Collection[str]) -> Poison:
    """Slow path, only for bad records: say precisely why."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as err:
        return Poison("not_utf8", _clip(f"value is not valid UTF-8: {err}"))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        return Poison("invalid_json", _clip(f"value is not valid JSON: {err}"))
    if not isinstance(parsed, dict):
        return Poison("not_object", f"value is JSON {type(parsed).__name__}, not an object")
    event_type = parsed.get("event_type")
    if "event_type" in parsed and isinstance(event_type, str) and event_type not in event_types:
        return Poison("unknown_event_type", _clip(f"unknown event_type {event_type!r}"))
    return Poison("validation_error", _clip(_summarize(exc)))


def _summarize(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in error["loc"][1:] if p != "") or "(root)"
        if error["type"] == "union_tag_not_found":
            loc = "event_type"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_MESSAGE else message[: MAX_ERROR_MESSAGE - 3] + "..."
