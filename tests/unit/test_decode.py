"""handlers.decode.decode: bytes -> Event | Poison | Tombstone. Pure, never raises."""

import json
import string
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.decode import MAX_ERROR_MESSAGE, TOMBSTONE, Poison, Tombstone, decode
from handlers.events import (
    BIGINT_MAX,
    EVENT_TYPE_NAMES,
    OrderCancelled,
    OrderCreated,
    OrderUpdated,
    UserCreated,
    UserDeleted,
    UserUpdated,
)

EVENT_ID = "3f1c2a9e-8f5b-4b0a-9a57-1a2b3c4d5e6f"
CLASSES = {
    "user.created": UserCreated,
    "user.updated": UserUpdated,
    "user.deleted": UserDeleted,
    "order.created": OrderCreated,
    "order.updated": OrderUpdated,
    "order.cancelled": OrderCancelled,
}
USER_DATA = {"id": 7, "email": "ada@example.com", "name": "Ada Lovelace", "is_active": False}
ORDER_DATA = {"id": 11, "user_id": 7, "total": "12.34", "status": "paid"}


def envelope(event_type: str = "user.created", **overrides) -> dict:
    if event_type.startswith("user."):
        data = dict(USER_DATA) if event_type != "user.deleted" else {"id": USER_DATA["id"]}
    else:
        data = dict(ORDER_DATA) if event_type != "order.cancelled" else {"id": ORDER_DATA["id"]}
    env = {
        "event_id": EVENT_ID,
        "event_type": event_type,
        "occurred_at": "2026-01-02T03:04:05.123456+00:00",
        "version": 3,
        "data": data,
    }
    env.update(overrides)
    return env


