"""The native fast path (native/src/lib.rs, compiled by handlers.native from the contract) held to
its two authorities, differentially.

1. pydantic (handlers.registry.Contract.decode): whatever `NativePath.compiled.decode` accepts,
   pydantic accepts too, as an event of the same event type whose values
   (`Description.values`) equal the native ones in every stored slot (the descriptor's field
   tuples, index 6). Searched with the odd values, near-valid records and valid events of
   tests/unit/contract_strategies.py, with number shapes in ignored fields, and with shapes only a
   serde decoder might get wrong (arrays where objects belong, duplicate or escaped keys, lone
   surrogates, invalid UTF-8, deep nesting, NaN, huge numbers in ignored fields, other event
   types' keys, nulls, bools for ints).
2. Extra envelope and data fields (a newer producer) stay on the native path: no fallback.
3. Real traffic (consumer.generate.Generator) is accepted, every record.
4. The Python path (Preparer._python_part: pydantic + Aggregate.prepare): for a whole batch part,
   Preparer.prepare_part stays native while valid records the native checks decline are decided
   by pydantic and merged back by slot (counted in Batch.fallbacks by reason), and it gives the
   same entities, entity ids, labels, per-event outcomes for random stored versions, and rows
   (the binary COPY data decoded here, the array literals parsed here, compared per column type).
5. An aggregate whose model uses a check the native path lacks is reported in
   Description.unsupported and takes the Python path record by record (fallback "unsupported")
   while the others stay native, with the same result as the Python path.
6. The descriptor is derived, not written: its names are the contract's; a new aggregate with
   other fields and checks is served with no native edit, and held to pydantic like the built-in.
"""

import json
import random
import re
import struct
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Annotated, Literal

import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, MetaData, Numeric, String, Table, Text

import ec_native
from consumer.batch import Batch, Preparer, deal_partitions
from consumer.generate import Generator, topic_for
from handlers.collapse import applies_one_by_one
from handlers.decode import Poison, Tombstone
from handlers.events import BIGINT_MAX, EVENT_TYPE_NAMES, EVENT_TYPES, EntityId, EntityRef, _Envelope, _Model
from handlers.native import Description, NativePath
from handlers.orders import ORDERS
from handlers.projection import ENTITY_ID, FIRST_OCCURRED_AT, NULL, OCCURRED_AT, VERSION, Envelope, Projection, const, data, on_insert
from handlers.registry import build_registry
from handlers.users import USERS
from tests.unit.contract_strategies import (
    DATA_KIND,
    DECLINED_VALID,
    ENCODINGS,
    EVENT_ID,
    INVALID_UTF8,
    POISON_VALUES,
    TRICKY_EMAILS,
    TRICKY_NAMES,
    edited,
    encode,
    encode_event,
    event_type_for,
    moments,
    mutate,
    near_valid_records,
    odd_values,
    record,
    timestamps,
    totals,
    valid_events,
    with_extra_fields,
)
from tests.unit.records import Rec
from tests.unit.test_email import addresses

CONTRACT = build_registry()
PATH = NativePath(CONTRACT)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
PROPERTY = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- 1. what the native decoder accepts, pydantic accepts with equal values -------------------------


def _specs(path: NativePath) -> dict[str, dict]:
    return {t["name"]: t for t in path.description.descriptor["types"]}


def typed(path: NativePath, event_type: str, values: list) -> list:
    """The values of one event in a comparable form: a non-stored slot None (the native path only
    validates it), a decimal as its Decimal (compared by value: the columns hold it at their own
    scale), every other value checked to have its check's Python type."""
    fields = _specs(path)[event_type]["fields"]
    assert len(values) == len(fields), (event_type, values)
    out = []
    for (_nested, _key, check, _required, _default, nullable, stored), value in zip(fields, values, strict=True):
        kind = check[0]
        if not stored:
            out.append(None)
            continue
        if value is None:
            assert nullable, (event_type, kind, values)
            out.append(None)
        elif kind == "decimal":
            unscaled, scale = value
            assert type(unscaled) is int and type(scale) is int and unscaled >= 0 and scale >= 0, value
            out.append((kind, Decimal(unscaled).scaleb(-scale)))
        else:
            expected = {"int": int, "timestamp": int, "bool": bool}.get(kind, str)
            assert type(value) is expected, (event_type, kind, value)
            out.append((kind, value))
    return out


