"""ec_native (native/src/lib.rs, through handlers.native): the native fast path is held to two
authorities.

1. pydantic (handlers.decode.decode, the contract): whatever ec_native.decode_one accepts, pydantic
   accepts too, as a valid event with equal values (event type, event id, instant and UTC offset,
   version, entity id, the normalized email, name, is_active, user id, total as a Decimal, status).
   Searched with the odd values, near-valid records and valid events of test_fast_decode (reused,
   not copied), plus shapes only a serde decoder can get wrong (JSON arrays where objects belong).
2. The Python path (handlers.fast_decode.decode_fast + handlers.apply.prepare_events): for a whole
   batch part, NativePart gives the same entities, entity-id literal, full-state and patch rows
   (both literals parsed back and compared value by value, per column type), labels and per-event
   outcomes against stored versions (handlers.collapse.applies_one_by_one).

And it must take the real traffic: every record of consumer.generate.Generator is accepted (a fast
path that declines it buys nothing). What it declines (None, not bytes, poison) is reported by
index and neither counted in the labels nor in the rows.
"""

import json
import random
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ec_native
from consumer.generate import Generator, topic_for
from handlers.apply import prepare_events
from handlers.collapse import applies_one_by_one
from handlers.decode import Poison, Tombstone, decode
from handlers.events import BIGINT_MAX
from handlers.fast_decode import decode_fast
from handlers.native import NativePart, unavailable_reason
from handlers.registry import build_registry
from tests.unit.test_fast_decode import (
    DATA_KIND,
    EVENT_ID,
    PROPERTY,
    event_type_for,
    near_valid_records,
    odd_values,
    record,
    valid_events,
)

NATIVE_FIELDS = ("event_type", "event_id", "occurred_at", "version", "id", "email", "name", "is_active", "user_id", "total", "status")
FIELDS_OF = {"user": {"email", "name", "is_active"}, "order": {"user_id", "total", "status"}, "ref": set()}
NUMERIC_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
TIMESTAMP_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")
STATUS_VALUES = {"pending", "paid", "shipped", "delivered", "cancelled"}


# -- 1. what decode_one accepts, pydantic accepts with equal values ---------------------------------


def assert_pydantic_agrees(value: bytes, native: tuple) -> None:
    """native = ec_native.decode_one(value), not None: pydantic's event and equal values."""
    slow = decode(value)
    assert not isinstance(slow, (Poison, Tombstone)), (value, native, slow)
    assert len(native) == len(NATIVE_FIELDS), native
    got = dict(zip(NATIVE_FIELDS, native))
    assert got["event_type"] == slow.event_type, (value, native)
    assert uuid.UUID(got["event_id"]) == slow.event_id, (value, native)
    assert got["event_id"].lower() == str(slow.event_id), (value, native)
    assert type(got["version"]) is int and got["version"] == slow.version, (value, native)
    assert type(got["id"]) is int and got["id"] == slow.data.id == slow.entity_id, (value, native)
    # occurred_at is the text PostgreSQL gets: the same instant and offset as pydantic's
    assert TIMESTAMP_TEXT.fullmatch(got["occurred_at"]), (value, native)
    moment = datetime.fromisoformat(got["occurred_at"])
    assert moment.utcoffset() is not None, (value, native)
    assert moment == slow.occurred_at, (value, native, slow.occurred_at)
    assert moment.utcoffset() == slow.occurred_at.utcoffset(), (value, native, slow.occurred_at)
    kind = DATA_KIND[slow.event_type]
    for name in ("email", "name", "is_active", "user_id", "total", "status"):
        if name not in FIELDS_OF[kind]:
            assert got[name] is None, (value, native)
    if kind == "user":
        assert got["email"] == slow.data.email, (value, native, slow.data)
        assert got["name"] == slow.data.name, (value, native, slow.data)
        assert type(got["is_active"]) is bool and got["is_active"] == slow.data.is_active, (value, native, slow.data)
    elif kind == "order":
        assert type(got["user_id"]) is int and got["user_id"] == slow.data.user_id, (value, native, slow.data)
        assert NUMERIC_TEXT.fullmatch(got["total"]), (value, native)  # a numeric PostgreSQL reads as such
        assert Decimal(got["total"]) == slow.data.total, (value, native, slow.data)
        assert got["status"] == slow.data.status, (value, native, slow.data)