def encode(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


def with_data(event_type: str, **data_overrides) -> bytes:
    env = envelope(event_type)
    env["data"].update(data_overrides)
    return encode(env)


def without_data_field(event_type: str, field: str) -> bytes:
    env = envelope(event_type)
    del env["data"][field]
    return encode(env)


def assert_poison(result: object, error_type: str, *fragments: str) -> Poison:
    assert isinstance(result, Poison), result
    assert result.error_type == error_type, result
    assert len(result.message) <= MAX_ERROR_MESSAGE
    for fragment in fragments:
        assert fragment in result.message, result.message
    return result


# -- tombstone and the valid event types -------------------------------------------------------


def test_none_is_a_tombstone():
    assert decode(None) is TOMBSTONE
    assert isinstance(decode(None), Tombstone)


def test_the_contract_has_exactly_six_event_types():
    assert EVENT_TYPE_NAMES == frozenset(CLASSES)


@pytest.mark.parametrize("event_type", sorted(CLASSES))
def test_each_valid_event_type_decodes_to_its_class(event_type):
    event = decode(encode(envelope(event_type)))
    assert type(event) is CLASSES[event_type]
    assert event.event_type == event_type
    assert event.event_id == UUID(EVENT_ID)
    assert event.version == 3
    assert event.occurred_at == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    assert event.occurred_at.tzinfo is not None
    expected_id = USER_DATA["id"] if event_type.startswith("user.") else ORDER_DATA["id"]
    assert event.data.id == expected_id
    assert event.entity_id == expected_id


def test_user_state_fields():
    event = decode(encode(envelope("user.updated")))
    assert (event.data.email, event.data.name, event.data.is_active) == ("ada@example.com", "Ada Lovelace", False)


def test_order_state_fields():
    event = decode(encode(envelope("order.updated")))
    assert (event.data.user_id, event.data.total, event.data.status) == (7, Decimal("12.34"), "paid")


@pytest.mark.parametrize("status", ["pending", "paid", "shipped", "delivered", "cancelled"])
def test_every_order_status_is_accepted(status):
    assert decode(with_data("order.created", status=status)).data.status == status


def test_unknown_order_status_is_rejected():
    assert_poison(decode(with_data("order.created", status="lost")), "validation_error", "data.status")


def test_is_active_defaults_to_true():
    event = decode(without_data_field("user.created", "is_active"))
    assert isinstance(event, UserCreated)
    assert event.data.is_active is True


@pytest.mark.parametrize("value", ["true", 1, 0, None])
def test_is_active_must_be_a_json_boolean(value):
    assert_poison(decode(with_data("user.created", is_active=value)), "validation_error", "data.is_active")


def test_extra_fields_are_ignored_at_envelope_and_data_level():
    env = envelope("order.created", source="billing", trace={"id": 1}, schema_version=2)
    env["data"].update(currency="EUR", lines=[{"sku": "x"}])
    event = decode(encode(env))
    assert isinstance(event, OrderCreated)
    assert not hasattr(event, "source")
    assert not hasattr(event.data, "currency")
    assert event.model_dump()["data"] == {"id": 11, "user_id": 7, "total": Decimal("12.34"), "status": "paid"}


def test_extra_fields_ignored_on_partial_events():
    env = envelope("user.deleted", reason="gdpr")
    env["data"]["email"] = "not even an email"
    event = decode(encode(env))
    assert isinstance(event, UserDeleted)
    assert event.data.id == USER_DATA["id"]


def test_events_are_frozen():
    event = decode(encode(envelope()))
    with pytest.raises(Exception):
        event.version = 99  # type: ignore[misc]


# -- the poison classes ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"\xff", b"{\"a\": \"\xc3\x28\"}", b"\x80abc", encode(envelope())[:-1] + b"\xfe}"])
def test_not_utf8(value):
    assert_poison(decode(value), "not_utf8", "UTF-8")


@pytest.mark.parametrize("value", [b"", b"   ", b"{", b"{'a': 1}", b"nul", b"{\"a\":1,}", b"NaN", b"Infinity", b"\xef\xbb\xbf{}"])
def test_invalid_json(value):
    assert_poison(decode(value), "invalid_json", "JSON")


@pytest.mark.parametrize(
    ("value", "kind"),
    [(b"[]", "list"), (b"[1, 2]", "list"), (b"\"user.created\"", "str"), (b"42", "int"), (b"4.2", "float"),
     (b"true", "bool"), (b"null", "NoneType")],
)
def test_not_object(value, kind):
    assert_poison(decode(value), "not_object", kind)


@pytest.mark.parametrize("event_type", ["user.renamed", "order.refunded", "", "USER.CREATED", "payment.created"])
def test_unknown_event_type(event_type):
    assert_poison(decode(encode(envelope(event_type="user.created") | {"event_type": event_type})), "unknown_event_type", repr(event_type))


def test_unknown_event_type_message_is_clipped():
    result = assert_poison(decode(encode({"event_type": "x" * 5000})), "unknown_event_type")
    assert len(result.message) == MAX_ERROR_MESSAGE
    assert result.message.endswith("...")


@pytest.mark.parametrize("event_type", [None, 1, ["user.created"], {"a": 1}])
def test_non_string_event_type_is_a_validation_error(event_type):
    assert_poison(decode(encode(envelope() | {"event_type": event_type})), "validation_error")


def test_missing_event_type_is_a_validation_error_naming_event_type():
    env = envelope()
    del env["event_type"]
    assert_poison(decode(encode(env)), "validation_error", "event_type")


@pytest.mark.parametrize("field", ["event_id", "occurred_at", "version", "data"])
def test_missing_envelope_field(field):
    env = envelope()
    del env[field]
    assert_poison(decode(encode(env)), "validation_error", field)


@pytest.mark.parametrize("field", ["id", "email", "name"])
def test_missing_user_field(field):
    assert_poison(decode(without_data_field("user.updated", field)), "validation_error", f"data.{field}")


@pytest.mark.parametrize("field", ["id", "user_id", "total", "status"])
def test_missing_order_field(field):
    assert_poison(decode(without_data_field("order.updated", field)), "validation_error", f"data.{field}")


def test_bad_event_id():
    assert_poison(decode(encode(envelope(event_id="not-a-uuid"))), "validation_error", "event_id")


def test_validation_message_lists_every_problem():
    env = envelope("order.created", version=0)
    env["data"].update(id=0, total="-1")
    result = assert_poison(decode(encode(env)), "validation_error", "version", "data.id", "data.total")
    assert result.message.count(";") == 2


def test_long_validation_message_is_clipped():
    env = envelope("user.created")
    env["data"]["name"] = "\x00" + "n" * 99
    env["data"]["email"] = "e" * 3000
    result = assert_poison(decode(encode(env)), "validation_error")
    assert len(result.message) <= MAX_ERROR_MESSAGE


# -- money -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"12.34", Decimal("12.34")),
        (b"\"12.34\"", Decimal("12.34")),
        (b"0", Decimal("0")),
        (b"\"0.00\"", Decimal("0")),
        (b"0.1", Decimal("0.1")),
        (b"100", Decimal("100")),
        (b"1e2", Decimal("100")),
        (b"9999999999.99", Decimal("9999999999.99")),
        (b"\"9999999999.99\"", Decimal("9999999999.99")),
    ],
)
def test_total_as_json_number_and_as_string(raw, expected):
    value = encode(envelope("order.created")).replace(b"\"12.34\"", raw)
    event = decode(value)
    assert isinstance(event, OrderCreated), event
    assert event.data.total == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"12.345", b"\"12.345\"", b"0.001", b"\"0.001\"", b"\"1e-7\"",  # > 2 decimal places
        b"10000000000", b"\"10000000000\"", b"10000000000.00", b"1e10", b"9999999999.995",  # >= 10**10
        b"-0.01", b"\"-0.01\"", b"-1", b"\"-1\"",  # negative
        b"\"NaN\"", b"\"nan\"", b"\"Infinity\"", b"\"-Infinity\"", b"\"inf\"", b"\"sNaN\"",  # not finite, as strings
        b"\"\"", b"\"twelve\"", b"null", b"true", b"[1]",
    ],
)
def test_bad_totals_are_rejected(raw):
    value = encode(envelope("order.created")).replace(b"\"12.34\"", raw)
    assert_poison(decode(value), "validation_error", "data.total")


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_json_number_literals_are_rejected(raw):
    # NaN/Infinity are not JSON: the whole record is poison, whichever class it is filed under.
    value = encode(envelope("order.created")).replace(b"\"12.34\"", raw)
    result = decode(value)
    assert isinstance(result, Poison)
    assert result.error_type in {"invalid_json", "validation_error"}


