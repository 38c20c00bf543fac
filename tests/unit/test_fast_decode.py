"""handlers.fast_decode: the msgspec path accepts only what pydantic accepts, with equal values, and
decode_fast answers exactly as handlers.decode.decode (the oracle here) does."""

import json
import string
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.generate import Generator
from handlers import events
from handlers.decode import TOMBSTONE, Poison, Tombstone, decode
from handlers.events import BIGINT_MAX, EVENT_TYPE_NAMES
from handlers.fast_decode import FAST_EVENT_TYPES, _decode_msgspec, decode_fast

EVENT_ID = "3f1c2a9e-8f5b-4b0a-9a57-1a2b3c4d5e6f"
INVALID_UTF8 = "<<invalid utf-8>>"  # replaced by raw bytes once a record is encoded
DATA_KIND = {
    "user.created": "user", "user.updated": "user", "user.deleted": "ref",
    "order.created": "order", "order.updated": "order", "order.cancelled": "ref",
}
PROPERTY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_same_event(fast: object, slow: object) -> None:
    assert not isinstance(slow, (Poison, Tombstone)), (fast, slow)
    assert fast.event_type == slow.event_type
    assert fast.event_id == slow.event_id
    assert fast.version == slow.version
    assert fast.occurred_at == slow.occurred_at
    assert fast.occurred_at.utcoffset() == slow.occurred_at.utcoffset()
    assert fast.entity_id == slow.entity_id
    names = tuple(type(slow.data).model_fields)
    assert fast.data.__struct_fields__ == names
    for name in names:
        mine, theirs = getattr(fast.data, name), getattr(slow.data, name)
        assert mine == theirs and type(mine) is type(theirs), (name, mine, theirs)


def assert_same_answer(raw: bytes) -> None:
    """decode_fast(raw) is decode(raw): the same event, or the very same Poison."""
    slow = decode(raw)
    result = decode_fast(raw)
    if isinstance(result, msgspec.Struct):
        assert_same_event(result, slow)
    else:  # pydantic's own answer
        assert result == slow


# -- odd values: the known-tricky ones, field by field -----------------------------------------
# As JSON text. Each goes into an otherwise valid record, once alone (test_each_odd_value_alone),
# and at random with others (the property tests below).

NOT_A_STRING = ["null", "true", "0", "1.5", "[]", "{}", '[""]']
ODD_INTS = ["0", "-0", "-1", str(BIGINT_MAX + 1), str(2**64), str(-(2**63)), "1" + "0" * 30, "1.0", "7.5", "1e2", "1E0", "0.0",
            "true", "false", "null", '"7"', "[]", "01", "+1", "1.", "NaN", "Infinity", str(BIGINT_MAX), "1"]
ODD_UUIDS = [EVENT_ID.upper(), EVENT_ID.replace("-", ""), f"{{{EVENT_ID}}}", f"urn:uuid:{EVENT_ID}", EVENT_ID[:-1], EVENT_ID + "0",
             f" {EVENT_ID}", f"{EVENT_ID}\n", EVENT_ID.replace("-", "_"), EVENT_ID[:8] + EVENT_ID[9:], EVENT_ID.replace("a", "g"), ""]
ODD_EVENT_TYPES = [json.dumps(t) for t in ["user.exploded", "User.Created", "user.created ", " user.created", "", "order.Created",
                                            "user.created\x00", "user"]] + ['"user.cr\\u0065ated"', '"\\u006frder.cancelled"', "5", "null"]