def show(value: bytes | None, limit: int = 300) -> str:
    """A record for a failure message: long runs shortened."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit // 2]}...({len(text)} chars)...{text[-limit // 2 :]}"


def check_native(value: bytes, path: NativePath = PATH, contract=CONTRACT) -> tuple[str | None, object]:
    """The native decode of value; when it accepts, pydantic's event must be of the same event
    type with equal stored values. Returns (event_type, values) or (None, decline reason)."""
    event_type, values = path.compiled.decode(value)
    if event_type is None:
        assert values in ec_native.DECLINE_REASONS, values
        return None, values
    event = contract.decode(value)
    assert not isinstance(event, (Poison, Tombstone)), f"native accepts {show(value)} as {event_type} {values}; pydantic: {event}"
    assert event.event_type == event_type, (show(value), event)
    mine, theirs = typed(path, event_type, values), typed(path, event_type, path.description.values(event))
    assert mine == theirs, f"{show(value)}\nnative:   {mine}\npydantic: {theirs}"
    return event_type, values


@pytest.mark.parametrize(("event_type", "field", "text"), [(t, f, x) for f, x in odd_values() for t in event_type_for(f)])
def test_each_odd_value_alone(event_type, field, text):
    check_native(record(event_type, {field: text}))


def _as_array(event_type: str, data: str | None = None) -> bytes:
    """The envelope as a JSON array (a serde struct also deserializes from a sequence)."""
    data = data if data is not None else {"user": '{"id": 7, "email": "ada@example.com", "name": "Ada"}',
                                          "order": '{"id": 11, "user_id": 7, "total": "12.34", "status": "paid"}',
                                          "ref": '{"id": 7}'}[DATA_KIND[event_type]]
    return f'["{EVENT_ID}", "{event_type}", "2026-01-02T03:04:05Z", 3, {data}]'.encode()


def _extra(text: str, event_type: str = "user.deleted", where: str = "envelope") -> bytes:
    """A valid record with one extra (ignored) field holding `text`, in the envelope or in data."""
    if where == "envelope":
        return record(event_type, {"version": f'3, "x": {text}'})
    return record(event_type, {"id": f'7, "x": {text}'} if DATA_KIND[event_type] != "order" else {"id": f'11, "x": {text}'})


# Inputs of the native path's own: JSON shapes a serde decoder might read differently from
# pydantic (jiter). Each is held to pydantic; where the answer is known it is stated: "accept" (the
# native path must take it), "decline" (it must leave it to pydantic).
SERDE_SHAPES: dict[str, tuple[bytes, str | None]] = {
    # a serde struct also deserializes from a sequence, field by field
    "data as an array (ref)": (record("user.deleted", {"data": "[7]"}), "decline"),
    "data as an array (cancel)": (record("order.cancelled", {"data": "[7]"}), "decline"),
    "data as an array (user)": (record("user.updated", {"data": '[7, "ada@example.com", "Ada"]'}), "decline"),
    "data as an array (user, is_active)": (record("user.created", {"data": '[7, "ada@example.com", "Ada", false]'}), "decline"),
    "data as an empty array": (record("user.deleted", {"data": "[]"}), "decline"),
    "data as an array of one object": (record("user.deleted", {"data": '[{"id": 7}]'}), "decline"),
    **{f"envelope as an array ({t})": (_as_array(t), "decline") for t in sorted(DATA_KIND)},
    "envelope and data as arrays": (_as_array("user.deleted", "[7]"), "decline"),
    "an extra field holding the envelope as an array": (_extra(_as_array("user.deleted").decode()), "accept"),
    # nulls and bools where they do not belong
    "null is_active": (record("user.updated", {"is_active": "null"}), "decline"),
    "null email": (record("user.updated", {"email": "null"}), "decline"),
    "null total": (record("order.created", {"total": "null"}), "decline"),
    "null id": (record("user.deleted", {"id": "null"}), "decline"),
    "null data": (record("user.deleted", {"data": "null"}), "decline"),
    "null event_type": (record("user.deleted", {"event_type": "null"}), "decline"),
    "null extra field": (_extra("null"), "accept"),
    "true version": (record("user.deleted", {"version": "true"}), "decline"),
    "false id": (record("user.deleted", {"id": "false"}), "decline"),
    "true user_id": (record("order.created", {"user_id": "true"}), "decline"),
    "true total": (record("order.created", {"total": "true"}), "decline"),
    "1 for is_active": (record("user.updated", {"is_active": "1"}), "decline"),
    # not one object
    "empty value": (b"", "decline"),
    "whitespace only": (b" \n", "decline"),
    "BOM": (b"\xef\xbb\xbf" + record("user.deleted", {}), "decline"),
    "NUL after the object": (record("user.deleted", {}) + b"\x00", "decline"),
    "two objects": (record("user.deleted", {}) + record("user.deleted", {}), "decline"),
    "trailing comma": (record("user.deleted", {"version": "3,"}), "decline"),
    # duplicate and escaped keys
    "duplicate id": (record("user.deleted", {"id": '7, "id": 8'}), "decline"),
    "duplicate data": (record("user.deleted", {"data": '{"id": 7}, "data": {"id": 8}'}), "decline"),
    "duplicate event_type": (record("user.created", {"event_type": '"user.created", "event_type": "user.deleted"'}), "decline"),
    "duplicate event_id via an escaped key": (record("user.deleted", {"event_id": f'"{EVENT_ID}", "\\u0065vent_id": "{EVENT_ID}"'}), "decline"),
    "duplicate extra key": (record("user.deleted", {"version": '3, "x": 1, "x": 2'}), None),
    "escaped data key": (record("user.deleted", {}).replace(b'"data"', b'"\\u0064ata"'), "accept"),
    "escaped id key": (record("user.deleted", {"data": '{"\\u0069d": 7}'}), "accept"),
    "escaped version key": (record("user.deleted", {}).replace(b'"version"', b'"\\u0076ersion"'), "accept"),
    "escaped event_type value": (record("user.deleted", {"event_type": '"user.del\\u0065ted"'}), "accept"),
    "escaped timestamp": (record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05\\u005a"'}), "accept"),
    "escaped uuid": (record("user.deleted", {"event_id": '"\\u0033' + EVENT_ID[1:] + '"'}), "accept"),
    "escaped total": (record("order.created", {"total": '"\\u0031\\u0032.5"'}), "accept"),
    "escaped email": (record("user.updated", {"email": '"ada\\u0040example.com"'}), "accept"),
    "escaped status": (record("order.created", {"status": '"p\\u0061id"'}), "accept"),
    "key with a NUL": (record("user.deleted", {"version": '3, "vers\\u0000ion": 4'}), None),
    "upper-case key": (record("user.deleted", {"version": '3, "VERSION": 4'}), "accept"),
    # what an ignored field holds: pydantic parses it all
    "lone high surrogate in an extra field": (_extra('"\\ud800"'), "decline"),
    "lone low surrogate in an extra data field": (_extra('"x\\udc00"', "order.created", "data"), "decline"),
    "lone surrogate in an extra key": (record("user.deleted", {"version": '3, "\\ud800": 1'}), "decline"),
    "lone surrogate deep in an extra field": (_extra('{"a": [1, {"b": "\\udfff"}]}'), "decline"),
    "surrogate pair in an extra field": (_extra('"\\ud83d\\ude00"'), "accept"),
    "invalid UTF-8 in an extra field": (_extra(f'"{INVALID_UTF8}"'), "decline"),
    "invalid UTF-8 in an extra data field": (_extra(f'"{INVALID_UTF8}"', "user.updated", "data"), "decline"),
    "overlong UTF-8 in an extra field": (record("user.deleted", {"version": '3, "x": "OVERLONG"'}).replace(b"OVERLONG", b"\xc0\xaf"), "decline"),
    "raw control character in an extra field": (_extra('"a\tb"'), "decline"),
    "NaN in an extra field": (_extra("NaN"), "decline"),
    "Infinity in an extra field": (_extra("Infinity"), "decline"),
    "-Infinity in an extra data field": (_extra("-Infinity", "order.updated", "data"), "decline"),
    "1e999 in an extra field": (_extra("1e999"), "decline"),
    "-1e999 in an extra field": (_extra("-1e999"), "decline"),
    "1e-999 in an extra field": (_extra("1e-999"), None),
    "30 digits in an extra field": (_extra("123456789012345678901234567890"), "accept"),
    "-30 digits in an extra data field": (_extra("-123456789012345678901234567890", "user.created", "data"), "accept"),
    "400 digits in an extra field": (_extra("9" * 400), None),
    "4300 digits in an extra field": (_extra("9" * 4300), None),
    "4301 digits in an extra field": (_extra("9" * 4301), None),
    # jiter reads the integer part of a number as an integer first: beyond 4300 digits it refuses
    # the record even when an exponent brings the number back into the range of a double
    "4301-digit mantissa with an exponent in an extra field": (_extra("1" + "0" * 4300 + "e-4300"), None),
    "4301-digit mantissa with a fraction and an exponent in an extra data field":
        (_extra("1" + "0" * 4300 + ".5e-4300", "user.updated", "data"), None),
    "4301-digit total with an exponent": (record("order.created", {"total": "1" + "0" * 4300 + "e-4300"}), None),
    "4300-digit mantissa with an exponent in an extra field": (_extra("1" + "0" * 4299 + "e-4299"), None),
    "5000-digit fraction in an extra field": (_extra("1." + "1" * 5000), None),
    "nesting 20 deep in an extra field": (_extra("[" * 20 + "]" * 20), "accept"),
    "nesting 126 deep in an extra field": (_extra("[" * 126 + "]" * 126), None),
    "nesting 150 deep in an extra field": (_extra("[" * 150 + "]" * 150), None),
    "nesting 300 deep in an extra field": (_extra("[" * 300 + "]" * 300), "decline"),
    "objects nested 150 deep in an extra data field": (_extra('{"a":' * 150 + "1" + "}" * 150, "user.deleted", "data"), None),
    # keys of one event type's data in another's
    "user data on an order": (record("order.created", {"data": '{"id": 11, "email": "ada@example.com", "name": "Ada"}'}), "decline"),
    "order data on a user": (record("user.created", {"data": '{"id": 7, "user_id": 7, "total": "1", "status": "paid"}'}), "decline"),
    "order data on a ref": (record("order.cancelled", {"data": '{"id": 7, "status": "cancelled"}'}), "accept"),
    "total in a user event": (record("user.updated", {"is_active": 'true, "total": "not a number"'}), "accept"),
    "an invalid email in a cancel": (record("order.cancelled", {"data": '{"id": 7, "email": "not an email", "total": NaN}'}), "decline"),
    "a user's fields in a delete": (record("user.deleted", {"data": '{"id": 7, "email": 5, "name": "", "is_active": "x"}'}), "accept"),
    "envelope keys inside data": (record("user.deleted", {"data": '{"id": 7, "version": "x", "event_type": 5}'}), "accept"),
    "data keys in the envelope": (record("user.deleted", {"version": '3, "id": "x", "email": 5, "total": -1'}), "accept"),
    # numbers in the checked fields
    "version -0": (record("user.deleted", {"version": "-0"}), "decline"),
    "version 2**63-1": (record("user.deleted", {"version": str(BIGINT_MAX)}), "accept"),
    "version 2**63": (record("user.deleted", {"version": str(BIGINT_MAX + 1)}), "decline"),
    "version 1e0": (record("user.deleted", {"version": "1e0"}), "decline"),
    "id -(2**63)": (record("user.deleted", {"id": str(-(2**63))}), "decline"),
    "total -0": (record("order.created", {"total": "-0"}), None),
    "total -0.0": (record("order.created", {"total": "-0.0"}), None),
    "total 1e2": (record("order.created", {"total": "1e2"}), None),
    "total 1.7976931348623157e308": (record("order.created", {"total": "1.7976931348623157e308"}), "decline"),
    "total as 18446744073709551616": (record("order.created", {"total": "18446744073709551616"}), "decline"),
}


@pytest.mark.parametrize(("value", "expected"), SERDE_SHAPES.values(), ids=SERDE_SHAPES.keys())
def test_serde_shapes(value, expected):
    event_type, _ = check_native(value)
    if expected is not None:
        assert ("accept" if event_type is not None else "decline") == expected


@PROPERTY
@given(near_valid_records())
def test_accepts_only_what_pydantic_accepts_with_equal_values(value):
    check_native(value)


@settings(max_examples=600, deadline=None)
@given(edited(timestamps(), "0123456789-:.,TtZz+ _\u0663"), st.sampled_from(["user.deleted", "order.created"]))
def test_timestamps_one_edit_away(text, event_type):
    check_native(record(event_type, {"occurred_at": json.dumps(text)}))


@settings(max_examples=600, deadline=None)
@given(edited(totals(), '0123456789.-+eE_ "'))
def test_totals_one_edit_away(text):
    check_native(record("order.updated", {"total": text}))


@st.composite
def numbers(draw) -> str:
    """JSON numbers (and near-numbers) of every size: the integer part up to thousands of digits,
    fractions, exponents that bring them back in range or out of it."""
    sign = draw(st.sampled_from(["", "", "-"]))
    int_digits = draw(st.sampled_from([1, 2, 15, 19, 20, 308, 309, 400, 4299, 4300, 4301, 4302, 5000]))
    first = draw(st.sampled_from("123456789")) if int_digits > 1 else draw(st.sampled_from("0123456789"))
    integer = first + draw(st.sampled_from(["0", "9", "3"])) * (int_digits - 1)
    fraction = draw(st.sampled_from(["", "", ".0", ".5", ".25", "." + "1" * 20, "." + "0" * 400 + "1"]))
    exponent = draw(st.sampled_from(["", "", "e0", "E+2", f"e-{int_digits - 1}", f"e-{int_digits + 300}", f"e{400 - int_digits}", "e-400", "e400"]))
    return sign + integer + fraction + exponent


@settings(max_examples=300, deadline=None)
@given(numbers(), st.sampled_from(sorted(DATA_KIND)), st.sampled_from(["envelope", "data"]))
@example("1" + "0" * 4300 + "e-4300", "user.deleted", "envelope")
def test_numbers_in_ignored_fields(text, event_type, where):
    """A number nobody reads must still be one pydantic reads: the record is poison otherwise."""
    check_native(_extra(text, event_type, where))


@settings(max_examples=200, deadline=None)
@given(numbers())
def test_numbers_as_the_total(text):
    check_native(record("order.created", {"total": text}))


_hex = "0123456789abcdefABCDEF"


@settings(max_examples=300, deadline=None)
@given(st.text(_hex, min_size=32, max_size=32), st.sampled_from(["hyphens", "hyphens", "plain", "braces", "urn", "moved hyphen"]))
def test_uuid_shapes(digits, shape):
    hyphenated = f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
    text = {"hyphens": hyphenated, "plain": digits, "braces": "{" + hyphenated + "}", "urn": "urn:uuid:" + hyphenated,
            "moved hyphen": hyphenated[:7] + "-" + hyphenated[7] + hyphenated[9:]}[shape]
    event_type, _ = check_native(record("order.cancelled", {"event_id": json.dumps(text)}))
    if shape == "hyphens":
        assert event_type == "order.cancelled"


@settings(max_examples=300, deadline=None)
@given(addresses(), st.booleans())
def test_email_shapes(address, ensure_ascii):
    """The native email check against pydantic's (handlers.email, EmailStr), on test_email's
    addresses: it may only accept what the fast path there accepts, normalized alike."""
    check_native(record("user.updated", {"email": json.dumps(address, ensure_ascii=ensure_ascii)}))


@settings(max_examples=400, deadline=None)
@given(valid_events(), st.sampled_from(ENCODINGS))
def test_valid_events(event, encoding):
    value = encode_event(event, encoding)
    event_type, values = check_native(value)
    # Only years 1 and 9999 (whose conversion to UTC can overflow) are left to pydantic.
    if 2 <= int(event["occurred_at"][:4]) <= 9998:
        assert event_type == event["event_type"], (value, values)


ACCEPTED = {
    "user": record("user.created", {}),
    "order": record("order.created", {}),
    "cancel": record("order.cancelled", {}),
    "offset": record("user.deleted", {"occurred_at": '"2026-01-02T05:04:05+02:00"'}),
    "negative offset": record("user.deleted", {"occurred_at": '"2026-01-01T22:04:05-05:00"'}),
    "offset -00:00": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05-00:00"'}),
    "offset 23:59 in year 2": record("user.deleted", {"occurred_at": '"0002-01-01T00:00:00+23:59"'}),
    "offset -23:59 in year 9998": record("user.deleted", {"occurred_at": '"9998-12-31T23:59:59.999999-23:59"'}),
    "leap day 2000": record("user.deleted", {"occurred_at": '"2000-02-29T00:00:00Z"'}),
    "before 2000": record("user.deleted", {"occurred_at": '"1999-12-31T23:59:59.999999Z"'}),
    "no fraction": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05Z"'}),
    "one fraction digit": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.1Z"'}),
    "float total": record("order.created", {"total": "18596.84"}),
    "integral float total": record("order.created", {"total": "100.0"}),
    "float total, one place": record("order.created", {"total": "1.1"}),
    "int total": record("order.created", {"total": "5"}),
    "zero": record("order.created", {"total": "0"}),
    "largest total": record("order.created", {"total": '"9999999999.99"'}),
    "largest float total": record("order.created", {"total": "9999999999.99"}),
    "string total": record("order.created", {"total": '"37361.78"'}),
    "string total with leading zeros": record("order.created", {"total": '"0012.50"'}),
    "uppercase domain": record("user.updated", {"data": '{"id": 7, "email": "Ada@Example.COM", "name": "Ada"}'}),
    "astral name": record("user.updated", {"name": json.dumps("\U0001f600" * 100, ensure_ascii=False)}),
    "escaped astral name": record("user.updated", {"name": '"' + "\\ud83d\\ude00" * 100 + '"'}),
    "whitespace": b'\n{ "event_id" :"' + EVENT_ID.encode() + b'",\t"event_type":"user.deleted","occurred_at":"2026-01-02T03:04:05Z",'
    b'\r\n"version":1,"data":{ "id" : 7 } }\n',
    "event_type last": b'{"event_id":"' + EVENT_ID.encode() + b'","occurred_at":"2026-01-02T03:04:05Z","version":1,"data":{"id":7},'
    b'"event_type":"user.deleted"}',
    "uppercase uuid": record("user.deleted", {"event_id": json.dumps(EVENT_ID.upper())}),
    "largest ids": record("order.updated", {"id": str(BIGINT_MAX), "user_id": str(BIGINT_MAX), "version": str(BIGINT_MAX)}),
    "no is_active (its default)": record("user.created", {"data": '{"id": 7, "email": "a@b.io", "name": "A"}'}),
}


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepts(value):
    event_type, _ = check_native(value)
    assert event_type is not None


@pytest.mark.parametrize("value", DECLINED_VALID.values(), ids=DECLINED_VALID.keys())
def test_declined_valid_events_are_valid(value):
    """The records section 4 mixes in as 'valid, but declined': they are both."""
    event_type, _ = check_native(value)
    assert event_type is None
    assert not isinstance(CONTRACT.decode(value), (Poison, Tombstone))


# -- 2. extra fields stay native ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(valid_events().filter(lambda e: 2 <= int(e["occurred_at"][:4]) <= 9998).flatmap(with_extra_fields),
       st.sampled_from(["orjson", "json", "json-ascii", "json-indent"]))
def test_extra_fields_stay_native(event, encoding):
    value = encode_event(event, encoding)
    event_type, reason = check_native(value)
    assert event_type == event["event_type"], (value, reason)


def _records(topic: str, partition: int, values: list, first_offset: int = 0) -> list[Rec]:
    return [Rec(topic, partition, first_offset + i, None, value) for i, value in enumerate(values)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(valid_events(entity_id=None).filter(lambda e: 2 <= int(e["occurred_at"][:4]) <= 9998).flatmap(with_extra_fields),
                min_size=1, max_size=20),
       st.integers(0, 2**32 - 1))
def test_extra_fields_batch_has_no_fallbacks(events, seed):
    """The issue's acceptance: events with extra envelope and data fields stay on the native path
    (fallback counter 0), through Preparer.prepare as the loop calls it."""
    tp = TopicPartition("events", 0)
    records = {tp: _records("events", 0, [orjson.dumps(e) for e in events])}
    (batch,) = Preparer(build_registry()).prepare(records)
    assert batch.fallbacks == Counter()
    assert batch.sources is not None
    assert_same_part(Preparer(CONTRACT), [tp], records, random.Random(seed))


def test_generated_events_with_extra_fields_have_no_fallbacks():
    rng = random.Random(5)
    events = Generator(5).stream(2000, duplicates=0.05, older=0.05)
    for event in events:
        event["trace_id"] = uuid.UUID(int=rng.getrandbits(128)).hex
        event["schema_version"] = 2
        event["headers"] = {"origin": "crm", "attempt": "1"}
        event["tags"] = ["a", "b"]
        event["data"]["source"] = "billing"
        event["data"]["tags"] = ["x", {"nested": [1, 2.5, None, True]}]
        event["data"]["meta"] = {"id": -1, "version": "not mine"}
    records = {}
    for event in events:
        tp = TopicPartition(topic_for(event), event["data"]["id"] % 3)
        records.setdefault(tp, []).append(orjson.dumps(event))
    records = {tp: _records(tp.topic, tp.partition, values) for tp, values in records.items()}
    batches = Preparer(build_registry()).prepare(records, writers=2)
    assert len(batches) == 2
    for batch in batches:
        assert batch.fallbacks == Counter()
        assert batch.sources is not None
        assert not batch.poison


# -- 3. the real traffic is accepted ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 7])
def test_takes_every_generated_record(seed):
    """bench/workload.py's traffic: none may go to pydantic, or the fast path would be dead code
    without anyone noticing."""
    values = [orjson.dumps(e) for e in Generator(seed).stream(3000, duplicates=0.05, older=0.05, user_share=0.3)]
    for value in values:
        event_type, reason = check_native(value)
        assert event_type is not None, (value, reason)
    assert ec_native.PartBuilder(PATH.compiled).add(values, "events") == []
    records = {TopicPartition("events", 0): _records("events", 0, values)}
    (batch,) = Preparer(CONTRACT).prepare(records)
    assert batch.fallbacks == Counter() and batch.sources is not None


# -- 4. a whole part: the Python path's statements, with declined records merged by slot -------------


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


NUMERIC_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
TIMESTAMP_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")


def _literal_int(text: str) -> int:
    assert re.fullmatch(r"-?[0-9]+", text), text
    return int(text)


def _literal_bool(text: str) -> bool:
    assert text in ("true", "false"), text
    return text == "true"


def _literal_numeric(text: str) -> Decimal:
    assert NUMERIC_TEXT.fullmatch(text), text
    return Decimal(text)


def _literal_instant(text: str) -> datetime:
    assert TIMESTAMP_TEXT.fullmatch(text), text
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() is not None, text  # a naive one would be read in the session's zone
    return moment.astimezone(timezone.utc)


def _literal_text(text: str) -> str:
    return text


LITERAL = {"int8": _literal_int, "bool": _literal_bool, "numeric": _literal_numeric, "timestamptz": _literal_instant, "text": _literal_text}


def _copy_numeric(raw: bytes) -> Decimal:
    """numeric's binary form: ndigits, weight, sign, dscale, then base-10000 digits."""
    ndigits, weight, sign, dscale = struct.unpack_from(">hhHH", raw)
    assert len(raw) == 8 + 2 * ndigits, raw
    assert sign in (0x0000, 0x4000), f"sign {sign:#x}"  # NaN and infinities are never sent
    assert 0 <= dscale <= 1000, dscale
    digits = struct.unpack_from(f">{ndigits}h", raw, 8)
    assert all(0 <= d < 10_000 for d in digits), digits
    with localcontext() as context:
        context.prec = 1000
        value = sum((Decimal(d) * Decimal(10_000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0))
        # PostgreSQL drops the digits that dscale hides: there must be none
        assert value == value.quantize(Decimal(1).scaleb(-dscale)), (raw.hex(), value, dscale)
        return -value if sign == 0x4000 else value


def _copy_int8(raw: bytes) -> int:
    assert len(raw) == 8, raw
    return struct.unpack(">q", raw)[0]


def _copy_bool(raw: bytes) -> bool:
    assert raw in (b"\x00", b"\x01"), raw
    return raw == b"\x01"


def _copy_instant(raw: bytes) -> datetime:
    return PG_EPOCH + timedelta(microseconds=_copy_int8(raw))


def _copy_text(raw: bytes) -> str:
    return raw.decode("utf-8")


COPY = {"int8": _copy_int8, "bool": _copy_bool, "numeric": _copy_numeric, "timestamptz": _copy_instant, "text": _copy_text}


def copy_rows(data: bytes, types: list[str]) -> list[tuple]:
    """PostgreSQL's binary COPY format: the PGCOPY signature, flags and header extension (0), per
    row an int16 field count and per field an int32 length (-1: NULL) and the bytes, the -1 trailer."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00", data[:11]
    assert struct.unpack_from(">ii", data, 11) == (0, 0)
    at, rows = 19, []
    while True:
        (fields,) = struct.unpack_from(">h", data, at)
        at += 2
        if fields == -1:
            assert at == len(data), "bytes after the trailer"
            return rows
        assert fields == len(types), (fields, types)
        row = []
        for pg in types:
            (length,) = struct.unpack_from(">i", data, at)
            at += 4
            if length == -1:
                row.append(None)
                continue
            assert length >= 0 and at + length <= len(data)
            row.append(COPY[pg](data[at : at + length]))
            at += length
        rows.append(tuple(row))


def pg_type(column: Column) -> str:
    """The column's type as both forms carry it (the batch tables and the unnest arrays)."""
    type_ = column.type
    if isinstance(type_, (BigInteger, Integer)):
        return "int8"
    for cls, name in ((Boolean, "bool"), (Numeric, "numeric"), (DateTime, "timestamptz"), (String, "text"), (Text, "text")):
        if isinstance(type_, cls):
            return name
    raise AssertionError(f"no pg type for {type_!r}")


def rows_of(prepared, rows) -> list[tuple] | None:
    """A Prepared's full or patch rows, either form, as typed tuples in column order."""
    if rows is None:
        return None
    aggregate = prepared.aggregate
    types = [pg_type(c) for c in aggregate.table.columns]
    if prepared.copied:
        assert isinstance(rows, bytes)
        return copy_rows(rows, types)
    assert list(rows) == [f"col_{c}" for c in aggregate.columns], rows.keys()
    columns = [[None if v is None else LITERAL[pg](v) for v in parse_array(rows[f"col_{c}"])] for c, pg in zip(aggregate.columns, types)]
    assert len({len(c) for c in columns}) == 1
    return list(zip(*columns))


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


def expected_fallbacks(preparer: Preparer, records: dict[TopicPartition, list[Rec]], tps: list[TopicPartition]) -> Counter:
    """Per reason, the valid records the native decoder declines (checked one by one here); the
    events of aggregates off the native path as "unsupported"."""
    counts: Counter = Counter()
    contract, path = preparer.contract, preparer.native
    for tp in tps:
        for rec in records[tp]:
            event = contract.decode(rec.value)
            if isinstance(event, (Poison, Tombstone)):
                continue
            if event.event_type in path.description.unsupported:
                counts["unsupported"] += 1
                continue
            event_type, reason = path.compiled.decode(rec.value)
            if event_type is None:
                counts[reason] += 1
    return counts


def native_batch(preparer: Preparer, tps: list[TopicPartition], records: dict) -> Batch:
    batch = preparer.prepare_part(tps, records)
    if batch.sources is None:  # it fell back: say why
        try:
            preparer._native_part(tps, records)
        except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException too
            pytest.fail(f"the part left the native path ({dict(batch.fallbacks)}): {type(exc).__name__}: {exc}")
        pytest.fail(f"the part left the native path: {dict(batch.fallbacks)}")
    return batch


def assert_same_part(preparer: Preparer, tps: list[TopicPartition], records: dict, rng: random.Random) -> Batch:
    """The part through the native path (declined valid records merged by slot) and through the
    Python path: the same bookkeeping, statements and outcomes."""
    native = native_batch(preparer, tps, records)
    python = preparer._python_part(tps, records, "test")
    assert native.fallbacks == expected_fallbacks(preparer, records, tps)
    assert [(tp, list(recs)) for tp, recs in native.sources] == [(tp, list(records[tp])) for tp in tps if records[tp]]
    assert native.poison == python.poison
    assert native.tombstones == python.tombstones
    assert (native.first_offsets, native.next_offsets, native.size) == (python.first_offsets, python.next_offsets, python.size)
    assert native.labels == [label for _, labels in native.prepared.parts for label in labels]
    assert sorted(native.labels) == sorted(python.labels)
    native_parts = {p.aggregate.name: (p, labels) for p, labels in native.prepared.parts}
    python_parts = {p.aggregate.name: (p, labels) for p, labels in python.prepared.parts}
    assert len(native_parts) == len(native.prepared.parts)
    assert native_parts.keys() == python_parts.keys()
    on_native_path = {a.name for a in preparer.native.description.aggregates}
    for name, (n, n_labels) in native_parts.items():
        p, p_labels = python_parts[name]
        assert n.aggregate is p.aggregate
        if name in on_native_path:
            assert n.copied and n.native is not None and tuple(n.events) == (), name
        else:
            assert not n.copied and n.native is None and list(n.events) == list(p.events), name
        assert (n.entities, n.entity_ids) == (p.entities, p.entity_ids), name
        assert list(n_labels) == list(p_labels), name
        assert rows_of(n, n.full_rows) == rows_of(p, p.full_rows), (name, "full")
        assert rows_of(n, n.patch_rows) == rows_of(p, p.patch_rows), (name, "patch")
        events = list(p.events)
        assert len(n_labels) == len(events)
        for stored in stored_versions(rng, events):
            expected = tuple(applies_one_by_one(events, stored))
            got = tuple(n.native.outcomes(stored)) if n.native is not None else tuple(applies_one_by_one(n.events, stored))
            assert got == expected, (name, stored)
    return native


@st.composite
def parts(draw) -> tuple[dict[TopicPartition, list[Rec]], int]:
    """A batch part as the loop hands it over: records of two topics and several partitions
    (offset order within each): generated histories of users and orders (the same entities again
    and again, stale versions, deletes and cancels, revivals), made odder (mutate), some with extra
    fields, with valid records the native checks decline, poison records and tombstones mixed in."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    n = draw(st.integers(1, 150))
    share = draw(st.sampled_from([0.3, 0.3, 0.0, 0.6, 1.0]))
    events = mutate(Generator(seed).stream(n, duplicates=0.05, older=0.05, user_share=share), rng, draw(st.sampled_from([0.0, 0.2, 1.0])))
    extra_share = draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]))
    values = []
    for event in events:
        if rng.random() < extra_share:
            event = {**event, "trace_id": new_hex(rng), "headers": {"a": "b"}, "data": {**event["data"], "source": "crm", "tags": ["t"]}}
        values.append(encode_event(event, rng.choice(["orjson", "orjson", "json", "json-ascii"])))
    specials = list(DECLINED_VALID.values()) * 2 + POISON_VALUES + [None] * 4
    for _ in range(draw(st.sampled_from([0, 1, 3, 10]))):
        values.insert(rng.randrange(len(values) + 1), rng.choice(specials))
    topics = ["users", "orders"]
    n_partitions = draw(st.integers(1, 3))
    grouped: dict[TopicPartition, list] = {}
    if draw(st.booleans()):  # by topic and entity, as producers key them
        for value in values:
            event = CONTRACT.decode(value)
            if isinstance(event, (Poison, Tombstone)):
                tp = TopicPartition(rng.choice(topics), rng.randrange(n_partitions))
            else:
                tp = TopicPartition("users" if event.event_type.startswith("user.") else "orders", event.entity_id % n_partitions)
            grouped.setdefault(tp, []).append(value)
    else:  # anywhere
        for value in values:
            grouped.setdefault(TopicPartition(rng.choice(topics), rng.randrange(n_partitions)), []).append(value)
    records = {tp: _records(tp.topic, tp.partition, vs, rng.randrange(10**6)) for tp, vs in grouped.items()}
    return records, seed


def new_hex(rng: random.Random) -> str:
    return "%032x" % rng.getrandbits(128)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(parts())
def test_part_is_the_python_paths(part):
    records, seed = part
    assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(seed))


@pytest.mark.parametrize("seed", [1, 42])
def test_large_generated_part_is_the_python_paths(seed):
    """bench/workload.py's traffic with the declined valid records, poison and tombstones mixed in,
    as two topics of three partitions each, prepared by two writers."""
    rng = random.Random(seed)
    events = Generator(seed).stream(4000, duplicates=0.05, older=0.05, user_share=0.3)
    grouped: dict[TopicPartition, list] = {}
    for event in events:
        grouped.setdefault(TopicPartition(topic_for(event), rng.randrange(3)), []).append(orjson.dumps(event))
    for value in [*DECLINED_VALID.values(), *POISON_VALUES, None, None]:
        vs = grouped[rng.choice(sorted(grouped))]
        vs.insert(rng.randrange(len(vs) + 1), value)
    records = {tp: _records(tp.topic, tp.partition, vs, 100) for tp, vs in grouped.items()}
    preparer = Preparer(CONTRACT)
    batches = preparer.prepare(records, writers=2)
    assert sum(b.size for b in batches) == len(events) + len(DECLINED_VALID) + len(POISON_VALUES) + 2
    assert sum(b.fallbacks.total() for b in batches) == len(DECLINED_VALID)
    for tps in deal_partitions({tp: len(r) for tp, r in records.items()}, 2):
        native = assert_same_part(preparer, tps, records, rng)
        assert any(p.full_rows is not None for p, _ in native.prepared.parts)
        assert any(p.patch_rows is not None for p, _ in native.prepared.parts)  # deletes and cancels made it through


def _user(entity_id: int, version: int, name: str, email: str = "ada@example.com", event_type: str = "user.updated",
          occurred_at: str = "2026-01-02T03:04:05.123456+02:00", **extra) -> dict:
    return {"event_id": str(uuid.UUID(int=entity_id * 1000 + version)), "event_type": event_type, "occurred_at": occurred_at,
            "version": version, "data": {"id": entity_id, "email": email, "name": name, **extra}}


def _ref(event_type: str, entity_id: int, version: int, occurred_at: str = "2026-01-03T00:00:00Z") -> dict:
    return {"event_id": str(uuid.UUID(int=entity_id * 1000 + version + 500)), "event_type": event_type, "occurred_at": occurred_at,
            "version": version, "data": {"id": entity_id}}


def _order(entity_id: int, version: int, total, status: str = "paid", occurred_at: str = "2026-01-02T03:04:05Z") -> dict:
    return {"event_id": str(uuid.UUID(int=entity_id * 1000 + version + 700)), "event_type": "order.updated", "occurred_at": occurred_at,
            "version": version, "data": {"id": entity_id, "user_id": 7, "total": total, "status": status}}


def _one_part(values_by_topic: list[tuple[str, list]]) -> dict[TopicPartition, list[Rec]]:
    return {TopicPartition(topic, i): _records(topic, i, values) for i, (topic, values) in enumerate(values_by_topic)}


def test_collapse_cases_are_the_python_paths():
    """Hand-made histories: each row kind (full, patch, both, revival, stale in the batch)."""
    events = [
        _user(1, 1, "one"), _ref("user.deleted", 1, 2),                          # full then patch
        _ref("user.deleted", 2, 5), _user(2, 6, "two"),                          # patch then full: full only, revived
        _user(3, 4, "three"), _user(3, 2, "stale"), _user(3, 4, "dup"),          # stale within the batch
        _ref("user.deleted", 4, 3),                                              # patch only (placeholder)
        _user(5, 2, "five", occurred_at="2026-01-01T23:00:00-05:00"), _user(5, 3, "five b", occurred_at="2026-01-02T01:00:00.5Z"),
        _user(6, 1, "year 2", occurred_at="0002-01-01T00:00:00+23:59"), _user(6, 2, "before 2000", occurred_at="1969-07-20T20:17:40Z"),
        _ref("order.cancelled", 10, 1), _order(10, 3, "12.5"), _ref("order.cancelled", 10, 4),  # full, then patch
        _order(11, 2, 7), _order(11, 1, 8.25), _order(12, 1, 0.07), _ref("order.cancelled", 13, BIGINT_MAX),
        _order(14, 2, "0012.50", occurred_at="2026-01-02T03:04:05.1-23:59"), _order(15, 1, 9999999999.99), _order(16, 1, "0.00"),
    ]
    rng = random.Random(3)
    preparer = Preparer(CONTRACT)
    for order in (events, events[::-1], rng.sample(events, len(events))):
        records = _one_part([("users", [orjson.dumps(e) for e in order])])
        assert_same_part(preparer, sorted(records), records, rng)


# Valid totals the native checks decline: pydantic's Decimal goes back into the slot as it is.
DECLINED_TOTALS = ['"12.500"', '"12.5000"', '"12.50000"', '"0.000000"', '"7.000000000"', '"1.00000000000000000000"', '"1E+1"', '"1e2"',
                   '"100e-2"', '" 5 "', '"+5"', '"0012.5000"']


@pytest.mark.parametrize("total", DECLINED_TOTALS)
def test_declined_total_is_merged_as_pydantic_read_it(total):
    """A total pydantic reads with more places than the native check takes (trailing zeros), an
    exponent or a sign: merged by slot, it must reach the rows with its value."""
    value = record("order.created", {"total": total})
    assert PATH.compiled.decode(value)[0] is None
    event = CONTRACT.decode(value)
    assert not isinstance(event, (Poison, Tombstone))
    records = _one_part([("orders", [orjson.dumps(_order(11, 1, "3.50")), value, orjson.dumps(_order(12, 1, 4))])])
    native = assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(8))
    (prepared, _), = native.prepared.parts
    rows = rows_of(prepared, prepared.full_rows)
    assert [row[2] for row in rows] == [event.data.total, Decimal("4")]  # entity 11: the later version


@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_tricky_text_survives_the_copy(ensure_ascii):
    events = [_user(i + 1, 1, name, TRICKY_EMAILS[i % len(TRICKY_EMAILS)], "user.created", is_active=bool(i % 2))
              for i, name in enumerate(TRICKY_NAMES)]
    values = [json.dumps(e, ensure_ascii=ensure_ascii).encode() for e in events]
    for value, event in zip(values, events):
        event_type, native = check_native(value)
        assert event_type is not None, value
    records = _one_part([("users", values)])
    batch = assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(4))
    assert batch.fallbacks == Counter()
    (prepared, _), = batch.prepared.parts
    rows = rows_of(prepared, prepared.full_rows)
    assert [row[2] for row in rows] == TRICKY_NAMES
    domain_lowered = [e.split("@")[0] + "@" + e.split("@")[1].lower() for e in TRICKY_EMAILS]
    assert [row[1] for row in rows] == [domain_lowered[i % len(TRICKY_EMAILS)] for i in range(len(TRICKY_NAMES))]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=100), min_size=1, max_size=8),
       st.booleans())
def test_any_name_survives_the_copy(names_, ensure_ascii):
    events = [_user(i + 1, 1, name, event_type="user.created") for i, name in enumerate(names_)]
    records = _one_part([("users", [json.dumps(e, ensure_ascii=ensure_ascii).encode() for e in events])])
    batch = assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(5))
    (prepared, _), = batch.prepared.parts
    assert [row[2] for row in rows_of(prepared, prepared.full_rows)] == names_


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(moments, st.integers(1, 5)), min_size=1, max_size=6))
def test_any_instant_survives_the_copy(history):
    """created_at (the first record-breaking event's), updated_at and deleted_at as instants,
    years 1 to 9999 and every offset, some merged from pydantic (years 1 and 9999)."""
    events = []
    for moment, version in history:
        kind = ["user.updated", "user.deleted"][version % 2]
        events.append(_ref(kind, 1, version, moment.isoformat()) if kind == "user.deleted" else _user(1, version, "n", occurred_at=moment.isoformat()))
    records = _one_part([("users", [orjson.dumps(e) for e in events])])
    assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(6))


def test_only_declined_records_and_nothing_else():
    values = [None, *POISON_VALUES, *DECLINED_VALID.values(), None]
    records = _one_part([("users", values), ("orders", [None])])
    batch = assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(7))
    assert batch.fallbacks.total() == len(DECLINED_VALID)
    assert len(batch.poison) == len(POISON_VALUES) and batch.tombstones == Counter({"users": 2, "orders": 1})


def test_nothing_but_poison_and_tombstones():
    records = _one_part([("users", [*POISON_VALUES, None]), ("orders", [None])])
    batch = assert_same_part(Preparer(CONTRACT), sorted(records), records, random.Random(7))
    assert batch.prepared.parts == [] and batch.labels == [] and batch.fallbacks == Counter()


def test_builder_is_used_once():
    builder = ec_native.PartBuilder(PATH.compiled)
    assert builder.add([orjson.dumps(_user(1, 1, "Ada"))], "users") == []
    assert len(builder.finish()) == 1
    with pytest.raises(RuntimeError):
        builder.finish()
    with pytest.raises(RuntimeError):
        builder.add([], "users")


def test_declines_what_is_not_bytes():
    good_user = orjson.dumps(_user(1, 1, "Ada", event_type="user.created"))
    good_order = orjson.dumps(_order(2, 1, "3.50"))
    values = [None, good_user, "not bytes", bytearray(good_user), memoryview(good_order), b"{not json", good_order, 7,
              record("user.created", {"version": "0"}), b"", record("user.deleted", {"data": '{"id": 0}'})]
    part = PATH.part()
    assert part.add(values, "users") == [(0, "not_bytes"), (2, "not_bytes"), (3, "not_bytes"), (4, "not_bytes"), (5, "json"),
                                         (7, "not_bytes"), (8, "int"), (9, "json"), (10, "int")]
    parts = part.finish()
    assert [(p.aggregate.name, p.entities, p.entity_ids, len(p.native)) for p, _ in parts] == [("users", 1, "{1}", 1), ("orders", 1, "{2}", 1)]
    assert [labels for _, labels in parts] == [[("users", "user.created")], [("users", "order.updated")]]


def test_fill_refuses_a_slot_that_holds_an_event():
    part = PATH.part()
    good, bad = orjson.dumps(_user(1, 1, "Ada")), DECLINED_VALID["non-ASCII email"]
    assert part.add([good, bad], "users") == [(1, "email")]
    event = CONTRACT.decode(bad)
    with pytest.raises(ValueError):
        part.fill(0, event)
    assert part.fill(1, event) is True
    with pytest.raises(ValueError):
        part.fill(1, event)


# -- 5. an aggregate the native checks do not cover takes the Python path, record by record ----------


class GadgetState(_Model):
    id: EntityId
    sku: Annotated[str, Field(pattern=r"^[A-Z]{3}-[0-9]{4}$")]  # a check the native path lacks
    price: Annotated[Decimal, Field(ge=0, lt=10**6, decimal_places=2)]


class GadgetMade(_Envelope):
    event_type: Literal["gadget.made"]
    data: GadgetState


class GadgetScrapped(_Envelope):
    event_type: Literal["gadget.scrapped"]
    data: EntityRef


GADGETS = Projection(
    table=Table(
        "gadgets", MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=False), Column("sku", String(8)), Column("price", Numeric(8, 2)),
        Column("version", BigInteger, nullable=False), Column("scrapped_at", DateTime(timezone=True)),
        Column("created_at", DateTime(timezone=True), nullable=False), Column("updated_at", DateTime(timezone=True), nullable=False),
    ),
    full=(GadgetMade,),
    patch=(GadgetScrapped,),
    columns={"id": ENTITY_ID, "sku": (data("sku"), on_insert(NULL)), "price": (data("price"), on_insert(NULL)), "version": VERSION,
             "scrapped_at": (NULL, OCCURRED_AT), "created_at": FIRST_OCCURRED_AT, "updated_at": OCCURRED_AT},
)


def _gadget(entity_id: int, version: int, sku: str = "ABC-1234", price="9.99", event_type: str = "gadget.made") -> bytes:
    data_ = {"id": entity_id, "sku": sku, "price": price} if event_type == "gadget.made" else {"id": entity_id}
    return orjson.dumps({"event_id": str(uuid.UUID(int=entity_id * 1000 + version)), "event_type": event_type,
                         "occurred_at": f"2026-02-0{1 + version % 9}T00:00:00+01:00", "version": version, "data": data_})


def test_unsupported_aggregate_is_reported():
    contract = build_registry([USERS, ORDERS, GADGETS], expected=None)
    description = Description(contract)
    assert set(description.unsupported) == {"gadget.made", "gadget.scrapped"}
    assert "pattern" in description.unsupported["gadget.made"]
    assert [a.name for a in description.aggregates] == ["users", "orders"]
    assert {t["name"] for t in description.descriptor["types"]} == EVENT_TYPE_NAMES
    assert Preparer(contract).python_only == description.unsupported


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(parts(), st.lists(st.tuples(st.integers(1, 6), st.integers(1, 4), st.sampled_from(["gadget.made", "gadget.scrapped"]),
                                   st.sampled_from(["ABC-1234", "XYZ-0000", "abc-1234"]), st.sampled_from(["9.99", 5, "0.10", 12.5, "-1"])),
                         min_size=1, max_size=20))
def test_unsupported_aggregate_takes_the_python_path_record_by_record(part, gadgets):
    records, seed = part
    rng = random.Random(seed)
    tp = TopicPartition("gadgets", 0)
    records = {**records, tp: _records("gadgets", 0, [_gadget(*g) for g in gadgets])}
    for tp_ in sorted(records):  # and some gadgets among the others
        if rng.random() < 0.5:
            records[tp_] = _records(tp_.topic, tp_.partition, [r.value for r in records[tp_]] + [_gadget(7, 9)], records[tp_][0].offset)
    contract = build_registry([USERS, ORDERS, GADGETS], expected=None)
    preparer = Preparer(contract)
    batch = assert_same_part(preparer, sorted(records), records, rng)
    valid_gadgets = sum(1 for recs in records.values() for r in recs
                        if not isinstance(e := contract.decode(r.value), (Poison, Tombstone)) and e.event_type.startswith("gadget."))
    assert batch.fallbacks["unsupported"] == valid_gadgets
    names = {p.aggregate.name: p for p, _ in batch.prepared.parts}
    assert ("gadgets" in names) == (valid_gadgets > 0)
    for name, prepared in names.items():
        assert prepared.copied == (name != "gadgets")


# -- 6. the descriptor is derived from the contract ------------------------------------------------------


def test_descriptor_names_are_the_contracts():
    descriptor = Description(build_registry()).descriptor
    assert [t["name"] for t in descriptor["types"]] == [t for a in CONTRACT.aggregates for t in a.projection.models]
    assert {t["name"] for t in descriptor["types"]} == EVENT_TYPE_NAMES
    assert [name for name, _ in descriptor["aggregates"]] == [a.name for a in CONTRACT.aggregates]
    for (name, types), aggregate in zip(descriptor["aggregates"], CONTRACT.aggregates):
        assert types == [pg_type(c) for c in aggregate.table.columns], name
    envelope = {f for model in EVENT_TYPES for f in model.model_fields} - {"event_type", "data"}
    nested = {f for model in EVENT_TYPES for f in model.model_fields["data"].annotation.model_fields}
    assert set(descriptor["top_keys"]) == envelope and set(descriptor["nested_keys"]) == nested
    assert (descriptor["discriminator"], descriptor["nested_key"]) == ("event_type", "data")
    for spec in descriptor["types"]:
        model = CONTRACT.models[spec["name"]]
        assert spec["aggregate"] == [a.name for a in CONTRACT.aggregates].index(CONTRACT[spec["name"]].name)
        assert spec["full"] == (spec["name"] in CONTRACT[spec["name"]].full_event_types)
        assert len(spec["fields"]) == len(model.model_fields) - 2 + len(model.model_fields["data"].annotation.model_fields)
        assert len(spec["row"]) == len(CONTRACT[spec["name"]].columns)
        # a field is stored iff a row reads it (or it is the id, version or occurred_at)
        read = {arg for kind, arg in spec["row"] if kind == "field"} | {spec["id"], spec["version"], spec["occurred"]}
        assert {i for i, f in enumerate(spec["fields"]) if f[6]} == read


class WidgetState(_Model):
    id: EntityId
    weight: Annotated[Decimal, Field(ge=0, lt=10**6, decimal_places=3)]
    label: Annotated[str, Field(min_length=2, max_length=5)] | None = None
    stock: Annotated[int, Field(ge=-5, le=10**6, validation_alias="inStock")] = 0
    color: Literal["red", "green", "blue"] = "red"
    fragile: bool = False
    note: Annotated[str, Field(max_length=3)] = "-"  # validated, never stored


class StrictRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: EntityId


class WidgetMade(_Envelope):
    event_type: Literal["widget.made"]
    data: WidgetState


class WidgetRecalled(_Envelope):
    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: Literal["widget.recalled"]
    data: StrictRef


WIDGETS = Projection(
    table=Table(
        "widgets", MetaData(),
        Column("id", BigInteger, primary_key=True, autoincrement=False), Column("weight", Numeric(9, 3)), Column("label", Text),
        Column("stock", Integer), Column("color", String(8), nullable=False), Column("fragile", Boolean), Column("recalled", Boolean),
        Column("last_event", String(36)), Column("checked_at", DateTime(timezone=True)), Column("version", BigInteger, nullable=False),
        Column("made_at", DateTime(timezone=True)), Column("updated_at", DateTime(timezone=True)),
    ),
    full=(WidgetMade,),
    patch=(WidgetRecalled,),
    columns={"id": ENTITY_ID, "weight": (data("weight"), const(Decimal("0.500"))), "label": (data("label"), on_insert(NULL)),
             "stock": (data("stock"), const(0)), "color": (data("color"), const("blue")), "fragile": (data("fragile"), on_insert(NULL)),
             "recalled": (const(False), const(True)), "last_event": Envelope("event_id"),
             "checked_at": (const(datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)), OCCURRED_AT),
             "version": VERSION, "made_at": FIRST_OCCURRED_AT, "updated_at": OCCURRED_AT},
)
WIDGET_CONTRACT = build_registry([WIDGETS, USERS], expected=None)
WIDGET_PATH = NativePath(WIDGET_CONTRACT)

_widget_fields = {
    "weight": st.sampled_from(["0", "1", "999999.999", "1000000", "0.5", "0.125", "0.1255", '"0.500"', '"0.5000"', '"7.25"', "-0", "-1",
                               "1e2", "12.5e-1", "null", '"x"', "0.1", "0.3", "2.675"]) | totals(),
    "label": st.sampled_from(["null", '"ab"', '"a"', '"abcde"', '"abcdef"', '"a\\u0000"', '"\\ud83d\\ude00\\ud83d\\ude00"', "5", '"\\ud800x"']),
    "inStock": st.sampled_from(["-5", "-6", "0", "1000000", "1000001", '"5"', "5.0", "null", "-0", str(-(2**63)), "true"]),
    "stock": st.sampled_from(["-6", '"x"', "7"]),  # not the alias: an ignored field
    "color": st.sampled_from(['"red"', '"green"', '"blue"', '"Blue"', "null", '"cancelled"']),
    "fragile": st.sampled_from(["true", "false", "1", '"true"', "null"]),
    "note": st.sampled_from(['"abc"', '"abcd"', '""', "null", "[]", '"\\u0000"']),
}
_event_ids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | st.uuids().map(lambda u: u.hex) | st.sampled_from(
    ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "urn:uuid:" + EVENT_ID])


@st.composite
def widget_records(draw) -> bytes:
    entity_id = draw(st.integers(1, 5))
    if draw(st.integers(0, 4)) == 0:
        return record("user.deleted", {"id": str(entity_id), "version": str(draw(st.integers(1, 4)))})
    event_type = draw(st.sampled_from(["widget.made", "widget.made", "widget.recalled"]))
    fields = {"id": str(entity_id)}
    if event_type == "widget.made":
        present = draw(st.lists(st.sampled_from(sorted(_widget_fields)), unique=True))
        fields.update({k: draw(_widget_fields[k]) for k in ["weight", *present]})
    # extra keys: ignored by widget.made, forbidden by widget.recalled
    data_extra = draw(st.sampled_from(["", "", "", ', "x": 1', ', "inStock": 5', ', "label": null']))
    envelope_extra = draw(st.sampled_from(["", "", "", ', "trace_id": "t"', ', "id": 5', ', "inStock": 1']))
    data_ = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + data_extra + "}"
    text = (f'{{"event_id": {json.dumps(draw(_event_ids))}, "event_type": "{event_type}", "occurred_at": {json.dumps(draw(timestamps()))}, '
            f'"version": {draw(st.integers(1, 4))}, "data": {data_}{envelope_extra}}}')
    return encode(text)


@settings(max_examples=400, deadline=None)
@given(widget_records())
def test_a_new_aggregate_is_held_to_pydantic(value):
    """A contract of another aggregate (negative bounds, nullable and defaulted fields, another
    decimal, an enum, a validated but unstored field, constants in its rows) is served with no
    native edit, and the native decoder accepts only what pydantic accepts, with equal values."""
    assert WIDGET_PATH.description.unsupported == {}
    check_native(value, WIDGET_PATH, WIDGET_CONTRACT)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(widget_records(), min_size=1, max_size=30), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_a_new_aggregates_part_is_the_python_paths(values, n_partitions, seed):
    rng = random.Random(seed)
    grouped: dict[TopicPartition, list] = {}
    for value in values:
        grouped.setdefault(TopicPartition(rng.choice(["widgets", "users"]), rng.randrange(n_partitions)), []).append(value)
    records = {tp: _records(tp.topic, tp.partition, vs) for tp, vs in grouped.items()}
    assert_same_part(Preparer(WIDGET_CONTRACT), sorted(records), records, rng)


class ScaleState(_Model):
    id: EntityId
    weight: Annotated[Decimal, Field(ge=0, le=1000, decimal_places=3, max_digits=6)]
    ratio: Annotated[Decimal, Field(max_digits=2)] = Decimal(0)


class ScaleSet(_Envelope):
    event_type: Literal["scale.set"]
    data: ScaleState


SCALES = Projection(
    table=Table("scales", MetaData(), Column("id", BigInteger, primary_key=True, autoincrement=False), Column("weight", Numeric),
                Column("ratio", Numeric), Column("version", BigInteger), Column("created_at", DateTime(timezone=True)),
                Column("updated_at", DateTime(timezone=True))),
    full=(ScaleSet,),
    columns={"id": ENTITY_ID, "weight": data("weight"), "ratio": data("ratio"), "version": VERSION, "created_at": FIRST_OCCURRED_AT,
             "updated_at": OCCURRED_AT},
)


@pytest.mark.parametrize(("weight", "ratio"), [("999.999", "0"), ("1000", "0"), ("1000.0", "0"), ("100.5", "0"), ("0.001", "0"),
                                               ("1", "0.05"), ("1", "0.005"), ("1", "9.9"), ("1", "99"), ("1", "100"), ("1", '"0.50"')])
def test_max_digits_leaves_its_aggregate_to_pydantic(weight, ratio):
    """max_digits is not among the native checks (pydantic counts the digits of the normalized
    value, the leading zeros of a fraction among them, and with decimal_places also the digits
    before the point): a model that uses it makes its aggregate Python-only, every record counted,
    and the part's result is pydantic's."""
    contract = build_registry([SCALES], expected=None)
    path = NativePath(contract)
    assert "max_digits" in path.description.unsupported["scale.set"]
    value = (f'{{"event_id": "{EVENT_ID}", "event_type": "scale.set", "occurred_at": "2026-01-02T03:04:05Z", "version": 1, '
             f'"data": {{"id": 1, "weight": {weight}, "ratio": {ratio}}}}}').encode()
    assert path.compiled.decode(value) == (None, "event_type")
    tp = TopicPartition("scales", 0)
    records = {tp: _records("scales", 0, [value])}
    [batch] = Preparer(contract).prepare(records)
    [reference] = Preparer(contract, native=False).prepare(records)
    valid = not isinstance(contract.decode(value), (Poison, Tombstone))
    assert batch.fallbacks == ({"unsupported": 1} if valid else {})
    assert batch.labels == reference.labels and len(batch.poison) == len(reference.poison)
