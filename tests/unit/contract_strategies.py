"""Hypothesis strategies and hand-picked odd values for the event contract (handlers.events):
records that are valid, nearly valid or adversarial, as the JSON bytes a producer would send.

Recovered from the deleted tests/unit/test_fast_decode.py (the msgspec decoder it tested is gone)
and adapted: the data kinds come from the pydantic models, and there are strategies for the extra
fields newer producers add, for whole event histories and for the JSON shapes only a serde-style
decoder might read differently from pydantic. Test modules import them from here; none copies them.

Conventions: a "text" is a JSON text (a str that goes verbatim into a record); `record()` builds a
valid record of an event type with some fields' JSON text replaced; INVALID_UTF8 inside a text
becomes raw invalid bytes once the record is encoded.
"""

import json
import random
import string
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
from hypothesis import strategies as st

from handlers import events
from handlers.events import BIGINT_MAX, EVENT_TYPE_NAMES, EVENT_TYPES

EVENT_ID = "3f1c2a9e-8f5b-4b0a-9a57-1a2b3c4d5e6f"
INVALID_UTF8 = "<<invalid utf-8>>"  # replaced by raw bytes once a record is encoded

# event type -> "user" | "order" | "ref": which data model it carries (derived from the models)
_KIND_OF_MODEL = {events.UserState: "user", events.OrderState: "order", events.EntityRef: "ref"}
DATA_KIND: dict[str, str] = {
    model.model_fields["event_type"].annotation.__args__[0]: _KIND_OF_MODEL[model.model_fields["data"].annotation]  # type: ignore[union-attr]
    for model in EVENT_TYPES
}
DATA_FIELDS: dict[str, list[str]] = {kind: list(model.model_fields) for model, kind in _KIND_OF_MODEL.items()}
assert set(DATA_KIND) == EVENT_TYPE_NAMES
STATUSES = list(events.OrderState.model_fields["status"].annotation.__args__)  # type: ignore[union-attr]


def encode(value: str) -> bytes:
    """A record's text as bytes: lone surrogates kept as written, INVALID_UTF8 made raw bytes."""
    return value.encode("utf-8", "surrogatepass").replace(INVALID_UTF8.encode(), b"\xff\xfe")


# -- odd values: the known-tricky ones, field by field -----------------------------------------

NOT_A_STRING = ["null", "true", "0", "1.5", "[]", "{}", '[""]']
ODD_INTS = ["0", "-0", "-1", str(BIGINT_MAX + 1), str(2**64), str(-(2**63)), "1" + "0" * 30, "1.0", "7.5", "1e2", "1E0", "0.0",
            "true", "false", "null", '"7"', "[]", "01", "+1", "1.", "NaN", "Infinity", str(BIGINT_MAX), "1", "-0.0", "1e0", "{}"]
ODD_UUIDS = [EVENT_ID.upper(), EVENT_ID.replace("-", ""), f"{{{EVENT_ID}}}", f"urn:uuid:{EVENT_ID}", EVENT_ID[:-1], EVENT_ID + "0",
             f" {EVENT_ID}", f"{EVENT_ID}\n", EVENT_ID.replace("-", "_"), EVENT_ID[:8] + EVENT_ID[9:], EVENT_ID.replace("a", "g"), "",
             "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff", EVENT_ID[:14] + "0" + EVENT_ID[15:],
             EVENT_ID[:19] + "c" + EVENT_ID[20:], EVENT_ID.replace("-", "-", 1)[:8] + "+" + EVENT_ID[9:]]
ODD_EVENT_TYPES = [json.dumps(t) for t in ["user.exploded", "User.Created", "user.created ", " user.created", "", "order.Created",
                                            "user.created\x00", "user"]] + ['"user.cr\\u0065ated"', '"\\u006frder.cancelled"', "5", "null"]