def test_total_with_python_nan_via_json_dumps_is_rejected():
    env = envelope("order.created")
    env["data"]["total"] = float("nan")
    assert isinstance(decode(json.dumps(env, allow_nan=True).encode()), Poison)
    env["data"]["total"] = float("inf")
    assert isinstance(decode(json.dumps(env, allow_nan=True).encode()), Poison)


# -- ids and versions --------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "user_id"])
@pytest.mark.parametrize("value", [0, -1, BIGINT_MAX + 1, 2**64, 10**30])
def test_out_of_range_ids_are_rejected(field, value):
    assert_poison(decode(with_data("order.created", **{field: value})), "validation_error", f"data.{field}")


@pytest.mark.parametrize("event_type", sorted(CLASSES))
@pytest.mark.parametrize("value", [0, BIGINT_MAX + 1])
def test_out_of_range_entity_id_rejected_for_every_type(event_type, value):
    assert_poison(decode(with_data(event_type, id=value)), "validation_error", "data.id")


@pytest.mark.parametrize("value", [1, BIGINT_MAX])
def test_id_bounds_are_accepted(value):
    event = decode(with_data("user.created", id=value))
    assert isinstance(event, UserCreated)
    assert event.data.id == value


@pytest.mark.parametrize("value", ["7", 7.0, 7.5, True, None])
def test_ids_must_be_json_integers(value):
    assert_poison(decode(with_data("user.created", id=value)), "validation_error", "data.id")