TIMESTAMP = {"date": "2026-01-02", "separator": "T", "clock": "03:04:05", "fraction": ".123456", "zone": "+02:00"}
ODD_TIMESTAMP_PARTS = {
    "date": ["20260102", "2026-1-02", "2026-W01-1", "2026-002", "0000-01-01", "2026-13-01", "2026-00-10", "2026-01-32",
             "2026-02-30", "2024-02-29", "2026-01-\u0663\u0661", "\u0662026-01-02", "+2026-01-02", "0001-01-01", "9999-12-31"],
    "separator": ["t", " ", "_", "x", "", "TT", "\u00e9"],
    "clock": ["03:04", "030405", "03", "3:04:05", "24:00:00", "23:60:00", "23:59:60", "23:59:59.", "03:04:05,5", "03:04:05:06",
              "\uff10\uff13:04:05", "00:00:00", "23:59:59"],
    "fraction": ["", ".", ",", ",5", ".1", ".12345", ".1234567", ".9999999", ".9999995", ".123456789012", ".\u0663", ". 5", ".5."],
    "zone": ["Z", "z", "", "+0200", "+02", "+02:00:30", "+02:00:00.5", "+24:00", "-24:00", "+23:59", "-23:59", "+14:00", "-14:00",
             "-00:00", "+00:00", "+05:60", "+05:99", "+5:00", " Z", "Z ", "+02:00Z", "UTC", "+\u0660\u0662:00"],
}
ODD_TIMESTAMPS = [json.dumps(t) for t in ["2026-01-02", "yesterday", "", "2026-01-02T03:04:05Z\n", "2026-01-02T03:04:05"]] + [
    "1767322800", "1767322800.5", "-1", "null", "true", "[]"]
# near datetime.min/max, with offsets that do and do not push the instant out of range
_EDGE_OFFSETS = ("00:01", "13:59", "14:00", "14:01", "23:59")
UTC_EDGES = [f"0001-01-01T{h}:00+{o}" for h in ("00:00", "13:59", "14:00", "23:59") for o in _EDGE_OFFSETS] + [
    f"9999-12-31T{h}:59.999999-{o}" for h in ("00:00", "09:59", "10:00", "23:59") for o in _EDGE_OFFSETS]
ODD_EMAILS = [
    "not-an-email", "", "a@", "@example.com", "a b@example.com", "ada@exa\x00mple.com", "ada\x00@example.com", "Ada.Lovelace@Example.COM",
    "a..b@example.com", ".a@example.com", "a@example..com", "a@-example.com", "a@ex--ample.com", '"quoted"@example.com', "a@[127.0.0.1]",
    "\uff41@example.com", "a@example.com ", " a@example.com", "ada@b\u00fccher.de", "\u00e9@example.com", "u@xn--bcher-kva.example",
    "ADA@EXAMPLE.COM", "a" * 64 + "@x.com", "a" * 65 + "@x.com", "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com",
    "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 59 + ".com", "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com",
    "John Doe <jd@example.com>", "a@b.test", "a@b.localhost", "a@b.local", "a@b.onion", "a@b.c0m", "a@b.123", "a@x", "a@b.xn--p1ai",
]
ODD_NAMES = ["", "n", "n" * 100, "n" * 101, "\U0001f600" * 100, "\U0001f600" * 101, "\u00e9" * 100, "\u00e9" * 101, "\x00", "Ada\x00",
             "\x00Ada", " ", "\t\n", "\x7f", "\u2028", "\ufeff"]
ESCAPED_NAMES = ['"\\ud800"', '"x\\udc00"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"', '"a\\u0000b"', '"\\u0041da"', '"a\\/b"', '"\\u00e9"']
ODD_TOTALS = [
    "1e2", "1E2", "1e-2", "1.5e1", "-0.0", "-0", "0", "0.0", "1.10", "0.30000000000000004", "0.1000000000000000000001", "1e400", "1e10",
    "2.675", "0.001", "-0.01", "-1", "9999999999.99", "9999999999.995", "9999999999.999999", "10000000000", "10000000000.0",
    "NaN", "Infinity", "-Infinity", "true", "null", "[]", '"5"', '"+5"', '" 5"', '"5 "', '"5."', '".5"', '"NaN"', '"Infinity"', '"1e2"',
    '"1_0"', '"\\u0661\\u0662"', '"0012.50"', '"1.000"', '"1.001"', '"-0"', '"-1"', '""', '"0x10"', '"1,5"', '"1.2.3"', '"5\\n"',
    '"\\uff15"', '"9999999999.99"', '"10000000000"', '"10000000000.00"', '"99999999999"',
]
ODD_STATUSES = [json.dumps(s) for s in ["PAID", "lost", "", "paid ", "cancelled\x00"]] + NOT_A_STRING
ODD_IS_ACTIVE = ["null", "0", "1", '"true"', '"false"']
ODD_DATA = ["null", "[]", '"x"', "5", "{}"]