TIMESTAMP = {"date": "2026-01-02", "separator": "T", "clock": "03:04:05", "fraction": ".123456", "zone": "+02:00"}
ODD_TIMESTAMP_PARTS = {
    "date": ["20260102", "2026-1-02", "2026-W01-1", "2026-002", "0000-01-01", "2026-13-01", "2026-00-10", "2026-01-32",
             "2026-02-30", "2024-02-29", "2026-01-\u0663\u0661", "\u0662026-01-02", "+2026-01-02", "0001-01-01", "9999-12-31",
             "1900-02-29", "2000-02-29", "2100-02-29", "2026-04-31", "0002-01-01", "9998-12-31"],
    "separator": ["t", " ", "_", "x", "", "TT", "\u00e9"],
    "clock": ["03:04", "030405", "03", "3:04:05", "24:00:00", "23:60:00", "23:59:60", "23:59:59.", "03:04:05,5", "03:04:05:06",
              "\uff10\uff13:04:05", "00:00:00", "23:59:59"],
    "fraction": ["", ".", ",", ",5", ".1", ".12345", ".1234567", ".9999999", ".9999995", ".123456789012", ".\u0663", ". 5", ".5."],
    "zone": ["Z", "z", "", "+0200", "+02", "+02:00:30", "+02:00:00.5", "+24:00", "-24:00", "+23:59", "-23:59", "+14:00", "-14:00",
             "-00:00", "+00:00", "+05:60", "+05:99", "+5:00", " Z", "Z ", "+02:00Z", "UTC", "+\u0660\u0662:00"],
}
ODD_TIMESTAMPS = [json.dumps(t) for t in ["2026-01-02", "yesterday", "", "2026-01-02T03:04:05Z\n", "2026-01-02T03:04:05"]] + [
    "1767322800", "1767322800.5", "-1", "null", "true", "[]", '"1767322800"']
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
    "a@b.TEST", "a@b@example.com", "ada@example.com.", "a@b-.com", "a@b.-com", "a@b.1com", "a@" + "b" * 64 + ".com", "a@" + "b" * 63 + ".com",
]
ODD_NAMES = ["", "n", "n" * 100, "n" * 101, "\U0001f600" * 100, "\U0001f600" * 101, "\u00e9" * 100, "\u00e9" * 101, "\x00", "Ada\x00",
             "\x00Ada", " ", "\t\n", "\x7f", "\u2028", "\ufeff", "e\u0301" * 50, "e\u0301" * 51]
ESCAPED_NAMES = ['"\\ud800"', '"x\\udc00"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"', '"a\\u0000b"', '"\\u0041da"', '"a\\/b"', '"\\u00e9"',
                 '"' + "\\ud83d\\ude00" * 100 + '"', '"' + "\\ud83d\\ude00" * 101 + '"', '"a\\u0001b"', '"a\tb"', '"\\ud83d"']
ODD_TOTALS = [
    "1e2", "1E2", "1e-2", "1.5e1", "-0.0", "-0", "0", "0.0", "1.10", "0.30000000000000004", "0.1000000000000000000001", "1e400", "1e10",
    "2.675", "0.001", "-0.01", "-1", "9999999999.99", "9999999999.995", "9999999999.999999", "10000000000", "10000000000.0",
    "NaN", "Infinity", "-Infinity", "true", "null", "[]", '"5"', '"+5"', '" 5"', '"5 "', '"5."', '".5"', '"NaN"', '"Infinity"', '"1e2"',
    '"1_0"', '"\\u0661\\u0662"', '"0012.50"', '"1.000"', '"1.001"', '"-0"', '"-1"', '""', '"0x10"', '"1,5"', '"1.2.3"', '"5\\n"',
    '"\\uff15"', '"9999999999.99"', '"10000000000"', '"10000000000.00"', '"99999999999"', "5e-324", "0.07", "0.285", "9999999999.994",
    "9999999999", "9999999999.0", "12.50e0", "1250e-2", "0.10000000000000001", "0.1000000000000000055511151", "0.10000000000000002",
    "18446744073709551615", "18446744073709551616", '"0000000000.00"', '"00000000000"', '"12.500"', '"\\u0031\\u0032.5"', "-0e0",
    '"0000000000000001"', '"000000000000001.5"', "1.7976931348623157e308", "2.2250738585072014e-308",
]
ODD_STATUSES = [json.dumps(s) for s in ["PAID", "lost", "", "paid ", "cancelled\x00"]] + NOT_A_STRING + ['"p\\u0061id"']
ODD_IS_ACTIVE = ["null", "0", "1", '"true"', '"false"', "[]"]
ODD_DATA = ["null", "[]", '"x"', "5", "{}", "[7]", '[{"id": 7}]', '[7, "ada@example.com", "Ada"]']


