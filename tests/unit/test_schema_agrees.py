"""The published JSON Schema accepts exactly what the consumer accepts.

Every value is judged twice: by `jsonschema` (Draft 2020-12, format checks on) against the checked-in
schemas/event.schema.json, as a producer would validate, and by handlers.decode.decode, as the consumer
reads it; the two verdicts must be the same. The only differences allowed are the gaps documented in
handlers/events.py (what JSON Schema cannot say), each excluded here by name and only where it is the
reason: see GAPS and `judge`.

The values: near-valid events from hypothesis (a valid event with one field pushed toward its edges)
and the poison corpus of tests/unit/test_decode.py and tests/integration/test_hostile.py, imported."""

import copy
import decimal
import itertools
import json
import math
import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, validators

from handlers.decode import Poison, decode
from handlers.events import BIGINT_MAX, EVENT_TYPES
from tests.unit import test_decode as decode_cases
from tests.unit import test_email as email_cases

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "event.schema.json"

# The documented gaps (handlers/events.py says each where it applies), each with the one way it may go:
# "schema" (the schema accepts what the consumer rejects), "consumer" (the reverse) or "either". A
# difference is excused only by one of these, and only where `judge` shows that it is the reason.
GAPS = {
    "integer_notation": ("schema", "JSON Schema's integer is any number with a zero fraction (7.0, 1e2); the consumer takes integer literals only"),
    "email_rules": ("either", "the consumer checks addresses with email-validator; the idn-email format is only close to it"),
    "number_notation": ("consumer", "a number in a string in exponent notation or with non-ASCII digits: read by the consumer, not by the pattern"),
    "double_rounding": ("consumer", "the consumer reads JSON numbers (and Unix time strings with a '.') as doubles, the schema their exact value"),
    "utc_range_edge": ("consumer", "on 0001-01-01 and 9999-12-31 the schema refuses every offset that could take the instant out of UTC's range"),
    "nesting_depth": ("schema", "the consumer's JSON parser refuses a value more than 200 levels below the root (RFC 8259 section 9 allows a limit)"),
    "long_integer_part": ("schema", "the consumer's JSON parser refuses a number with more than 4300 digits before its point (Python's int limit)"),
    "non_finite_literal": ("consumer", "the consumer's JSON parser takes NaN, Infinity and -Infinity (not JSON) in fields it ignores"),
    "unpaired_surrogate": ("schema", "the consumer's JSON parser refuses a \\ud800-style escape with no pair (RFC 8259 section 8.2: unpredictable)"),
}
PARSER_DEPTH_LIMIT = 200  # levels below the root: its fields are at level 1
PARSER_DIGITS_LIMIT = 4300  # digits before a number's point (or exponent)


# --- the two judges ---------------------------------------------------------------------------------


def _integer(checker: Any, instance: Any) -> bool:
    # As jsonschema does for floats: a number with a zero fraction is an integer (numbers are parsed as
    # Decimal here so that multipleOf and the bounds are judged exactly, as the schema means them).
    if isinstance(instance, Decimal):
        return instance.is_finite() and instance == instance.to_integral_value()
    return Draft202012Validator.TYPE_CHECKER.is_type(instance, "integer")


_Validator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _integer)
)
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"), parse_float=Decimal)
VALIDATOR = _Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
# Exact arithmetic for multipleOf; an infinite number (see _number) fails it instead of raising.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.DivisionByZero])

EMAIL_RULES = Draft202012Validator(SCHEMA["$defs"]["UserState"]["properties"]["email"])  # no format checks

NOT_JSON = object()  # not UTF-8, or not RFC 8259 JSON text (NaN and Infinity included)
TOO_DEEP = object()  # deeper than Python's own parser goes


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(text: str) -> Decimal:
    """A JSON number with a point or an exponent, exactly; one past 10^+-10000 (far past any double) as
    the infinity or zero a double makes of it."""
    number = Decimal(text) if re.search(r"[eE][-+]?0*[0-9]{1,4}$|^[^eE]*$", text) else Decimal(float(text))
    return number if number.is_zero() or abs(number.adjusted()) <= 10_000 else Decimal(float(text))


def parse(raw: bytes) -> Any:
    """The JSON instance a producer's validator would see, numbers exact."""
    try:
        return json.loads(raw.decode("utf-8"), parse_float=_number, parse_constant=_not_json)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return NOT_JSON
    except RecursionError:
        return TOO_DEEP