def check(value: bytes) -> tuple | None:
    native = ec_native.decode_one(value)
    if native is not None:
        assert_pydantic_agrees(value, native)
    return native


@pytest.mark.parametrize(("event_type", "field", "text"), [(t, f, x) for f, x in odd_values() for t in event_type_for(f)])
def test_each_odd_value_alone(event_type, field, text):
    check(record(event_type, {field: text}))


def _as_array(event_type: str, data: str | None = None) -> bytes:
    """The envelope as a JSON array in lib.rs's field order (event_id, event_type, occurred_at,
    version, data): not an object, so never an event for pydantic."""
    data = data if data is not None else {"user": '{"id": 7, "email": "ada@example.com", "name": "Ada"}',
                                          "order": '{"id": 11, "user_id": 7, "total": "12.34", "status": "paid"}',
                                          "ref": '{"id": 7}'}[DATA_KIND[event_type]]
    return f'["{EVENT_ID}", "{event_type}", "2026-01-02T03:04:05Z", 3, {data}]'.encode()


# Odd inputs of the native path's own: shapes a serde decoder might take (a struct read from a
# JSON array, duplicate or escaped keys, nulls), dates and offsets its own checks judge, totals
# through serde's number visitor.
NATIVE_ODD = {
    # a serde struct also deserializes from a sequence, field by field
    "data as an array (ref)": record("user.deleted", {"data": "[7]"}),
    "data as an array (cancel)": record("order.cancelled", {"data": "[7]"}),
    "data as an array (user)": record("user.updated", {"data": '[7, "ada@example.com", "Ada"]'}),
    "data as an array (user, is_active)": record("user.created", {"data": '[7, "ada@example.com", "Ada", false]'}),
    "data as an empty array": record("user.deleted", {"data": "[]"}),
    **{f"envelope as an array ({t})": _as_array(t) for t in DATA_KIND},
    "envelope and data as arrays": _as_array("user.deleted", "[7]"),
    "data as an array of one object": record("user.deleted", {"data": '[{"id": 7}]'}),
    "null is_active": record("user.updated", {"is_active": "null"}),
    "null email": record("user.updated", {"email": "null"}),
    "null total": record("order.created", {"total": "null"}),
    "null id": record("user.deleted", {"id": "null"}),
    "null data": record("user.deleted", {"data": "null"}),
    "empty value": b"",
    "whitespace only": b" \n",
    "BOM": b"\xef\xbb\xbf" + record("user.deleted", {}),
    "NUL after the object": record("user.deleted", {}) + b"\x00",
    "two objects": record("user.deleted", {}) + record("user.deleted", {}),
    "duplicate id": record("user.deleted", {"id": '7, "id": 8'}),
    "duplicate data": record("user.deleted", {"data": '{"id": 7}, "data": {"id": 8}'}),
    "duplicate event_id via an escaped key": record("user.deleted", {"event_id": f'"{EVENT_ID}", "\\u0065vent_id": "{EVENT_ID}"'}),
    "escaped key": record("user.deleted", {}).replace(b'"data"', b'"\\u0064ata"'),
    "escaped event_type": record("user.deleted", {"event_type": '"user.del\\u0065ted"'}),
    "escaped timestamp": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05\\u005a"'}),
    "escaped uuid": record("user.deleted", {"event_id": '"\\u0033' + EVENT_ID[1:] + '"'}),
    "escaped total": record("order.created", {"total": '"\\u0031\\u0032.5"'}),
    "escaped email": record("user.updated", {"email": '"ada\\u0040example.com"'}),
    "email with a trailing dot": record("user.updated", {"email": '"ada@example.com."'}),
    "email with a 64-char label": record("user.updated", {"email": json.dumps("a@" + "b" * 64 + ".com")}),
    "email with a 63-char label": record("user.updated", {"email": json.dumps("a@" + "b" * 63 + ".com")}),
    "email with a digit-first tld": record("user.updated", {"email": '"a@b.1com"'}),
    "email with a hyphen-last label": record("user.updated", {"email": '"a@b-.com"'}),
    "email with a hyphen-first tld": record("user.updated", {"email": '"a@b.-com"'}),
    "email of 254 characters": record("user.updated", {"email": json.dumps("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com")}),
    "email of 255 characters": record("user.updated", {"email": json.dumps("a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com")}),
    "email with an uppercase special tld": record("user.updated", {"email": '"a@b.TEST"'}),
    "email with two @": record("user.updated", {"email": '"a@b@example.com"'}),
    "name of one astral character": record("user.updated", {"name": '"\\ud83d\\ude00"'}),
    "name of 100 astral characters, escaped": record("user.updated", {"name": '"' + "\\ud83d\\ude00" * 100 + '"'}),
    "name of 101 astral characters, escaped": record("user.updated", {"name": '"' + "\\ud83d\\ude00" * 101 + '"'}),
    "name with a raw control character": record("user.updated", {"name": '"a\tb"'}),
    "name with an escaped control character": record("user.updated", {"name": '"a\\u0001b"'}),
    "leap day 2000": record("user.deleted", {"occurred_at": '"2000-02-29T00:00:00Z"'}),
    "leap day 1900": record("user.deleted", {"occurred_at": '"1900-02-29T00:00:00Z"'}),
    "leap day 2100": record("user.deleted", {"occurred_at": '"2100-02-29T00:00:00Z"'}),
    "leap day 2400": record("user.deleted", {"occurred_at": '"2400-02-29T00:00:00Z"'}),
    "leap day 2024": record("user.deleted", {"occurred_at": '"2024-02-29T23:59:59.999999-23:59"'}),
    "April 31": record("user.deleted", {"occurred_at": '"2026-04-31T00:00:00Z"'}),
    "year 2, far east": record("user.deleted", {"occurred_at": '"0002-01-01T00:00:00+23:59"'}),
    "year 9998, far west": record("user.deleted", {"occurred_at": '"9998-12-31T23:59:59.999999-23:59"'}),
    "year 1000": record("user.deleted", {"occurred_at": '"1000-01-01T00:00:00Z"'}),
    "offset -00:00": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05-00:00"'}),
    "offset with a fraction": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.5+05:45"'}),
    "Z after an offset": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05+0200Z"'}),
    "total -0": record("order.created", {"total": "-0"}),
    "total -0.0": record("order.created", {"total": "-0.0"}),
    "total -0e0": record("order.created", {"total": "-0e0"}),
    "total 5e-324": record("order.created", {"total": "5e-324"}),
    "total 0.07": record("order.created", {"total": "0.07"}),
    "total 0.285": record("order.created", {"total": "0.285"}),
    "total 9999999999.994": record("order.created", {"total": "9999999999.994"}),
    "total 9999999999": record("order.created", {"total": "9999999999"}),
    "total 9999999999.0": record("order.created", {"total": "9999999999.0"}),
    "total 1.10": record("order.created", {"total": "1.10"}),
    "total 12.50e0": record("order.created", {"total": "12.50e0"}),
    "total 1250e-2": record("order.created", {"total": "1250e-2"}),
    "total 0.1 with 17 digits": record("order.created", {"total": "0.10000000000000001"}),
    "total near 0.1 with 25 digits": record("order.created", {"total": "0.1000000000000000055511151"}),
    "total next float after 0.1": record("order.created", {"total": "0.10000000000000002"}),
    "total as 18446744073709551615": record("order.created", {"total": "18446744073709551615"}),
    "total as 18446744073709551616": record("order.created", {"total": "18446744073709551616"}),
    "total string 0000000000.00": record("order.created", {"total": '"0000000000.00"'}),
    "total string 00000000000": record("order.created", {"total": '"00000000000"'}),
    "version -0": record("user.deleted", {"version": "-0"}),
    "version 2**63-1": record("user.deleted", {"version": str(BIGINT_MAX)}),
    "version 2**63": record("user.deleted", {"version": str(BIGINT_MAX + 1)}),
    "id -(2**63)": record("user.deleted", {"id": str(-(2**63))}),
    "user_id -1": record("order.created", {"user_id": "-1"}),
    "status escaped": record("order.created", {"status": '"p\\u0061id"'}),
    "user data on an order": record("order.created", {"data": '{"id": 11, "email": "ada@example.com", "name": "Ada"}'}),
    "order data on a user": record("user.created", {"data": '{"id": 7, "user_id": 7, "total": "1", "status": "paid"}'}),
    "order data on a ref": record("order.cancelled", {"data": '{"id": 7, "status": "cancelled"}'}),
}