@pytest.mark.parametrize("value", [0, -3, BIGINT_MAX + 1, "3", 3.0, True])
def test_bad_versions_are_rejected(value):
    assert_poison(decode(encode(envelope(version=value))), "validation_error", "version")


def test_max_version_accepted():
    assert decode(encode(envelope(version=BIGINT_MAX))).version == BIGINT_MAX


# -- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2026-01-02T03:04:05", "2026-01-02T03:04:05.123", "2026-01-02 03:04:05", "2026-01-02"])
def test_naive_occurred_at_is_rejected(value):
    assert_poison(decode(encode(envelope(occurred_at=value))), "validation_error", "occurred_at")


@pytest.mark.parametrize("value", ["yesterday", "", None, "2026-13-01T00:00:00Z"])
def test_garbage_occurred_at_is_rejected(value):
    assert_poison(decode(encode(envelope(occurred_at=value))), "validation_error", "occurred_at")


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2026-01-02T05:04:05+02:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2026-01-01T22:04:05-05:00", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ],
)
def test_aware_occurred_at_keeps_the_instant(value, utc):
    assert decode(encode(envelope(occurred_at=value))).occurred_at == utc


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_occurred_at_must_be_convertible_to_utc(value):
    result = decode(encode(envelope("user.deleted", occurred_at=value)))
    if not isinstance(result, Poison):
        result.occurred_at.astimezone(timezone.utc)  # what asyncpg's timestamptz encoder does
    assert isinstance(result, Poison)


# -- strings -----------------------------------------------------------------------------------


def test_email_longer_than_255_chars_is_rejected():
    email = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"  # 313 characters, valid labels
    assert len(email) > 255
    assert_poison(decode(with_data("user.created", email=email)), "validation_error", "data.email")


def test_email_of_256_chars_is_rejected():
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 59 + ".com"
    assert len(email) == 256
    assert_poison(decode(with_data("user.created", email=email)), "validation_error", "data.email")


def test_long_valid_email_is_accepted():
    email = "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com"
    assert len(email) <= 254
    assert decode(with_data("user.created", email=email)).data.email == email


@pytest.mark.parametrize("email", ["not-an-email", "", "a@", "@example.com", "a b@example.com", "ada@exa\x00mple.com", "ada\x00@example.com"])
def test_invalid_emails_are_rejected(email):
    assert_poison(decode(with_data("user.created", email=email)), "validation_error", "data.email")


@pytest.mark.parametrize("length", [0, 101, 1000])
def test_name_length_out_of_bounds_is_rejected(length):
    assert_poison(decode(with_data("user.created", name="n" * length)), "validation_error", "data.name")


@pytest.mark.parametrize("name", ["n", "n" * 100, "é" * 100, "😀" * 100, " "])
def test_name_length_bounds_are_accepted(name):
    assert decode(with_data("user.created", name=name)).data.name == name


@pytest.mark.parametrize("name", ["\x00", "Ada\x00Lovelace", "Ada\x00"])
def test_nul_character_in_name_is_rejected(name):
    assert_poison(decode(with_data("user.updated", name=name)), "validation_error", "data.name", "NUL")


@pytest.mark.parametrize("name", ["\\ud800", "x\\udc00", "\\udfff\\ud800"])
def test_lone_surrogate_escapes_are_rejected(name):
    value = with_data("user.created", name="PLACEHOLDER").replace(b"PLACEHOLDER", name.encode())
    assert isinstance(decode(value), Poison)