def _branches() -> dict[str, Any]:
    """event type -> a validator for its branch of the top-level oneOf. Each branch requires its own
    event_type constant, so an instance is valid against the oneOf exactly when it is against the
    branch its event_type names: the same verdict, a sixth of the work (the corpus test checks that)."""
    assert set(SCHEMA) == {"$defs", "$schema", "discriminator", "oneOf", "title"}, sorted(SCHEMA)
    branches = {}
    for ref in SCHEMA["oneOf"]:
        branch = SCHEMA["$defs"][ref["$ref"].removeprefix("#/$defs/")]
        event_type = branch["properties"]["event_type"]["const"]
        assert "event_type" in branch["required"] and event_type not in branches
        branches[event_type] = VALIDATOR.evolve(schema=branch)
    return branches


BRANCHES = _branches()


def schema_valid(instance: Any, whole: bool = False) -> bool:
    """The schema's verdict: against the whole document, or (the same, faster) the one branch."""
    if instance is NOT_JSON or instance is TOO_DEEP:
        return False
    with decimal.localcontext(_EXACT):
        if whole:
            return VALIDATOR.is_valid(instance)
        event_type = instance.get("event_type") if isinstance(instance, dict) else None
        return isinstance(event_type, str) and event_type in BRANCHES and BRANCHES[event_type].is_valid(instance)


def consumer_valid(raw: bytes) -> bool:
    return isinstance(decode(raw), EVENT_TYPES)


# --- JSON text with exact literals ------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document verbatim: a number literal exactly as written, or broken JSON."""

    text: str