@pytest.mark.parametrize("value", NATIVE_ODD.values(), ids=NATIVE_ODD.keys())
def test_native_odd_inputs(value):
    check(value)


@PROPERTY
@given(near_valid_records())
def test_accepts_only_what_pydantic_accepts_with_equal_values(value):
    check(value)


def _encode(event: dict, encoding: str) -> bytes:
    if encoding == "orjson":
        return orjson.dumps(event)
    if encoding == "pydantic":  # what consumer.publisher sends: model_dump_json
        return decode(orjson.dumps(event)).model_dump_json(by_alias=True).encode()
    if encoding == "json-indent":
        return json.dumps(event, indent=2, ensure_ascii=False).encode()
    return json.dumps(event, ensure_ascii=encoding == "json-ascii").encode()


@settings(max_examples=600, deadline=None)
@given(valid_events(), st.sampled_from(["orjson", "json", "json-ascii", "json-indent", "pydantic"]))
def test_valid_events(event, encoding):
    value = _encode(event, encoding)
    native = check(value)
    # Only years 1 and 9999 (whose conversion to UTC can overflow) are left to the Python path.
    if 2 <= int(event["occurred_at"][:4]) <= 9998:
        assert native is not None, value


# -- 2. the real traffic takes the fast path --------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 7])
def test_takes_every_generated_record(seed):
    values = [orjson.dumps(e) for e in Generator(seed).stream(3000, duplicates=0.05, older=0.05, user_share=0.3)]
    for value in values:
        native = ec_native.decode_one(value)
        assert native is not None, value
        assert_pydantic_agrees(value, native)
    assert ec_native.PartBuilder().add(values, "events") == []