def odd_values() -> list[tuple[str, str]]:
    """(field, JSON text) pairs: each goes into an otherwise valid record."""
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
    return encode("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}")


def event_type_for(field: str) -> list[str]:
    """The event types whose records have `field`."""
    if field in ("email", "name", "is_active"):
        return ["user.updated"]
    if field in ("total", "status", "user_id"):
        return ["order.created"]
    return ["user.created", "order.cancelled"]


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


ZONES = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
                         timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)), timezone(timedelta(hours=23, minutes=59)),
                         timezone(timedelta(hours=-23, minutes=-59)), timezone(timedelta(minutes=-1))])
moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES)


@st.composite
def timestamps(draw, odd: bool = False) -> str:
    """RFC 3339 as producers write it (Z or an offset, 0 to 6 fraction digits), or with one or two
    of its parts odd."""
    moment = draw(moments)
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
    form = draw(st.sampled_from(["float", "number", "string", "string", "exponent"]))
    if form == "float":
        return repr(float(value))
    if form == "exponent":
        return f"{value.scaleb(-3)}e3" if draw(st.booleans()) else f"{int(value.scaleb(places))}e-{places}"
    return json.dumps(str(value)) if form == "string" else str(value)


_local = st.text(string.ascii_letters + string.digits + "._+-!#'", min_size=1, max_size=20)
_domain = st.lists(st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12), min_size=1, max_size=3).map(".".join)
_email = st.builds(lambda local, domain, tld: f"{local}@{domain}.{tld}", _local, _domain, st.sampled_from(["com", "org", "io", "DE", "COM"]))
_valid_ints = (st.integers(1, 1000) | st.integers(1, BIGINT_MAX) | st.sampled_from([1, BIGINT_MAX])).map(str)

VALID: dict[str, st.SearchStrategy[str]] = {
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
ODD: dict[str, st.SearchStrategy[str]] = {
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

# JSON texts that pydantic and a serde decoder may read differently, in a field nobody reads
ODD_EXTRA_VALUES = [
    "[" * 300 + "]" * 300, "[" * 20 + "]" * 20, "[" * 126 + "]" * 126, "[" * 127 + "]" * 127, "[" * 150 + "]" * 150,
    '{"a":' * 130 + "1" + "}" * 130, "9" * 5000, "9" * 4300, "9" * 400, "1e400", "-1e400", "1e999", "1.8e308", "1e-999", "-0", "-0.0",
    "123456789012345678901234567890", "-123456789012345678901234567890", "0." + "0" * 400 + "1", "1." + "1" * 5000,
    "NaN", "-NaN", "Infinity", "-Infinity", "nan", "inf", "1e", "1.", ".5", "01", "+1", "0x10", '"\\ud800"', '"\\udc00"', '["\\ud800"]',
    '{"\\ud800": 1}', '"\\ud83d\\ude00"', '"\\ud83d"', f'"{INVALID_UTF8}"', '"a\\u0000"', '"a\\u0000b"', '"\\u00e9"', '"\x7f"', '"a\tb"',
    '"\\x41"', "'a'", "[1,]", "{,}", '{"a" 1}', "[1 2]", "tru", "nul", "True", "None", "undefined", "{}", "[]", '""', "null",
]
extra_values = mostly(json_values, st.sampled_from(ODD_EXTRA_VALUES))
extra_keys = st.sampled_from(["extra", "id", "event_type", "data", "version", "email", "total", "Version", "version ", "", "event_id",
                              "occurred_at", "user_id", "status", "name", "is_active", "\\u0069d", "\\u0076ersion", "trace_id"])
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


def _key_text(key: str) -> str:
    # extra_keys may hold a key already written with an escape ("\\u0069d"): keep it as written
    return f'"{key}"' if "\\u" in key else json.dumps(key)


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
        key_text = _key_text(key) if i != escaped or not key or "\\u" in key else '"' + "\\u%04x" % ord(key[0]) + key[1:] + '"'
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
    raw = encode(text)
    if "damaged byte" in odd:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.sampled_from([b"", b"\xff", b"\x00", b'"', b"\\", b"\xc3", b"}"])) + raw[at + 1 :]
    return raw


# -- valid events (as dicts) ---------------------------------------------------------------------

names = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=100)
emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=30),
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=30),
    st.sampled_from(["com", "org", "io", "de", "COM"]),
)
money = st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2, allow_nan=False, allow_infinity=False)