def dumps(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {dumps(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return str(value)  # '7.0', '1E+2', '-0': each a JSON number
    return json.dumps(value)  # strings ASCII-escaped, so an unpaired surrogate becomes its \u escape


def encode(value: Any) -> bytes:
    return dumps(value).encode("utf-8")


# --- the verdicts, and the gaps that may excuse a difference ----------------------------------------

_MISSING = object()


def _get(instance: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(instance, dict) or key not in instance:
            return _MISSING
        instance = instance[key]
    return instance


def _replaced(instance: Any, path: tuple[str, ...], value: Any) -> Any:
    fixed = copy.deepcopy(instance)
    target = fixed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return fixed


def nesting_depth(instance: Any) -> int:
    """How many levels below the root the deepest value is (a scalar counts as a level)."""
    deepest, stack = 0, [(instance, 0)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def longest_integer_part(raw: bytes) -> int:
    """The most digits before the point (or exponent) of any number in the JSON text."""
    outside_strings = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw)
    return max((len(m[1]) for m in re.finditer(rb"(?<![0-9.eE+-])-?([0-9]+)", outside_strings)), default=0)


def _has_unpaired_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_unpaired_surrogate(k) or _has_unpaired_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_unpaired_surrogate(v) for v in value)
    return False


def _as_double(text_or_number: Any) -> float | None:
    try:
        number = float(text_or_number)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _plain(number: Decimal) -> str:
    return format(number, "f")


def _decimal(text: str) -> Decimal | None:
    """How Decimal() (so the consumer) reads a total given as a string."""
    try:
        number = Decimal(text)
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _field_readings(instance: Any) -> list[tuple[str, tuple[str, ...], Any]]:
    """(gap, path, the value as the consumer reads it) for each field the gaps concern."""
    readings = []
    for path in (("version",), ("data", "id"), ("data", "user_id")):
        value = _get(instance, path)
        if isinstance(value, Decimal) and _integer(None, value) and value.adjusted() < PARSER_DIGITS_LIMIT:
            readings.append(("integer_notation", path, int(value)))
    total = _get(instance, ("data", "total"))
    if isinstance(total, Decimal) and (double := _as_double(total)) is not None:
        readings.append(("double_rounding", ("data", "total"), Decimal(repr(double))))
    if isinstance(total, str) and (number := _decimal(total)) is not None:
        compact = "".join(ch for ch in total if not ch.isspace() and ch != "_")
        if "e" in compact.lower() or not compact.isascii():
            readings.append(("number_notation", ("data", "total"), _plain(number)))
    occurred = _get(instance, ("occurred_at",))
    if isinstance(occurred, Decimal) and (double := _as_double(occurred)) is not None:
        readings.append(("double_rounding", ("occurred_at",), Decimal(double)))
    if isinstance(occurred, str) and "." in occurred and occurred.isascii():
        if (double := _as_double(occurred)) is not None and not any(ch.isspace() or ch == "_" for ch in occurred):
            gap = "number_notation" if "e" in occurred.lower() else "double_rounding"
            readings.append((gap, ("occurred_at",), _plain(Decimal(double))))
    if isinstance(occurred, str) and occurred[:10] in ("0001-01-01", "9999-12-31"):
        offset = re.search(r"([-+\u2212])([0-9]{2}):?([0-9]{2})$", occurred)
        risky_sign = "+" if occurred.startswith("0001") else "-\u2212"
        if offset and offset[1] in risky_sign and offset[2] + offset[3] != "0000":  # the same time on another day
            readings.append(("utc_range_edge", ("occurred_at",), "2000-01-03" + occurred[10:]))
    return readings


def judge(raw: bytes) -> str | None:
    """None when the schema and the consumer agree on `raw`; else the documented gap that is the
    reason, and a failure when none is."""
    instance = parse(raw)
    schema, consumer = schema_valid(instance), consumer_valid(raw)
    if schema == consumer:
        return None
    gap = _reason(raw, instance, schema, consumer)
    if gap is not None and GAPS[gap][0] in ("either", "schema" if schema else "consumer"):
        return gap
    error = None if instance in (NOT_JSON, TOO_DEEP) else next(iter(VALIDATOR.iter_errors(instance)), None)
    pytest.fail(
        f"the schema {'accepts' if schema else 'rejects'} what the consumer {'accepts' if consumer else 'rejects'}"
        f"{f' (and {gap} does not go that way)' if gap else ''}:\n"
        f"  value:    {raw!r}\n  consumer: {decode(raw)!r}\n  schema:   {error.message if error else '(valid)'}"
    )


def _reason(raw: bytes, instance: Any, schema: bool, consumer: bool) -> str | None:
    result = decode(raw)
    if not consumer and (instance is TOO_DEEP or nesting_depth(instance) > PARSER_DEPTH_LIMIT):
        return "nesting_depth"
    if not consumer and longest_integer_part(raw) > PARSER_DIGITS_LIMIT:
        return "long_integer_part"
    if instance is NOT_JSON and consumer:
        try:  # the same document with each NaN/Infinity literal as a string: the schema must take it
            with_strings = json.loads(raw.decode("utf-8"), parse_float=_number, parse_constant=str)
        except ValueError:
            return None
        return "non_finite_literal" if schema_valid(with_strings) else None
    if instance is not TOO_DEEP and instance is not NOT_JSON:
        if isinstance(result, Poison) and result.error_type == "invalid_json" and _has_unpaired_surrogate(instance):
            return "unpaired_surrogate"
        # A gap about one field is the reason when the consumer reads the value the same once it is
        # spelled out plainly (for integer_notation: once it is an integer literal), and then the
        # schema agrees with it.
        for gap, path, reading in _field_readings(instance):
            fixed = encode(_replaced(instance, path, reading))
            fixed_consumer = consumer_valid(fixed)
            same_reading = fixed_consumer == consumer or gap == "integer_notation"
            if same_reading and schema_valid(parse(fixed)) == fixed_consumer:
                return gap
        # email_rules: the address alone makes the difference, and the schema's own rules for it
        # (type, length, pattern) take it: what is left is the format against email-validator.
        email = _get(instance, ("data", "email"))
        if isinstance(email, str) and EMAIL_RULES.is_valid(email):
            fixed = encode(_replaced(instance, ("data", "email"), "ada@example.com"))
            if schema_valid(parse(fixed)) == consumer_valid(fixed):
                return "email_rules"
    return None


def assert_agree(raw: bytes) -> None:
    judge(raw)


# --- strategies: a valid event with one field pushed toward its edges -------------------------------

SPACES = [chr(c) for c in range(0x3001) if chr(c).isspace()]  # U+3000 is the last
NEAR_SPACES = ["\u200b", "\ufeff", "\u180e", "\x00", "\x1b"]
OTHER_DIGITS = "".join(chr(c) for c in range(0x80, 0x20000) if unicodedata.category(chr(c)) == "Nd")


def events(event_types: list[str]) -> st.SearchStrategy[dict]:
    """test_decode's valid event of one of `event_types` (the mutation brings the variety)."""
    return st.sampled_from(event_types).map(decode_cases.envelope)


valid_events = events(sorted(decode_cases.CLASSES))
orders = events(["order.created", "order.updated"])
users = events(["user.created", "user.updated"])
FIELD_PATHS = [("event_id",), ("event_type",), ("occurred_at",), ("version",), ("data",), ("data", "id"),
               ("data", "user_id"), ("data", "total"), ("data", "status"), ("data", "email"), ("data", "name"),
               ("data", "is_active")]


def with_field(env: dict, path: tuple[str, ...], value: Any) -> bytes:
    if len(path) == 2 and not isinstance(env.get("data"), dict):
        env = env | {"data": {}}
    return encode(_replaced(env, path, value))


wholes = st.sampled_from(["0", "1", "9", "10", "99", "100", "999999999", "9999999999", "10000000000", "12345678901"]) | st.integers(
    0, 10**11
).map(str)
fractions = st.sampled_from([None, "0", "00", "000", "1", "01", "001", "10", "100", "5", "50", "99", "995", "999",
                             "0000000000000000001", "9999999999999"]) | st.text("0123456789", min_size=1, max_size=4)
exponents = st.sampled_from([None] * 8 + ["e0", "e1", "e2", "E+2", "e-1", "e-2", "E-02", "e-3", "e9", "e10", "e-400",
                                          "e400", "e308", "e309"])


@st.composite
def number_literals(draw) -> str:
    """JSON number literals: around 0 and 10^10, with 0 to many decimals, signs and exponents."""
    fraction, exponent = draw(fractions), draw(exponents)
    return (draw(st.sampled_from(["", "", "-"])) + draw(wholes) + (f".{fraction}" if fraction else "")
            + (exponent or ""))


@st.composite
def number_strings(draw) -> str:
    """A number as a string: number literals, plus what Decimal() or a parser might make of
    signs, points, commas, underscores, other digits and the space around."""
    fraction = draw(fractions | st.just(""))
    text = (draw(st.sampled_from(["", "", "", "-", "+", "+-", "--"]))
            + draw(wholes | st.sampled_from(["", "00", "007", "0000000000012"]))
            + ("" if fraction is None else draw(st.sampled_from([".", ".", ".", ","])) + fraction)
            + (draw(exponents) or ""))
    if draw(st.integers(0, 3)) == 0:
        for at in sorted(draw(st.lists(st.integers(0, len(text)), min_size=1, max_size=3)), reverse=True):
            text = text[:at] + draw(st.sampled_from(["_", "__", " "])) + text[at:]
    if draw(st.integers(0, 5)) == 0:  # Nd digits come in runs of ten, 0 to 9
        run = draw(st.integers(0, len(OTHER_DIGITS) // 10 - 1))
        text = "".join(OTHER_DIGITS[run * 10 + int(ch)] if ch in "0123456789" and draw(st.booleans()) else ch
                       for ch in text)
    pad = st.lists(st.sampled_from(SPACES + NEAR_SPACES), max_size=2).map("".join)
    if draw(st.integers(0, 2)) == 0:
        text = draw(pad) + text + draw(pad)
    if draw(st.integers(0, 5)) == 0:
        text = draw(st.sampled_from(["NaN", "nan", "Infinity", "-inf", "sNaN", "", " ", "_", ".", "twelve", "0x10",
                                     "1,000.00", "12,50", "1e", "1.2.3", "12.34\n", "\n12.34"]))
    return text


total_values = st.one_of(
    number_literals().map(Raw),
    number_strings(),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Raw(repr(f))),
    st.sampled_from([None, True, [], {}, 12]),
)

INT_EDGES = [0, 1, 2, -1, 7, BIGINT_MAX - 1, BIGINT_MAX, BIGINT_MAX + 1, 2**64, 10**30, -(2**63)]
integer_values = st.one_of(
    st.sampled_from(INT_EDGES),
    st.integers(min_value=-10, max_value=2**64),
    st.sampled_from(INT_EDGES).flatmap(
        lambda n: st.sampled_from([f"{n}.0", f"{n}.5", f"{n}e0", f"{n}E+0", f"{n}.00", f"{n}0e-1"]).map(Raw)
    ),
    st.sampled_from(["1e2", "1E2", "9.223372036854776e18", "9223372036854775807.0", "1e19", "-0", "-0.0", "0.1e1",
                     "1e-400", "1e400"]).map(Raw),
    st.sampled_from(INT_EDGES[:5]).map(str),
    st.sampled_from([True, False, None, [1], {}, ""]),
)

NAME_SPECIALS = ["\x00", "\x00", "é", "\U0001f600", " ", "\n", "\ud800", "\udc00", "\u200b", "\U0010ffff", "\x1f", "\u0301"]


@st.composite
def name_values(draw) -> Any:
    """Names of length 0, 1, 100, 101 and around, with a NUL, an astral character, a lone surrogate..."""
    length = draw(st.sampled_from([0, 1, 2, 99, 100, 101, 150]))
    name = "n" * length
    for _ in range(draw(st.integers(0, 2)) if length else 0):
        at = draw(st.integers(0, length - 1))
        name = name[:at] + draw(st.sampled_from(NAME_SPECIALS)) + name[at + 1:]
    return draw(st.just(name) | st.text(max_size=105) | st.sampled_from([None, 7, [], True]))


LONG_LOCAL = "a" * 64
email_values = st.one_of(
    decode_cases.emails,
    email_cases.addresses(),
    st.sampled_from([
        "a@", "@b.c", "no-at", "a@b", "a@localhost", "John Doe <jd@example.com>", "<jd@example.com>",
        " ada@example.com", "ada@example.com ", "ü@example.com", "a@bücher.de", '"a b"@example.com', "a@[127.0.0.1]",
        "a..b@example.com", "a@-b.com", "ada\x00@example.com", "ada@exa\x00mple.com", "x@xn--bcher-kva.example",
        "a@b.test", "ada@example.com\n", "", "@", "a@b@c.com",
        LONG_LOCAL + "@" + ".".join(["b" * 60] * 3) + ".com",  # 253 characters
        LONG_LOCAL + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com",  # 255
        LONG_LOCAL + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 59 + ".com",  # 256
        "Someone " + "x" * 200 + " <ada@example.com>",
    ]),
    st.text(max_size=30),
    st.sampled_from([None, 7, ["ada@example.com"]]),
)

DATES = st.sampled_from(["0001-01-01", "9999-12-31", "0000-01-01", "2024-02-29", "2026-02-29", "2000-02-29",
                         "1900-02-29", "2026-04-31", "2026-04-30", "2026-13-01", "2026-00-10", "2026-01-00", "2026-1-2",
                         "10000-01-01", "20260102"]) | st.dates().map(lambda d: d.isoformat())
OFFSETS = ["Z", "z", "", "+00:00", "-00:00", "+01:00", "-01:00", "+0100", "-0130", "+01", "\u221201:00", "\u22120100",
           "+14:00", "-14:00", "+23:59", "-23:59", "+24:00", "+02:60", "-00:01", "+00:01", "+00:00:00", " Z", "UTC",
           "Z\n", "\n"]


@st.composite
def iso_strings(draw) -> str:
    time = draw(st.sampled_from(["00", "03", "12", "23", "24", "3"])) + ":" + draw(st.sampled_from(["00", "04", "59", "60"]))
    second = draw(st.sampled_from([None, "00", "05", "59", "60", "5"]))
    if second is not None:
        time += ":" + second
        fraction = draw(st.sampled_from([None, None, "", "1", "123", "123456", "1234567", "9999999", "1234567890123"]))
        if fraction is not None:
            time += draw(st.sampled_from([".", ".", ","])) + fraction
    separator = draw(st.sampled_from(["T", "T", "t", " ", "_", "x", "", "TT"]))
    return draw(DATES) + separator + time + draw(st.sampled_from(OFFSETS))


# Unix time in milliseconds (as the consumer reads a number past 2e10) of 0001-01-01T00:00Z and of
# 10000-01-01T00:00Z; D_MIN and D_MAX are the first and the last double the consumer takes.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
UNIX_MS_MIN = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1)
UNIX_MS_END = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // timedelta(milliseconds=1) + 1
D_MIN, D_MAX = float(UNIX_MS_MIN), math.nextafter(float(UNIX_MS_END), 0)
UNIX_EDGES = [0.0, 1.0, -1.0, 2e10, -2e10, D_MIN, D_MAX, 1.7e9]


def _near(x: float) -> list[float]:
    below, above = math.nextafter(x, -math.inf), math.nextafter(x, math.inf)
    return [math.nextafter(below, -math.inf), below, x, above, math.nextafter(above, math.inf)]


unix_literals = st.one_of(
    st.sampled_from([0, 1, -1, 1_700_000_000, 20_000_000_000, -20_000_000_000, 20_000_000_001, UNIX_MS_MIN,
                     UNIX_MS_MIN - 1, UNIX_MS_END - 1, UNIX_MS_END, 10**20]).map(str),
    st.sampled_from(UNIX_EDGES).flatmap(lambda x: st.sampled_from(_near(x))).map(repr),
    st.sampled_from(UNIX_EDGES).flatmap(lambda x: st.sampled_from(_near(x))).map(lambda x: _plain(Decimal(x))),
    st.floats(min_value=-7e13, max_value=3e14, allow_nan=False).map(repr),
    st.sampled_from(["253402300799999.97", "253402300799999.98", "253402300799999.99", "-62135596800000.001",
                     "-62135596800000.004", "-62135596800000.0", "1e20", "1e-400", "1.9999999", "-0.0000005", "1.5e3",
                     "1.e3", "-0", "1e10", "-1e10"]),
)


@st.composite
def unix_strings(draw) -> str:
    text = draw(unix_literals)
    if text[:1].isdigit() or text[:1] == ".":
        text = draw(st.sampled_from(["", "", "+", "0000"])) + text
    return draw(st.sampled_from(["", "", "", " ", "\n"])).join(["", text] if draw(st.booleans()) else [text, ""])


occurred_values = st.one_of(
    iso_strings(),
    st.datetimes(timezones=decode_cases.TIMEZONES | st.none()).map(lambda d: d.isoformat()),
    unix_literals.map(Raw),
    unix_strings(),
    st.sampled_from(["", "yesterday", "2026-01-02", None, True, [], 12.5]),
)


@st.composite
def uuid_strings(draw) -> str:
    value = draw(st.uuids())
    text = draw(st.sampled_from([
        str(value), str(value).upper(), value.hex, value.hex.upper(), f"{{{value}}}", f"urn:uuid:{value}",
        f"URN:UUID:{value}", f"{{{value.hex}}}", f"urn:uuid:{value.hex}", f"{{{value}", str(value)[:-1], str(value) + "0",
        str(value)[:8] + str(value)[9:], str(value)[:9] + "-" + str(value)[9:], str(value).replace("-", "_"),
        str(value)[:35] + "g", str(value) + "\n", " " + str(value), value.hex[:16], value.hex + "0",
    ]))
    return draw(st.just(text) | st.sampled_from([None, 7, ""]))


event_types = st.sampled_from(sorted(decode_cases.CLASSES) + ["user.renamed", "order.refunded", "", "USER.CREATED",
                                                              "user.created ", "payment.created"]) | st.text(max_size=12)
statuses = st.sampled_from(["pending", "paid", "shipped", "delivered", "cancelled", "Paid", "", "lost", "paid ", None, 1])
flags = st.sampled_from([True, False, None, "true", "false", 1, 0, Raw("1.0"), [True]])


@st.composite
def nested(draw) -> Any:
    """A value nested around the consumer's parser limit."""
    depth = draw(st.sampled_from([1, 2, 3, 50, 198, 199, 200, 201, 202]))
    value: Any = draw(st.sampled_from([1, "x", [], {}, None]))
    kinds = draw(st.sampled_from(["[", "{", "[{"]))
    for level in range(depth):
        value = [value] if kinds[level % len(kinds)] == "[" else {"a": value}
    return value


long_numbers = st.tuples(st.sampled_from([1, 4299, 4300, 4301, 5000]), st.sampled_from(["", ".5", "e-4000", ".5e1", "e400"])).map(
    lambda shape: Raw("1" * shape[0] + shape[1])
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(orders, total_values)
def test_totals(env, total):
    assert_agree(with_field(env, ("data", "total"), total))


@FAST
@given(valid_events, st.sampled_from([("version",), ("data", "id"), ("data", "user_id")]), integer_values)
def test_ids_and_versions(env, path, value):
    assert_agree(with_field(env, path, value))


@FAST
@given(users, st.sampled_from([("data", "email"), ("data", "name")]), st.data())
def test_names_and_emails(env, path, data):
    value = data.draw(email_values if path[-1] == "email" else name_values())
    assert_agree(with_field(env, path, value))


@FAST
@given(valid_events, occurred_values)
def test_timestamps(env, value):
    assert_agree(with_field(env, ("occurred_at",), value))


@FAST
@given(valid_events, st.sampled_from(["event_id", "event_type", "status", "is_active"]), st.data())
def test_event_ids_types_statuses_and_flags(env, field, data):
    path, values = {
        "event_id": (("event_id",), uuid_strings()),
        "event_type": (("event_type",), event_types),
        "status": (("data", "status"), statuses),
        "is_active": (("data", "is_active"), flags),
    }[field]
    assert_agree(with_field(env, path, data.draw(values)))


@FAST
@given(valid_events, st.sampled_from(FIELD_PATHS), st.sampled_from(["missing", "extra", "nested", "replaced"]), st.data())
def test_missing_and_extra_fields(env, path, change, data):
    if change == "missing":
        value = copy.deepcopy(env)
        target = _get(value, path[:-1]) if len(path) == 2 else value
        if isinstance(target, dict):
            target.pop(path[-1], None)
        raw = encode(value)
    elif change == "extra":
        where = data.draw(st.sampled_from([(), ("data",)]))
        raw = with_field(env, (*where, data.draw(st.sampled_from(["extra", "ID", "Event_Type", "data2"]))),
                         data.draw(decode_cases.json_values))
    elif change == "nested":
        raw = with_field(env, data.draw(st.sampled_from([("padding",), ("data", "padding")])),
                         data.draw(nested() | long_numbers))
    else:
        raw = with_field(env, path, data.draw(decode_cases.json_values))
    assert_agree(raw)


# --- the poison corpus -------------------------------------------------------------------------------


def _parameters(test: Any) -> list[tuple]:
    """The argument tuples a parametrized test of test_decode.py runs with (the product of its marks)."""
    marks = [mark for mark in getattr(test, "pytestmark", []) if mark.name == "parametrize"]
    assert marks, f"{test.__name__} is no longer parametrized: update {__name__}"
    columns = []
    for mark in reversed(marks):
        names, values = mark.args[0], mark.args[1]
        many = "," in names if isinstance(names, str) else len(names) > 1
        columns.append([tuple(v) if many else (v,) for v in values])
    return [sum(combo, ()) for combo in itertools.product(*columns)]


def _order_with_total(raw: bytes, *_: Any) -> bytes:
    return decode_cases.encode(decode_cases.envelope("order.created")).replace(b'"12.34"', raw)


def _without(field: str) -> bytes:
    env = decode_cases.envelope()
    del env[field]
    return decode_cases.encode(env)


def _lone_surrogate(name: str) -> bytes:
    return decode_cases.with_data("user.created", name="PLACEHOLDER").replace(b"PLACEHOLDER", name.encode())


c = decode_cases
DECODE_CASES = {  # test of test_decode.py -> how it builds a record from its parameters
    "test_every_order_status_is_accepted": lambda s: c.with_data("order.created", status=s),
    "test_is_active_must_be_a_json_boolean": lambda v: c.with_data("user.created", is_active=v),
    "test_not_utf8": lambda v: v,
    "test_invalid_json": lambda v: v,
    "test_not_object": lambda v, _: v,
    "test_unknown_event_type": lambda t: c.encode(c.envelope() | {"event_type": t}),
    "test_non_string_event_type_is_a_validation_error": lambda t: c.encode(c.envelope() | {"event_type": t}),
    "test_missing_envelope_field": _without,
    "test_missing_user_field": lambda f: c.without_data_field("user.updated", f),
    "test_missing_order_field": lambda f: c.without_data_field("order.updated", f),
    "test_total_as_json_number_and_as_string": _order_with_total,
    "test_bad_totals_are_rejected": _order_with_total,
    "test_non_finite_json_number_literals_are_rejected": _order_with_total,
    "test_out_of_range_ids_are_rejected": lambda f, v: c.with_data("order.created", **{f: v}),
    "test_out_of_range_entity_id_rejected_for_every_type": lambda t, v: c.with_data(t, id=v),
    "test_id_bounds_are_accepted": lambda v: c.with_data("user.created", id=v),
    "test_ids_must_be_json_integers": lambda v: c.with_data("user.created", id=v),
    "test_bad_versions_are_rejected": lambda v: c.encode(c.envelope(version=v)),
    "test_naive_occurred_at_is_rejected": lambda v: c.encode(c.envelope(occurred_at=v)),
    "test_garbage_occurred_at_is_rejected": lambda v: c.encode(c.envelope(occurred_at=v)),
    "test_aware_occurred_at_keeps_the_instant": lambda v, _: c.encode(c.envelope(occurred_at=v)),
    "test_occurred_at_must_be_convertible_to_utc": lambda v: c.encode(c.envelope("user.deleted", occurred_at=v)),
    "test_invalid_emails_are_rejected": lambda e: c.with_data("user.created", email=e),
    "test_name_length_out_of_bounds_is_rejected": lambda n: c.with_data("user.created", name="n" * n),
    "test_name_length_bounds_are_accepted": lambda n: c.with_data("user.created", name=n),
    "test_nul_character_in_name_is_rejected": lambda n: c.with_data("user.updated", name=n),
    "test_lone_surrogate_escapes_are_rejected": _lone_surrogate,
}


def decode_corpus() -> list[bytes]:
    records = []
    for name, build in DECODE_CASES.items():
        records += [build(*args) for args in _parameters(getattr(decode_cases, name))]
    return records


def hostile_corpus() -> list[bytes]:
    from tests.integration.test_hostile import _fuzz_corpus

    return _fuzz_corpus(1500, random.Random(20260101))


def test_the_poison_corpus():
    corpus = decode_corpus() + hostile_corpus()
    verdicts = [consumer_valid(raw) for raw in corpus]
    assert sum(verdicts) > 300 and len(verdicts) - sum(verdicts) > 300, "the corpus has both kinds"
    for i, raw in enumerate(corpus):
        assert_agree(raw)
        if i % 4 == 0:  # the whole document gives the verdict its one branch gives
            assert schema_valid(parse(raw), whole=True) == schema_valid(parse(raw)), raw


# --- the gaps, each shown where it applies ----------------------------------------------------------


def _order(**data: Any) -> bytes:
    env = c.envelope("order.created")
    env["data"].update(data)
    return encode(env)


def _event(**fields: Any) -> bytes:
    return encode(c.envelope("user.deleted") | fields)


GAP_EXAMPLES = [
    ("integer_notation", _event(version=Raw("3.0"))),
    ("integer_notation", _order(user_id=Raw("1e2"))),
    ("email_rules", c.with_data("user.created", email="a@localhost")),
    ("email_rules", c.with_data("user.created", email="a..b@example.com")),
    ("number_notation", _order(total="1.5e1")),
    ("number_notation", _order(total="\uff11\uff12.\uff13\uff14")),
    ("number_notation", _event(occurred_at="1.7e9")),
    ("double_rounding", _order(total=Raw("0.0100000000000000001"))),
    ("double_rounding", _event(occurred_at=Raw("253402300799999.98"))),
    ("double_rounding", _event(occurred_at="-62135596800000.001")),
    ("utc_range_edge", _event(occurred_at="0001-01-01T12:00:00+01:00")),
    ("utc_range_edge", _event(occurred_at="9999-12-31T01:00:00-01:00")),
    ("nesting_depth", _event(padding=Raw("[" * 201 + "]" * 201))),  # its innermost array 201 levels down
    ("long_integer_part", _event(padding=Raw("1" * 4301 + ".5"))),
    ("long_integer_part", _event(padding=Raw("1" * 4301 + "e-4000"))),
    ("non_finite_literal", _event(padding=Raw("[NaN, -Infinity]"))),
    ("unpaired_surrogate", _event(padding=Raw('"\\ud800"'))),
]


@pytest.mark.parametrize(("gap", "raw"), GAP_EXAMPLES)
def test_each_gap_is_where_it_is_documented(gap, raw):
    assert judge(raw) == gap


def test_every_gap_has_an_example():
    assert {gap for gap, _ in GAP_EXAMPLES} == set(GAPS)


def test_the_gaps_are_narrow():
    """Next to each gap, what the schema does say."""
    assert judge(_event(version=Raw("3"))) is None
    assert judge(_order(total=Raw("NaN"))) is None and judge(_event(version=Raw("Infinity"))) is None  # both refuse
    assert judge(_event(padding=Raw("[" * 200 + "]" * 200))) is None  # 200 levels down: both accept
    assert judge(_event(padding=Raw("[" * 199 + "1" + "]" * 199))) is None
    assert judge(_event(padding=Raw("1" * 4300 + ".5"))) is None and judge(_event(padding=Raw("0." + "1" * 9000))) is None
    assert judge(_event(padding=Raw("1.5e99999999999999999999"))) is None  # past Decimal's exponents too
    assert judge(_event(padding=Raw('"\\ud83d\\ude00"'))) is None  # a surrogate pair: both accept
    for good in ("0001-01-01T12:00:00Z", "0001-01-01T12:00:00-01:00", "9999-12-31T01:00:00+01:00", "1.5", "253402300799999.97"):
        assert judge(_event(occurred_at=good)) is None and consumer_valid(_event(occurred_at=good)), good
    for total in ("1_000.00", " 12.30 ", "+.5", "-0.00", "12.340000", "0012"):
        assert judge(_order(total=total)) is None and consumer_valid(_order(total=total)), total
    for total in ("-1.00", "1.005", "10000000000", "12,50", "-0.01", "9999999999.995", "1.000000000000000000000000000001"):
        assert not schema_valid(parse(_order(total=total))) and not consumer_valid(_order(total=total)), total
    for email in ("ada\x00@example.com", "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 59 + ".com"):
        raw = c.with_data("user.created", email=email)  # a NUL, 256 characters: the schema says so itself
        assert not EMAIL_RULES.is_valid(email) and judge(raw) is None and not consumer_valid(raw), email


def test_format_checks_are_on():
    """Each format the schema uses is really checked (some need an optional package)."""
    checker = Draft202012Validator.FORMAT_CHECKER
    for value, format_ in [("2026-02-30T00:00:00Z", "date-time"), ("3f1c2a9e8f5b4b0a9a571a2b3c4d5e6f", "uuid"),
                           ("no-at", "idn-email")]:
        assert format_ in checker.checkers and not checker.conforms(value, format_), format_
    Draft202012Validator.check_schema(SCHEMA)