# -- 3. a whole part: the same statements as the Python path -----------------------------------------


def parse_array(literal: str) -> list[str | None]:
    """A one-dimensional PostgreSQL array literal -> its elements: the unquoted null is None, a
    quoted element its text (backslash escapes undone), an unquoted token its text. Anything that
    PostgreSQL might read otherwise (unquoted whitespace, quotes, braces, backslashes) fails."""
    assert literal[:1] == "{" and literal[-1:] == "}", literal
    body, out, i = literal[1:-1], [], 0
    if not body:
        return out
    while True:
        if body[i : i + 1] == '"':
            i += 1
            chars = []
            while True:
                assert i < len(body), f"unterminated element in {literal!r}"
                c = body[i]
                if c == '"':
                    break
                if c == "\\":
                    i += 1
                    assert i < len(body), f"dangling backslash in {literal!r}"
                    c = body[i]
                chars.append(c)
                i += 1
            i += 1
            out.append("".join(chars))
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            token = body[i:j]
            assert token and not set(token) & set('"\\{} \t\r\n\v\f'), f"odd unquoted element {token!r} in {literal!r}"
            out.append(None if token.lower() == "null" else token)
            i = j
        if i == len(body):
            return out
        assert body[i] == ",", f"expected a comma at {i} in {literal!r}"
        i += 1


def _int(text: str) -> int:
    assert re.fullmatch(r"-?[0-9]+", text), text
    return int(text)


def _bool(text: str) -> bool:
    assert text in ("true", "false"), text
    return text == "true"


def _numeric(text: str) -> Decimal:
    assert NUMERIC_TEXT.fullmatch(text), text
    return Decimal(text)


def _instant(text: str) -> datetime:
    assert TIMESTAMP_TEXT.fullmatch(text), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text  # a naive one would be read in the session's zone
    return moment.astimezone(timezone.utc)


def _text(text: str) -> str:
    return text


COLUMN_TYPES = {"id": _int, "user_id": _int, "version": _int, "is_active": _bool, "total": _numeric, "created_at": _instant,
                "updated_at": _instant, "deleted_at": _instant, "email": _text, "name": _text, "status": _text}