@st.composite
def valid_events(draw, event_type: str | None = None, entity_id: int | None = None) -> dict:
    event_type = event_type or draw(st.sampled_from(sorted(EVENT_TYPE_NAMES)))
    entity_id = entity_id if entity_id is not None else draw(st.integers(1, BIGINT_MAX))
    if DATA_KIND[event_type] == "user":
        data = {"id": entity_id, "email": draw(emails), "name": draw(names)}
        if draw(st.booleans()):
            data["is_active"] = draw(st.booleans())
    elif DATA_KIND[event_type] == "order":
        total = draw(money)
        data = {"id": entity_id, "user_id": draw(st.integers(1, BIGINT_MAX)),
                "total": draw(st.sampled_from([str(total), float(total), int(total)])),
                "status": draw(st.sampled_from(STATUSES))}
    else:
        data = {"id": entity_id}
    return {"event_id": str(draw(st.uuids())), "event_type": event_type, "occurred_at": draw(moments).isoformat(),
            "version": draw(st.integers(1, BIGINT_MAX)), "data": data}


ENCODINGS = ["orjson", "json", "json-ascii", "json-indent", "pydantic"]


def encode_event(event: dict, encoding: str = "orjson") -> bytes:
    """An event dict as a producer would write it."""
    if encoding == "orjson":
        return orjson.dumps(event)
    if encoding == "pydantic":  # what consumer.publisher sends: model_dump_json
        from handlers.decode import decode

        return decode(orjson.dumps(event)).model_dump_json(by_alias=True).encode()
    if encoding == "json-indent":
        return json.dumps(event, indent=2, ensure_ascii=False).encode()
    return json.dumps(event, ensure_ascii=encoding == "json-ascii").encode()


# -- the extra fields of a newer producer -----------------------------------------------------------
# The contract ignores unknown fields (extra="ignore"): a producer may add envelope fields
# (trace_id, schema_version, headers) and data fields (source, tags, nested objects).

_plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
ENVELOPE_EXTRAS = {
    "trace_id": st.uuids().map(lambda u: u.hex) | st.text(max_size=40),
    "schema_version": st.integers(1, 9) | st.sampled_from(["2", "2.1.0"]),
    "headers": st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    "source": st.sampled_from(["billing", "crm", ""]),
    "tags": st.lists(st.text(max_size=10), max_size=5),
    "producer": st.fixed_dictionaries({"name": st.text(max_size=10), "version": st.text(max_size=6)}),
    "correlation": _plain_json,
    "Version": _plain_json,  # not `version`: keys are case-sensitive
}
DATA_EXTRAS = {
    "source": st.sampled_from(["billing", "crm", "import", ""]),
    "tags": st.lists(st.text(max_size=10), max_size=5),
    "address": st.fixed_dictionaries({"city": st.text(max_size=10), "zip": st.text(string.digits, max_size=5)}),
    "attributes": _plain_json,
    "locale": st.sampled_from(["en", "de-DE", "fr_CA"]),
    "previous": st.fixed_dictionaries({"id": st.integers(-(2**63), 2**63 - 1), "version": st.integers(-(2**63), 2**63 - 1)}),  # nested id/version: not the real ones
}
# the keys of other event types' data, in a data object that does not have them
FOREIGN_DATA = {
    "user": {"user_id": st.integers(-(2**63), 2**63 - 1), "total": _plain_json, "status": _plain_json},
    "order": {"email": _plain_json, "name": _plain_json, "is_active": _plain_json},
    "ref": {"email": _plain_json, "name": _plain_json, "is_active": _plain_json, "user_id": _plain_json, "total": _plain_json,
            "status": _plain_json},
}