def odd_values() -> list[tuple[str, str]]:
    timestamps = [
        json.dumps("".join({**TIMESTAMP, part: odd, **({"zone": zone} if part != "zone" else {})}.values()))
        for part, odds in ODD_TIMESTAMP_PARTS.items() for odd in odds for zone in ("Z", "+02:00")
    ]
    return (
        [("event_id", json.dumps(u)) for u in ODD_UUIDS] + [("event_id", s) for s in NOT_A_STRING]
        + [("event_type", t) for t in ODD_EVENT_TYPES]
        + [("occurred_at", t) for t in timestamps + ODD_TIMESTAMPS + [json.dumps(e) for e in UTC_EDGES]]
        + [(field, i) for field in ("version", "id", "user_id") for i in ODD_INTS]
        + [("email", j) for e in ODD_EMAILS for j in dict.fromkeys([json.dumps(e), json.dumps(e, ensure_ascii=False)])]
        + [("name", j) for n in ODD_NAMES for j in dict.fromkeys([json.dumps(n), json.dumps(n, ensure_ascii=False)])]
        + [("name", n) for n in ESCAPED_NAMES]
        + [("total", t) for t in ODD_TOTALS] + [("status", s) for s in ODD_STATUSES]
        + [("is_active", b) for b in ODD_IS_ACTIVE] + [("data", d) for d in ODD_DATA]
    )


def record(event_type: str, overrides: dict[str, str]) -> bytes:
    """A valid record of event_type, with the JSON text of some fields (envelope or data) replaced."""
    data = {"user": {"id": "7", "email": '"ada@example.com"', "name": '"Ada"', "is_active": "false"},
            "order": {"id": "11", "user_id": "7", "total": '"12.34"', "status": '"paid"'},
            "ref": {"id": "7"}}[DATA_KIND[event_type]]
    fields = {"event_id": json.dumps(EVENT_ID), "event_type": json.dumps(event_type), "occurred_at": '"2026-01-02T03:04:05.123456Z"',
              "version": "3", "data": None}
    for name, text in overrides.items():
        (fields if name in fields else data)[name] = text
    if fields["data"] is None:
        fields["data"] = "{" + ", ".join(f'"{k}": {v}' for k, v in data.items()) + "}"
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode("utf-8", "surrogatepass")


def event_type_for(field: str) -> list[str]:
    if field in ("email", "name", "is_active"):
        return ["user.updated"]
    if field in ("total", "status", "user_id"):
        return ["order.created"]
    return ["user.created", "order.cancelled"]


@pytest.mark.parametrize(("event_type", "field", "text"), [(t, f, x) for f, x in odd_values() for t in event_type_for(f)])
def test_each_odd_value_alone(event_type, field, text):
    value = record(event_type, {field: text})
    fast = _decode_msgspec(value)
    if fast is not None:
        assert_same_event(fast, decode(value))
    assert_same_answer(value)


# -- near-valid records at random ----------------------------------------------------------------
# A valid record with a few (often none, mostly one) of its parts made odd: a field's value (an
# odd value above, or a random one), a missing, extra, duplicated or escaped key, another order,
# the data of another event type, bytes after the object, a damaged byte. Whitespace between the
# tokens varies throughout.