def column_values(column: str, literal: str) -> list:
    convert = COLUMN_TYPES[column]
    return [None if v is None else convert(v) for v in parse_array(literal)]


def rows_of(columns: tuple[str, ...], params: dict[str, str] | None) -> dict[str, list] | None:
    if params is None:
        return None
    assert list(params) == [f"col_{c}" for c in columns], params.keys()
    return {c: column_values(c, params[f"col_{c}"]) for c in columns}


def run_native(chunks: list[tuple[str, list]]) -> tuple[object, list, list[list[int]]]:
    part = NativePart(build_registry(), copy=False)
    declined = [part.add(values, topic) for topic, values in chunks]
    prepared, labels = part.finish()
    return prepared, labels, declined


def run_python(chunks: list[tuple[str, list]]):
    events, labels = [], []
    for topic, values in chunks:
        for value in values:
            decoded = decode_fast(value) if isinstance(value, bytes) or value is None else None
            if decoded is None or isinstance(decoded, (Poison, Tombstone)):
                continue
            events.append(decoded)
            labels.append((topic, decoded.event_type))
    return prepare_events(build_registry(), events, labels), events


def stored_versions(rng: random.Random, events: list) -> list[dict[int, int]]:
    ids = sorted({e.data.id for e in events})
    top = min(max((e.version for e in events), default=1), BIGINT_MAX - 1)  # stored versions are BIGINTs
    out: list[dict[int, int]] = [{}]
    for _ in range(4):
        some = rng.sample(ids, rng.randint(0, len(ids)))
        stored = {i: rng.choice([0, 1, rng.randint(1, top + 1), top + 1, BIGINT_MAX]) for i in some}
        stored[rng.randint(10**12, 10**13)] = rng.randint(1, 5)  # an id not in the batch
        out.append(stored)
    out.append({i: 0 for i in ids})
    out.append({i: BIGINT_MAX for i in ids})
    return out


def assert_same_part(chunks: list[tuple[str, list]], rng: random.Random) -> tuple[object, list]:
    """The part through NativePart and through the Python path: the same statements."""
    native, native_labels, _ = run_native(chunks)
    python, events = run_python(chunks)
    names = [p.aggregate.name for p, _ in native.parts]
    assert names == [n for n in ("users", "orders") if n in names], names  # users first, as lib.rs says
    mine = {p.aggregate.name: (p, labels) for p, labels in native.parts}
    theirs = {p.aggregate.name: (p, labels) for p, labels in python.parts}
    assert set(mine) == set(theirs)
    assert native_labels == [label for _, labels in native.parts for label in labels]
    assert sorted(native_labels) == sorted(label for _, labels in python.parts for label in labels)
    columns = {"users": tuple(ec_native.USERS_COLUMNS), "orders": tuple(ec_native.ORDERS_COLUMNS)}
    for name, (n, n_labels) in mine.items():
        p, p_labels = theirs[name]
        assert n.aggregate is p.aggregate
        assert tuple(p.aggregate.columns) == columns[name]
        assert n.entities == p.entities, name
        assert n.entity_ids == p.entity_ids, name
        assert rows_of(columns[name], n.full_rows) == rows_of(columns[name], p.full_rows), name
        assert rows_of(columns[name], n.patch_rows) == rows_of(columns[name], p.patch_rows), name
        assert list(n_labels) == list(p_labels), name
        assert n.native is not None and p.native is None and tuple(n.events) == ()
        assert len(n.native) == len(p.events) == len(n_labels)
        for stored in stored_versions(rng, list(p.events)):
            assert n.native.outcomes(stored) == tuple(applies_one_by_one(p.events, stored)), (name, stored)
    return native, events


TRICKY_NAMES = ['Ada "The" \\ Count\n\u00e9', '"', "\\", '\\"', '""', "{", "}", "{}", ",", "a,b", "null", "NULL", "Null", " ", " padded ",
                "\t", "\r\n", "\x01\x1f\x7f", "\u2028\u2029", "\ufeff", "\U0001f600", "\u00e9" * 100, "\U0001f600" * 100, "'", "$1",
                "ARRAY[1]", "a}b{c", '\\n', "\\\\", "x\\", "\u0663\u0661", "\u00a0"]