# -- properties --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def _is_decode_result(result: object) -> bool:
    if isinstance(result, (Poison, Tombstone)):
        if isinstance(result, Poison):
            assert result.error_type in {"not_utf8", "invalid_json", "not_object", "unknown_event_type", "validation_error"}
            assert isinstance(result.message, str)
            assert len(result.message) <= MAX_ERROR_MESSAGE
        return True
    return type(result) in CLASSES.values()


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(value):
    assert _is_decode_result(decode(value))


@settings(max_examples=500)
@given(json_values)
def test_decode_never_raises_on_arbitrary_json(value):
    raw = json.dumps(value, allow_nan=True).encode("utf-8")
    result = decode(raw)
    assert _is_decode_result(result)
    if not isinstance(value, dict):
        assert isinstance(result, Poison)
        # NaN/Infinity literals are not JSON; everything else that is not a dict is "not_object".
        assert result.error_type in {"not_object", "invalid_json"}


@settings(max_examples=500)
@given(
    st.sampled_from(sorted(CLASSES)),
    st.sampled_from(["event_id", "event_type", "occurred_at", "version", "data", "data.id", "data.email", "data.name",
                     "data.is_active", "data.user_id", "data.total", "data.status", "extra", "data.extra"]),
    json_values,
)
def test_decode_never_raises_on_envelopes_with_one_arbitrary_field(event_type, field, value):
    env = envelope(event_type)
    target, key = (env["data"], field[5:]) if field.startswith("data.") and isinstance(env["data"], dict) else (env, field)
    target[key] = value
    assert _is_decode_result(decode(json.dumps(env, allow_nan=True).encode("utf-8")))


NAME_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
TIMEZONES = st.sampled_from(
    [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), timezone(timedelta(hours=14))]
)
entity_ids = st.integers(min_value=1, max_value=BIGINT_MAX)
versions = st.integers(min_value=1, max_value=BIGINT_MAX)
occurred = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=TIMEZONES)
emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=30).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    ),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=30),
    st.sampled_from(["com", "org", "io", "de"]),
)
names = st.text(NAME_CHARS, min_size=1, max_size=100)
totals = st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False, allow_infinity=False)


@st.composite
def valid_envelopes(draw) -> dict:
    event_type = draw(st.sampled_from(sorted(CLASSES)))
    entity_id = draw(entity_ids)
    if event_type in ("user.created", "user.updated"):
        data = {"id": entity_id, "email": draw(emails), "name": draw(names)}
        if draw(st.booleans()):
            data["is_active"] = draw(st.booleans())
    elif event_type in ("order.created", "order.updated"):
        total = draw(totals)
        data = {
            "id": entity_id,
            "user_id": draw(entity_ids),
            "total": str(total) if draw(st.booleans()) or total >= 10**9 else float(total),
            "status": draw(st.sampled_from(["pending", "paid", "shipped", "delivered", "cancelled"])),
        }
    else:
        data = {"id": entity_id}
    if draw(st.booleans()):
        data["unexpected"] = draw(json_values)
    return {
        "event_id": str(draw(st.uuids())),
        "event_type": event_type,
        "occurred_at": draw(occurred).isoformat(),
        "version": draw(versions),
        "data": data,
    }


@settings(max_examples=500)
@given(valid_envelopes(), st.booleans())
def test_valid_envelopes_always_decode_to_the_right_class(env, ascii_only):
    raw = json.dumps(env, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8")
    event = decode(raw)
    assert type(event) is CLASSES[env["event_type"]], event
    assert event.event_id == UUID(env["event_id"])
    assert event.data.id == env["data"]["id"]
    assert event.entity_id == env["data"]["id"]
    assert event.version == env["version"]
    assert event.occurred_at == datetime.fromisoformat(env["occurred_at"])
    if "email" in env["data"]:
        assert event.data.name == env["data"]["name"]
        assert event.data.is_active is env["data"].get("is_active", True)
    if "total" in env["data"]:
        assert event.data.total == Decimal(str(env["data"]["total"]))
        assert event.data.user_id == env["data"]["user_id"]
        assert event.data.status == env["data"]["status"]