def js(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A JSON string literal, with or without \\u escapes for what is not ASCII."""
    return st.tuples(strategy, st.booleans()).map(lambda t: json.dumps(t[0], ensure_ascii=t[1]))


@st.composite
def mostly(draw, common: st.SearchStrategy[str], rare: st.SearchStrategy[str]) -> str:
    """common, and one time in ten rare."""
    return draw(rare if draw(st.integers(0, 9)) == 0 else common)


_zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
                          timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)), timezone(timedelta(hours=23, minutes=59))])
_moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=_zones)


@st.composite
def timestamps(draw, odd: bool = False) -> str:
    """RFC 3339 as producers write it (Z or an offset, 0 to 6 fraction digits), or with one or two
    of its parts odd."""
    moment = draw(_moments)
    digits = draw(st.integers(0, 6) | st.sampled_from([0, 1, 6]))
    offset = moment.isoformat()[-6:]
    parts = {
        "date": f"{moment.year:04d}-{moment:%m-%d}",
        "separator": "T",
        "clock": f"{moment:%H:%M:%S}",
        "fraction": f".{moment.microsecond:06d}"[: digits + 1] if digits else "",
        "zone": "Z" if offset == "+00:00" and draw(st.booleans()) else offset,
    }
    if odd:
        for part in draw(st.lists(st.sampled_from(sorted(ODD_TIMESTAMP_PARTS)), min_size=1, max_size=2, unique=True)):
            parts[part] = draw(st.sampled_from(ODD_TIMESTAMP_PARTS[part]))
    return "".join(parts.values())


@st.composite
def totals(draw) -> str:
    """At most 2 places, below 10**10: as a JSON float, a JSON number as written, or a string."""
    places = draw(st.integers(0, 2))
    value = Decimal(draw(st.integers(0, 10**10 * 10**places - 1) | st.sampled_from([0, 1, 10**10 * 10**places - 1]))).scaleb(-places)
    form = draw(st.sampled_from(["float", "number", "string", "string"]))
    if form == "float":
        return repr(float(value))
    return json.dumps(str(value)) if form == "string" else str(value)


_local = st.text(string.ascii_letters + string.digits + "._+-!#'", min_size=1, max_size=20)
_domain = st.lists(st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12), min_size=1, max_size=3).map(".".join)
_email = st.builds(lambda local, domain, tld: f"{local}@{domain}.{tld}", _local, _domain, st.sampled_from(["com", "org", "io", "DE", "COM"]))
STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled"]
_valid_ints = (st.integers(1, 1000) | st.integers(1, BIGINT_MAX) | st.sampled_from([1, BIGINT_MAX])).map(str)

VALID = {
    "event_id": js(st.uuids().map(str)),
    "occurred_at": js(timestamps()),
    "version": _valid_ints,
    "id": _valid_ints,
    "user_id": _valid_ints,
    "email": js(_email),
    "name": js(st.text(min_size=1, max_size=100)),
    "is_active": st.sampled_from(["true", "false"]),
    "total": totals(),
    "status": js(st.sampled_from(STATUSES)),
}
ODD = {
    "event_id": js(st.uuids().flatmap(lambda u: st.sampled_from([s.replace(EVENT_ID, str(u)) for s in ODD_UUIDS])))
    | st.sampled_from(NOT_A_STRING),
    "event_type": st.sampled_from(ODD_EVENT_TYPES),
    "occurred_at": js(timestamps(odd=True)) | js(st.sampled_from(UTC_EDGES)) | st.sampled_from(ODD_TIMESTAMPS),
    "version": st.sampled_from(ODD_INTS),
    "id": st.sampled_from(ODD_INTS),
    "user_id": st.sampled_from(ODD_INTS),
    "email": js(st.sampled_from(ODD_EMAILS) | st.builds(lambda e, tld: e.rsplit(".", 1)[0] + tld, _email, st.sampled_from([".test", ".x", "."])))
    | st.sampled_from(NOT_A_STRING),
    "name": js(st.sampled_from(ODD_NAMES) | st.text(min_size=95, max_size=105)) | st.sampled_from(ESCAPED_NAMES + NOT_A_STRING),
    "is_active": st.sampled_from(ODD_IS_ACTIVE),
    "total": st.sampled_from(ODD_TOTALS) | totals().map(lambda t: t[:-1] + "5" + t[-1] if t.endswith('"') else t + "5"),
    "status": st.sampled_from(ODD_STATUSES),
    "data": st.sampled_from(ODD_DATA),
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
).map(json.dumps)
extra_values = mostly(
    json_values,
    st.sampled_from(["[" * 300 + "]" * 300, "[" * 20 + "]" * 20, "9" * 5000, "1e400", "NaN", '"\\ud800"', f'"{INVALID_UTF8}"', '"a\\u0000"']),
)
extra_keys = st.sampled_from(["extra", "id", "event_type", "data", "version", "email", "total", "Version", "version ", ""])
DATA_FIELDS = {"user": ["id", "email", "name", "is_active"], "order": ["id", "user_id", "total", "status"], "ref": ["id"]}
SHAPE_CHANGES = ["missing key", "extra key", "duplicate key", "escaped key", "reordered", "other data", "trailing bytes", "damaged byte"]
WHITESPACE = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])


@st.composite
def edited(draw, texts: st.SearchStrategy[str], alphabet: str) -> str:
    """A text with one to three characters inserted, deleted or replaced, often near its end."""
    text = draw(texts)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)) | st.integers(max(0, len(text) - 8), len(text)))
        char = draw(st.sampled_from(alphabet))
        text = draw(st.sampled_from([text[:at] + char + text[at:], text[:at] + text[at + 1 :], text[:at] + char + text[at + 1 :]]))
    return text


# fromisoformat and speedate each read far more than RFC 3339, and the fast path's check of the
# shape leaves the rest to fromisoformat: the likeliest place for a difference, so searched alone.
@settings(max_examples=3000, deadline=None)
@given(edited(timestamps(), "0123456789-:.,TtZz+ _\u0663"))
def test_timestamps_one_edit_away(text):
    value = record("user.deleted", {"occurred_at": json.dumps(text)})
    fast = _decode_msgspec(value)
    if fast is not None:
        assert_same_event(fast, decode(value))


@settings(max_examples=2000, deadline=None)
@given(edited(totals(), '0123456789.-+eE_ "'))
def test_totals_one_edit_away(text):
    value = record("order.updated", {"total": text})
    fast = _decode_msgspec(value)
    if fast is not None:
        assert_same_event(fast, decode(value))


@st.composite
def json_object(draw, fields: list[tuple[str, str]], changes: list[str]) -> str:
    fields = list(fields)
    for change in changes:
        if change == "missing key" and fields:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif change == "extra key":
            fields.insert(draw(st.integers(0, len(fields))), (draw(extra_keys), draw(extra_values)))
        elif change == "duplicate key" and fields:
            key, _ = fields[draw(st.integers(0, len(fields) - 1))]
            again = draw(st.sampled_from([v for k, v in fields if k == key] + ["1", '"x"', "null", '"user.deleted"']))
            fields.insert(draw(st.integers(0, len(fields))), (key, again))
        elif change == "reordered":
            fields = draw(st.permutations(fields))
    escaped = draw(st.integers(0, len(fields) - 1)) if "escaped key" in changes and fields else -1
    parts = []
    for i, (key, value) in enumerate(fields):
        key_text = json.dumps(key) if i != escaped or not key else '"' + "\\u%04x" % ord(key[0]) + key[1:] + '"'
        parts.append(f"{draw(WHITESPACE)}{key_text}{draw(WHITESPACE)}:{draw(WHITESPACE)}{value}{draw(WHITESPACE)}")
    return "{" + ",".join(parts) + "}"


@st.composite
def near_valid_records(draw) -> bytes:
    event_type = draw(st.sampled_from(sorted(EVENT_TYPE_NAMES)))
    odd = draw(st.lists(st.sampled_from(sorted(ODD) + SHAPE_CHANGES), max_size=3))
    # the changes in the key lists apply to the envelope or to data, at random
    where = {change: draw(st.sampled_from(["envelope", "data"])) for change in odd if change in SHAPE_CHANGES}

    def text_of(field: str) -> str:
        return draw(ODD[field] if field in odd else VALID[field])

    kind = draw(st.sampled_from(sorted(DATA_FIELDS))) if "other data" in odd else DATA_KIND[event_type]
    data_fields = [f for f in DATA_FIELDS[kind] if f != "is_active" or "is_active" in odd or draw(st.booleans())]
    data = draw(json_object([(f, text_of(f)) for f in data_fields], [c for c, w in where.items() if w == "data"]))
    fields = [
        ("event_id", text_of("event_id")),
        ("event_type", text_of("event_type") if "event_type" in odd else json.dumps(event_type)),
        ("occurred_at", text_of("occurred_at")),
        ("version", text_of("version")),
        ("data", text_of("data") if "data" in odd else data),
    ]
    text = draw(json_object(fields, [c for c, w in where.items() if w == "envelope"]))
    text = draw(WHITESPACE) + text + draw(WHITESPACE)
    if "trailing bytes" in odd:
        text += draw(st.sampled_from(["x", ",", "{}", "\x00", "]"]))
    raw = text.encode("utf-8", "surrogatepass").replace(INVALID_UTF8.encode(), b"\xff\xfe")
    if "damaged byte" in odd:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.sampled_from([b"", b"\xff", b"\x00", b'"', b"\\", b"\xc3", b"}"])) + raw[at + 1 :]
    return raw


@PROPERTY
@given(near_valid_records())
def test_fast_path_accepts_only_what_pydantic_accepts_with_equal_values(value):
    fast = _decode_msgspec(value)
    if fast is not None:
        assert_same_event(fast, decode(value))


@PROPERTY
@given(near_valid_records())
def test_decode_fast_answers_as_decode(value):
    assert_same_answer(value)


# -- valid records: the fast path must take them -------------------------------------------------

_names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=100)
_emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=30),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=30),
    st.sampled_from(["com", "org", "io", "de", "COM"]),
)
_money = st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False, allow_infinity=False)


@st.composite
def valid_events(draw) -> dict:
    event_type = draw(st.sampled_from(sorted(EVENT_TYPE_NAMES)))
    entity_id = draw(st.integers(1, BIGINT_MAX))
    if DATA_KIND[event_type] == "user":
        data = {"id": entity_id, "email": draw(_emails), "name": draw(_names)}
        if draw(st.booleans()):
            data["is_active"] = draw(st.booleans())
    elif DATA_KIND[event_type] == "order":
        total = draw(_money)
        data = {"id": entity_id, "user_id": draw(st.integers(1, BIGINT_MAX)),
                "total": draw(st.sampled_from([str(total), float(total), int(total)])),
                "status": draw(st.sampled_from(STATUSES))}
    else:
        data = {"id": entity_id}
    return {"event_id": str(draw(st.uuids())), "event_type": event_type, "occurred_at": draw(_moments).isoformat(),
            "version": draw(st.integers(1, BIGINT_MAX)), "data": data}


@settings(max_examples=1000, deadline=None)
@given(valid_events(), st.sampled_from(["orjson", "json", "json-ascii", "pydantic"]))
def test_fast_path_takes_valid_events(event, encoding):
    if encoding == "orjson":
        value = orjson.dumps(event)
    elif encoding == "pydantic":  # what consumer.publisher sends: model_dump_json
        value = decode(orjson.dumps(event)).model_dump_json(by_alias=True).encode()
    else:
        value = json.dumps(event, ensure_ascii=encoding == "json-ascii", indent=None).encode()
    fast = _decode_msgspec(value)
    assert fast is not None, value
    assert_same_event(fast, decode(value))


@pytest.mark.parametrize("seed", [1, 7])
def test_fast_path_takes_every_generated_record(seed):
    """The workload of bench/ and the tests, encoded as bench/workload.py does: none may go to
    pydantic, or the fast path would be dead code without anyone noticing."""
    for event in Generator(seed).stream(3000, duplicates=0.05, older=0.05):
        value = orjson.dumps(event)
        fast = _decode_msgspec(value)
        assert fast is not None, value
        assert_same_event(fast, decode(value))
        assert decode_fast(value) == fast


# -- the contract and the edges, one by one ------------------------------------------------------


def test_none_is_a_tombstone():
    assert decode_fast(None) is TOMBSTONE


def test_structs_mirror_the_contract():
    assert {cls.event_type for cls in FAST_EVENT_TYPES} == EVENT_TYPE_NAMES
    for cls in FAST_EVENT_TYPES:
        model = getattr(events, cls.__name__)
        assert model.model_fields["event_type"].annotation.__args__ == (cls.event_type,)
        assert {*cls.__struct_fields__, "event_type"} == set(model.model_fields)
        data = {f.name: f.type for f in msgspec.structs.fields(cls)}["data"]
        assert data.__struct_fields__ == tuple(model.model_fields["data"].annotation.model_fields)


def user(data: str) -> bytes:
    return record("user.updated", {"data": data})


ACCEPTED = {
    "user": record("user.created", {}),
    "order": record("order.created", {}),
    "cancel": record("order.cancelled", {}),
    "offset": record("user.deleted", {"occurred_at": '"2026-01-02T05:04:05+02:00"'}),
    "negative offset": record("user.deleted", {"occurred_at": '"2026-01-01T22:04:05-05:00"'}),
    "no fraction": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05Z"'}),
    "one fraction digit": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.1Z"'}),
    "year 1 at UTC": record("user.deleted", {"occurred_at": '"0001-01-01T00:00:00Z"'}),
    "year 9999 at UTC": record("user.deleted", {"occurred_at": '"9999-12-31T23:59:59.999999Z"'}),
    "year 1, west of UTC": record("user.deleted", {"occurred_at": '"0001-01-01T00:00:00-01:00"'}),
    "float total": record("order.created", {"total": "18596.84"}),
    "integral float total": record("order.created", {"total": "100.0"}),
    "float total, one place": record("order.created", {"total": "1.1"}),
    "int total": record("order.created", {"total": "5"}),
    "zero": record("order.created", {"total": "0"}),
    "largest total": record("order.created", {"total": '"9999999999.99"'}),
    "largest float total": record("order.created", {"total": "9999999999.99"}),
    "string total": record("order.created", {"total": '"37361.78"'}),
    "uppercase domain": user('{"id": 7, "email": "Ada@Example.COM", "name": "Ada"}'),
    "astral name": user('{"id": 7, "email": "a@example.com", "name": "' + "\U0001f600" * 100 + '"}'),
    "escaped astral name": user('{"id": 7, "email": "a@example.com", "name": "\\ud83d\\ude00"}'),
    "duplicate key, the last wins": record("user.deleted", {"version": '1, "version": 2'}),
    "whitespace": b'\n{ "event_id" :"' + EVENT_ID.encode() + b'",\t"event_type":"user.deleted","occurred_at":"2026-01-02T03:04:05Z",'
    b'\r\n"version":1,"data":{ "id" : 7 } }\n',
    "event_type last": b'{"event_id":"' + EVENT_ID.encode() + b'","occurred_at":"2026-01-02T03:04:05Z","version":1,"data":{"id":7},'
    b'"event_type":"user.deleted"}',
    "uppercase uuid": record("user.deleted", {"event_id": json.dumps(EVENT_ID.upper())}),
    "uuid without hyphens": record("user.deleted", {"event_id": json.dumps(EVENT_ID.replace("-", ""))}),
    "largest ids": record("order.updated", {"id": str(BIGINT_MAX), "user_id": str(BIGINT_MAX), "version": str(BIGINT_MAX)}),
}


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_fast_path_takes(value):
    fast = _decode_msgspec(value)
    assert fast is not None
    assert_same_event(fast, decode(value))


# What the fast path leaves to pydantic because msgspec or fromisoformat would not read it as
# pydantic does, and what pydantic makes of it. (Many more in test_each_odd_value_alone.)
DECLINED = {
    # msgspec skips unknown values without checking them; pydantic parses them all
    "invalid UTF-8 in an extra field (poison)": record("user.deleted", {"version": '3, "extra": "BYTE"'}).replace(b"BYTE", b"\xff"),
    "nesting past pydantic's limit in an extra field (poison)": record("user.deleted", {"version": '3, "extra": ' + "[" * 300 + "]" * 300}),
    "integer too big for pydantic in an extra field (poison)": record("user.deleted", {"version": '3, "extra": ' + "9" * 5000}),
    "NaN in an extra field (accepted)": record("user.deleted", {"version": '3, "extra": NaN'}),
    "extra field (accepted)": record("user.deleted", {"version": '3, "source": "billing"'}),
    "extra data field (accepted)": record("user.deleted", {"data": '{"id": 7, "email": "not even an email"}'}),
    # two event types: pydantic takes the last one, msgspec refuses
    "two event types (accepted)": record("user.created", {"event_type": '"user.created", "event_type": "user.deleted"'}),
    "lone surrogate (poison)": user('{"id": 7, "email": "a@example.com", "name": "\\ud800"}'),
    # fromisoformat reads these, and not as speedate does
    "offset minutes 60 (poison)": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05+02:60"'}),
    "empty fraction (poison)": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.Z"'}),
    "space before Z (poison)": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.123456 Z"'}),
    "basic format (poison)": record("user.deleted", {"occurred_at": '"20260102T030405Z"'}),
    "offset with seconds (poison)": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05+02:00:30"'}),
    # speedate reads these, the fast path does not try
    "7 fraction digits (accepted)": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.9999999Z"'}),
    "lowercase t and z (accepted)": record("user.deleted", {"occurred_at": '"2026-01-02t03:04:05z"'}),
    "unix time (accepted)": record("user.deleted", {"occurred_at": "1767322800"}),
    "year 1 east of UTC (poison)": record("user.deleted", {"occurred_at": '"0001-01-01T00:00:00+14:00"'}),
    "year 9999 west of UTC (poison)": record("user.deleted", {"occurred_at": '"9999-12-31T23:59:59-14:00"'}),
    # totals: pydantic reads a float through its shortest repr, a string through decimal.Decimal
    "float total with binary noise (poison)": record("order.created", {"total": "0.30000000000000004"}),
    "float total with 3 places (poison)": record("order.created", {"total": "2.675"}),
    "string total with trailing zeros (accepted)": record("order.created", {"total": '"1.000"'}),
    "string total with a sign and spaces (accepted)": record("order.created", {"total": '" +5 "'}),
    "string total with an exponent (accepted)": record("order.created", {"total": '"1e2"'}),
    "not JSON (poison)": b"{not json",
    "not UTF-8 (poison)": b"\xff\xfe garbage",
    "not an object (poison)": b"[1, 2, 3]",
}


@pytest.mark.parametrize(("case", "value"), DECLINED.items(), ids=DECLINED.keys())
def test_fast_path_leaves_to_pydantic(case, value):
    assert _decode_msgspec(value) is None
    assert_same_answer(value)
    assert isinstance(decode(value), Poison) == case.endswith("(poison)")