TRICKY_EMAILS = ["o'brien+tag{x}|y@Example.COM", "a*b/c=d?e^f_g`h~i#j$k%l&m!n@example.org", "{}@b.io", "}@b.io", "ADA@EXAMPLE.COM",
                 "a.b.c@x-y.z9.de", "~@a.bc"]
_OFFSETS = [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8), timedelta(hours=14), timedelta(hours=-14),
            timedelta(hours=23, minutes=59), timedelta(hours=-23, minutes=-59), timedelta(minutes=-1)]


def _reshape_timestamp(text: str, rng: random.Random) -> str:
    """The same instant (or one truncated to fewer fraction digits), at another offset."""
    moment = datetime.fromisoformat(text).astimezone(timezone(rng.choice(_OFFSETS)))
    out = moment.isoformat(timespec=rng.choice(["auto", "seconds", "milliseconds", "microseconds"]))
    return out[:-6] + "Z" if out.endswith("+00:00") and rng.random() < 0.5 else out


def _new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def mutate(events: list[dict], rng: random.Random, intensity: float) -> list[dict]:
    """Generated events with more of what makes a collapse interesting: extra deletes/cancels
    (after, before or stale), the same entity out of order, other offsets, tricky text, int totals."""
    events = [{**e, "data": dict(e["data"])} for e in events]
    for _ in range(int(len(events) * intensity * 0.3) + rng.randint(0, 2)):
        target = rng.choice(events)
        kind = "user.deleted" if target["event_type"].startswith("user.") else "order.cancelled"
        ref = {"event_id": _new_uuid(rng), "event_type": kind, "occurred_at": target["occurred_at"],
               "version": max(1, target["version"] + rng.randint(-2, 2)), "data": {"id": target["data"]["id"]}}
        events.insert(rng.randrange(len(events) + 1), ref)
    for _ in range(int(len(events) * intensity * 0.3)):
        i, j = rng.randrange(len(events)), rng.randrange(len(events))
        events[i], events[j] = events[j], events[i]
    for event in events:
        if rng.random() < intensity * 0.5:
            event["occurred_at"] = _reshape_timestamp(event["occurred_at"], rng)
        data = event["data"]
        if "name" in data and rng.random() < intensity * 0.3:
            data["name"] = rng.choice(TRICKY_NAMES)
        if "email" in data and rng.random() < intensity * 0.2:
            data["email"] = rng.choice(TRICKY_EMAILS)
        if "is_active" in data and rng.random() < intensity * 0.2:
            del data["is_active"]
        if "total" in data and rng.random() < intensity * 0.3:
            data["total"] = rng.choice([rng.randint(0, 10**6), 0, 9_999_999_999, "9999999999.99", 9999999999.99, "0012.50", "7"])
        if rng.random() < intensity * 0.05:
            event["version"] = rng.choice([BIGINT_MAX, BIGINT_MAX - 1])
    return events