@st.composite
def with_extra_fields(draw, event: dict, min_extra: int = 1) -> dict:
    """The event with extra envelope and data fields a newer producer might add, at random places
    in key order."""
    kind = DATA_KIND[event["event_type"]]
    envelope_extra = draw(st.dictionaries(st.sampled_from(sorted(ENVELOPE_EXTRAS)), st.just(None), min_size=min_extra, max_size=4))
    data_pool = {**DATA_EXTRAS, **FOREIGN_DATA[kind]}
    data_extra = draw(st.dictionaries(st.sampled_from(sorted(data_pool)), st.just(None), min_size=min_extra, max_size=4))
    envelope = list(event.items()) + [(k, draw(ENVELOPE_EXTRAS[k])) for k in envelope_extra]
    data = list(event["data"].items()) + [(k, draw(data_pool[k])) for k in data_extra]
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    rng.shuffle(envelope)
    rng.shuffle(data)
    out = dict(envelope)
    out["data"] = dict(data)
    return out


# -- histories: many events about few entities ------------------------------------------------------

TRICKY_NAMES = ['Ada "The" \\ Count\n\u00e9', '"', "\\", '\\"', '""', "{", "}", "{}", ",", "a,b", "null", "NULL", "Null", " ", " padded ",
                "\t", "\r\n", "\x01\x1f\x7f", "\u2028\u2029", "\ufeff", "\U0001f600", "\u00e9" * 100, "\U0001f600" * 100, "'", "$1",
                "ARRAY[1]", "a}b{c", "\\n", "\\\\", "x\\", "\u0663\u0661", "\u00a0"]
TRICKY_EMAILS = ["o'brien+tag{x}|y@Example.COM", "a*b/c=d?e^f_g`h~i#j$k%l&m!n@example.org", "{}@b.io", "}@b.io", "ADA@EXAMPLE.COM",
                 "a.b.c@x-y.z9.de", "~@a.bc"]
OFFSETS = [timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8), timedelta(hours=14), timedelta(hours=-14),
           timedelta(hours=23, minutes=59), timedelta(hours=-23, minutes=-59), timedelta(minutes=-1)]


def reshape_timestamp(text: str, rng: random.Random) -> str:
    """The same instant (or one truncated to fewer fraction digits), at another offset."""
    moment = datetime.fromisoformat(text).astimezone(timezone(rng.choice(OFFSETS)))
    out = moment.isoformat(timespec=rng.choice(["auto", "seconds", "milliseconds", "microseconds"]))
    return out[:-6] + "Z" if out.endswith("+00:00") and rng.random() < 0.5 else out