BAD_VALUES = [None, b"", b"\xff\xfe garbage", b"{not json", b"[1, 2, 3]", b"null", "a str, not bytes",
              record("user.created", {"version": "0"}), record("user.created", {"email": '"not-an-email"'}),
              record("order.created", {"total": '"1.001"'}), record("user.deleted", {"id": '"7"'}),
              record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05"'})]


@st.composite
def parts(draw) -> tuple[list[tuple[str, list]], list[list[int]], int]:
    """A batch part as the loop hands it over: (topic, values) per partition, in order, and which
    values are bad (to be declined)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    n = draw(st.integers(1, 300))
    share = draw(st.sampled_from([0.3, 0.3, 0.0, 0.6, 1.0]))
    events = mutate(Generator(seed).stream(n, duplicates=0.05, older=0.05, user_share=share), rng, draw(st.sampled_from([0.0, 0.2, 1.0])))
    if draw(st.booleans()):  # the orders or users alone
        keep = draw(st.sampled_from(["user.", "order."]))
        events = [e for e in events if e["event_type"].startswith(keep)] or events
    encode = draw(st.sampled_from(["orjson", "orjson", "json", "json-ascii"]))
    values = [_encode(e, encode) for e in events]
    if draw(st.sampled_from(["by topic", "mixed"])) == "by topic":
        n_partitions = draw(st.integers(1, 3))
        groups: dict[tuple[str, int], list] = {}
        for event, value in zip(events, values):
            groups.setdefault((topic_for(event), event["data"]["id"] % n_partitions), []).append(value)
        chunks = [(topic, vs) for (topic, _), vs in sorted(groups.items())]
    else:
        chunks, at = [], 0
        while at < len(values):
            size = rng.randint(1, max(1, len(values) // 2))
            chunks.append((rng.choice(["users", "orders", "legacy"]), values[at : at + size]))
            at += size
    bad = []
    for _, vs in chunks:
        for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):
            vs.insert(rng.randrange(len(vs) + 1), rng.choice(BAD_VALUES))
        positions = [i for i, v in enumerate(vs) if not isinstance(v, bytes) or isinstance(decode(v), (Poison, Tombstone))]
        bad.append(positions)
    return chunks, bad, seed


@settings(max_examples=150, deadline=None)
@given(parts())
def test_part_is_the_python_paths(part):
    chunks, bad, seed = part
    _, _, declined = run_native(chunks)
    assert declined == bad  # every generated event taken, every bad value declined
    assert_same_part(chunks, random.Random(seed))


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_large_generated_part_is_the_python_paths(seed):
    """bench/workload.py's traffic, as two topics of three partitions each."""
    rng = random.Random(seed)
    events = Generator(seed).stream(6000, duplicates=0.05, older=0.05, user_share=0.3)
    partitions: dict[tuple[str, int], list] = {}
    for event in events:
        partitions.setdefault((topic_for(event), rng.randrange(3)), []).append(orjson.dumps(event))
    chunks = [(topic, values) for (topic, _), values in sorted(partitions.items())]
    assert [d for d in run_native(chunks)[2] if d] == []
    native, python_events = assert_same_part(chunks, rng)
    assert {p.aggregate.name for p, _ in native.parts} == {"users", "orders"}
    assert any(p.full_rows is not None for p, _ in native.parts)
    assert any(p.patch_rows is not None for p, _ in native.parts)  # deletes and cancels made it through


def _user(entity_id: int, version: int, name: str, email: str = "ada@example.com", event_type: str = "user.updated",
          occurred_at: str = "2026-01-02T03:04:05.123456+02:00", **extra) -> dict:
    data = {"id": entity_id, "email": email, "name": name, **extra}
    return {"event_id": str(uuid.UUID(int=entity_id * 1000 + version)), "event_type": event_type, "occurred_at": occurred_at,
            "version": version, "data": data}


def _ref(event_type: str, entity_id: int, version: int, occurred_at: str = "2026-01-03T00:00:00Z") -> dict:
    return {"event_id": str(uuid.UUID(int=entity_id * 1000 + version + 500)), "event_type": event_type, "occurred_at": occurred_at,
            "version": version, "data": {"id": entity_id}}


def _order(entity_id: int, version: int, total, status: str = "paid", occurred_at: str = "2026-01-02T03:04:05Z") -> dict:
    return {"event_id": str(uuid.UUID(int=entity_id * 1000 + version + 700)), "event_type": "order.updated", "occurred_at": occurred_at,
            "version": version, "data": {"id": entity_id, "user_id": 7, "total": total, "status": status}}


def test_collapse_cases_are_the_python_paths():
    """Hand-made histories: each row kind (full, patch, both, revival, stale in the batch)."""
    events = [
        _user(1, 1, "one"), _ref("user.deleted", 1, 2),                          # full then patch
        _ref("user.deleted", 2, 5), _user(2, 6, "two"),                          # patch then full: full only, revived
        _user(3, 4, "three"), _user(3, 2, "stale"), _user(3, 4, "dup"),          # stale within the batch
        _ref("user.deleted", 4, 3),                                              # patch only (placeholder)
        _user(5, 2, "five", occurred_at="2026-01-01T23:00:00-05:00"), _user(5, 3, "five b", occurred_at="2026-01-02T01:00:00.5Z"),
        _ref("order.cancelled", 10, 1), _order(10, 3, "12.5"), _ref("order.cancelled", 10, 4),  # full, then patch
        _order(11, 2, 7), _order(11, 1, 8.25), _order(12, 1, 0.07), _ref("order.cancelled", 13, BIGINT_MAX),
        _order(14, 2, "0012.50", occurred_at="2026-01-02T03:04:05.1-23:59"),
    ]
    rng = random.Random(3)
    for order in (events, events[::-1], rng.sample(events, len(events))):
        assert_same_part([("users", [orjson.dumps(e) for e in order])], rng)


# -- 4. text survives the literals -----------------------------------------------------------------


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_tricky_text_survives_the_literals(ensure_ascii):
    events = [_user(i + 1, 1, name, TRICKY_EMAILS[i % len(TRICKY_EMAILS)], "user.created", is_active=bool(i % 2))
              for i, name in enumerate(TRICKY_NAMES)]
    values = [json.dumps(e, ensure_ascii=ensure_ascii).encode() for e in events]
    for value, event in zip(values, events):
        native = ec_native.decode_one(value)
        assert native is not None, value
        assert_pydantic_agrees(value, native)
        assert native[6] == event["data"]["name"]
    native, _ = assert_same_part([("users", values)], random.Random(4))
    (prepared, _), = native.parts
    assert column_values("name", prepared.full_rows["col_name"]) == TRICKY_NAMES
    domain_lowered = [e.split("@")[0] + "@" + e.split("@")[1].lower() for e in TRICKY_EMAILS]
    assert column_values("email", prepared.full_rows["col_email"]) == [domain_lowered[i % len(TRICKY_EMAILS)] for i in range(len(TRICKY_NAMES))]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=100), min_size=1, max_size=8),
       st.booleans())
def test_any_name_survives_the_literals(names, ensure_ascii):
    events = [_user(i + 1, 1, name, event_type="user.created") for i, name in enumerate(names)]
    values = [json.dumps(e, ensure_ascii=ensure_ascii).encode() for e in events]
    native, _ = assert_same_part([("users", values)], random.Random(5))
    (prepared, _), = native.parts
    assert column_values("name", prepared.full_rows["col_name"]) == names


# -- 5. what the native path declines ---------------------------------------------------------------


def test_declines_none_non_bytes_and_poison():
    good_user = orjson.dumps(_user(1, 1, "Ada", event_type="user.created"))
    good_order = orjson.dumps(_order(2, 1, "3.50"))
    values = [None, good_user, "not bytes", bytearray(good_user), memoryview(good_order), b"{not json", good_order, 7,
              record("user.created", {"version": "0"}), b"", record("user.deleted", {"data": '{"id": 0}'})]
    expected = [0, 2, 3, 4, 5, 7, 8, 9, 10]
    for i, value in enumerate(values):
        if i not in expected:
            continue
        assert value is None or not isinstance(value, bytes) or isinstance(decode(value), (Poison, Tombstone)), value
    native, labels, declined = run_native([("users", values)])
    assert declined == [expected]
    assert labels == [("users", "user.created"), ("users", "order.updated")]
    assert [(p.aggregate.name, p.entities, p.entity_ids, len(p.native)) for p, _ in native.parts] == [("users", 1, "{1}", 1), ("orders", 1, "{2}", 1)]
    assert_same_part([("users", values)], random.Random(6))


def test_declines_everything_bad():
    values = list(BAD_VALUES)
    native, labels, declined = run_native([("t", values), ("u", [None])])
    assert declined == [list(range(len(values))), [0]]
    assert labels == [] and native.parts == []
    assert prepare_events(build_registry(), [], []).parts == []


def test_builder_is_used_once():
    builder = ec_native.PartBuilder()
    assert builder.add([orjson.dumps(_user(1, 1, "Ada"))], "users") == []
    assert len(builder.finish()) == 1
    with pytest.raises(RuntimeError):
        builder.finish()
    with pytest.raises(RuntimeError):
        builder.add([], "users")


def test_the_registry_is_the_one_the_native_path_knows():
    registry = build_registry()
    assert unavailable_reason(registry) is None
    assert set(ec_native.EVENT_TYPES) == set(registry)
    for event_type, (name, is_full) in ec_native.EVENT_TYPES.items():
        assert registry[event_type].name == name
        assert (event_type in registry[event_type].full_event_types) == is_full