def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def mutate(events_: list[dict], rng: random.Random, intensity: float) -> list[dict]:
    """Generated events (consumer.generate.Generator) with more of what makes a collapse
    interesting: extra deletes/cancels (after, before or stale), the same entity out of order,
    other offsets, tricky text, int totals, the largest versions."""
    out = [{**e, "data": dict(e["data"])} for e in events_]
    for _ in range(int(len(out) * intensity * 0.3) + rng.randint(0, 2)):
        target = rng.choice(out)
        kind = "user.deleted" if DATA_KIND[target["event_type"]] == "user" or target["event_type"] == "user.deleted" else "order.cancelled"
        ref = {"event_id": new_uuid(rng), "event_type": kind, "occurred_at": target["occurred_at"],
               "version": max(1, target["version"] + rng.randint(-2, 2)), "data": {"id": target["data"]["id"]}}
        out.insert(rng.randrange(len(out) + 1), ref)
    for _ in range(int(len(out) * intensity * 0.3)):
        i, j = rng.randrange(len(out)), rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    for event in out:
        if rng.random() < intensity * 0.5:
            event["occurred_at"] = reshape_timestamp(event["occurred_at"], rng)
        data = event["data"]
        if "name" in data and rng.random() < intensity * 0.3:
            data["name"] = rng.choice(TRICKY_NAMES)
        if "email" in data and rng.random() < intensity * 0.2:
            data["email"] = rng.choice(TRICKY_EMAILS)
        if "is_active" in data and rng.random() < intensity * 0.2:
            del data["is_active"]
        if "total" in data and rng.random() < intensity * 0.3:
            data["total"] = rng.choice([rng.randint(0, 10**6), 0, 9_999_999_999, "9999999999.99", 9999999999.99, "0012.50", "7", 0.07])
        if rng.random() < intensity * 0.05:
            event["version"] = rng.choice([BIGINT_MAX, BIGINT_MAX - 1])
    return out


# Records pydantic refuses (poison) or that are no event at all (None: a tombstone).
POISON_VALUES = [b"", b"\xff\xfe garbage", b"{not json", b"[1, 2, 3]", b"null", b'"user.created"',
                 record("user.created", {"version": "0"}), record("user.created", {"email": '"not-an-email"'}),
                 record("order.created", {"total": '"1.001"'}), record("user.deleted", {"id": '"7"'}),
                 record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05"'}), record("user.deleted", {"event_type": "\"user.exploded\""}),
                 record("user.deleted", {"version": '3, "x": "\\ud800"'}), record("order.cancelled", {"data": "[7]"}),
                 record("user.created", {"email": '"\\"ada lovelace\\"@example.com"'})]

# Valid events the native checks decline (pydantic accepts them): each record's value, keyed by
# what makes it so. Held to be valid by test_native.py.
DECLINED_VALID = {
    "non-ASCII email": record("user.updated", {"email": '"ada@b\\u00fccher.de"'}),
    "IDN email": record("user.created", {"email": '"ada@xn--bcher-kva.example"'}),
    "total with 3 places, trailing zero": record("order.updated", {"total": '"12.500"'}),
    "total with 4 places, trailing zeros": record("order.created", {"total": '"0.5000"'}),
    "total with a sign and spaces": record("order.created", {"total": '" +5 "'}),
    "total in exponent form, as a string": record("order.created", {"total": '"1e2"'}),
    "duplicate key": record("user.deleted", {"version": '1, "version": 2'}),
    "duplicate data key": record("order.cancelled", {"data": '{"id": 8, "id": 11}'}),
    "NaN in an extra field": record("order.created", {"version": '3, "score": NaN'}),
    "Infinity in an extra data field": record("user.updated", {"data": '{"id": 7, "email": "a@b.io", "name": "A", "x": -Infinity}'}),
    "1e999 in an extra field": record("user.created", {"version": '4, "x": 1e999'}),
    "deep nesting in an extra field": record("order.updated", {"version": '5, "x": ' + "[" * 150 + "]" * 150}),
    "7 fraction digits": record("user.deleted", {"occurred_at": '"2026-01-02T03:04:05.9999999Z"'}),
    "lowercase t and z": record("order.cancelled", {"occurred_at": '"2026-01-02t03:04:05z"'}),
    "unix time": record("user.updated", {"occurred_at": "1767322800"}),
    "uuid without hyphens": record("user.deleted", {"event_id": json.dumps(EVENT_ID.replace("-", ""))}),
    "urn uuid": record("order.created", {"event_id": json.dumps(f"urn:uuid:{EVENT_ID}")}),
    "year 1": record("user.deleted", {"occurred_at": '"0001-01-01T00:00:00Z"'}),
}
