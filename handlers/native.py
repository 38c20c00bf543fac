"""The native fast path: `ec_native`, a Rust extension built from native/ (scripts/bootstrap.sh).

For one batch part it decodes the record values, validates them, collapses them per entity and
writes the rows as binary COPY data, with the GIL released. It is generic: `describe()` derives
its descriptor at start-up from the projections and from pydantic's own compiled schema of each
event model (`__pydantic_core_schema__`), so a new field, event type or aggregate reaches it with
no Rust edit. A field whose schema uses anything outside the closed set of checks below makes its
event type Python-only (reported at start-up, each record counted as a fallback).

A value the native checks are not sure of is declined with a reason; pydantic (the authority)
decides that one record, and a valid event goes back into its slot (`PartBuilder.fill`): the part
stays native. tests/unit/test_native.py holds the native checks to pydantic.

Optional: without the extension the consumer runs the Python path (counted as a fallback)."""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import event
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Numeric, SmallInteger, String, Text
from sqlalchemy.schema import CreateTable

from handlers.aggregate import Aggregate, Prepared
from handlers.email import normalize_email
from handlers.events import _convertible_to_utc, _no_nul
from handlers.projection import DATA_FIELD, DISCRIMINATOR, ENTITY_ID, OCCURRED_AT, VERSION, Const, Data, Envelope, FirstOccurredAt, OnInsert

try:
    import ec_native
except ImportError as exc:  # not built: the Python path runs
    ec_native = None
    _IMPORT_ERROR: str | None = f"ec_native is not installed ({exc}); run scripts/bootstrap.sh with cargo on the PATH"
else:
    _IMPORT_ERROR = None

INT64 = (-(2**63), 2**63 - 1)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_PLACES = 4
# function-after validators of the contract that a native check covers
VALIDATORS: dict[Callable, str] = {_no_nul: "no_nul", normalize_email: "email", _convertible_to_utc: "utc"}


class Unsupported(Exception):
    """A schema the native checks do not cover: its event type takes the Python path."""


# -- the descriptor (pure) ---------------------------------------------------------------------


def _unwrap(schema: dict) -> tuple[dict, bool, Any, bool, set[str]]:
    """(base schema, required, default, nullable, validators) of a field's core schema."""
    required, default, nullable, validators = True, None, False, set()
    while True:
        kind = schema["type"]
        if kind == "default":
            if "default" not in schema or set(schema) - {"type", "default", "schema", "metadata", "validate_default"}:
                raise Unsupported("a default other than a constant")
            required, default, schema = False, schema["default"], schema["schema"]
        elif kind == "nullable":
            nullable, schema = True, schema["schema"]
        elif kind == "function-after" and schema["function"].get("type") == "no-info" and schema["function"]["function"] in VALIDATORS:
            validators.add(VALIDATORS[schema["function"]["function"]])
            schema = schema["schema"]
        else:
            return schema, required, default, nullable, validators


def _only(schema: dict, allowed: set[str]) -> None:
    extra = set(schema) - allowed - {"type", "metadata", "ref", "strict", "serialization"}
    if extra:
        raise Unsupported(f"{schema['type']} with {sorted(extra)}")


def _int_bounds(schema: dict) -> tuple[int, int]:
    low, high = INT64
    if "ge" in schema:
        low = max(low, schema["ge"])
    if "gt" in schema:
        low = max(low, schema["gt"] + 1)
    if "le" in schema:
        high = min(high, schema["le"])
    if "lt" in schema:
        high = min(high, schema["lt"] - 1)
    return low, high


def _integral(value: Any) -> int:
    if Decimal(value) != Decimal(value).to_integral_value():
        raise Unsupported(f"a non-integral decimal bound {value}")
    return int(value)


def _check(schema: dict, validators: set[str]) -> tuple:
    """The native check of a base core schema (see native/src/lib.rs `Check`)."""
    kind = schema["type"]
    if kind == "int":
        _only(schema, {"ge", "gt", "le", "lt"})
        return ("int", *_int_bounds(schema))
    if kind == "str":
        _only(schema, {"min_length", "max_length"})
        if "email" in validators:
            return ("email", schema.get("max_length", 254))
        return ("text", schema.get("min_length", 0), schema.get("max_length", 2**31), "no_nul" in validators)
    if kind == "bool":
        _only(schema, set())
        return ("bool",)
    if kind == "literal":
        if not all(isinstance(v, str) for v in schema["expected"]):
            raise Unsupported("a literal of non-strings")
        return ("enum", list(schema["expected"]))
    if kind == "decimal":
        # max_digits is not in the set: pydantic counts digits after normalizing, leading zeros of
        # a fraction included, in ways a plain count gets wrong both ways.
        _only(schema, {"ge", "le", "lt", "decimal_places", "allow_inf_nan"})
        if schema.get("allow_inf_nan"):
            raise Unsupported("decimal allowing inf/nan")
        places = min(schema.get("decimal_places", MAX_PLACES), MAX_PLACES)
        lower = _integral(schema["ge"]) if "ge" in schema else None
        if lower is not None and lower < 0:
            lower = None  # negatives are declined anyway
        upper, inclusive = (schema["le"], True) if "le" in schema else (schema.get("lt", 10**15), False)
        return ("decimal", places, None, lower, min(_integral(upper), 10**15), inclusive)
    if kind == "datetime":
        _only(schema, {"tz_constraint", "microseconds_precision"})
        if schema.get("tz_constraint") != "aware":
            raise Unsupported("a datetime that is not AwareDatetime")
        return ("timestamp",)
    if kind == "uuid":
        _only(schema, set())
        return ("uuid",)
    raise Unsupported(f"a {kind} field")


def _fields_of(model: type) -> tuple[dict, str]:
    schema = model.__pydantic_core_schema__
    if schema["type"] == "definitions":
        raise Unsupported("recursive or shared definitions")
    if schema["type"] != "model" or schema.get("custom_init") or schema.get("root_model") or schema.get("post_init"):
        raise Unsupported("a model with its own validation or init")
    inner = schema["schema"]
    if inner["type"] != "model-fields" or inner.get("computed_fields"):
        raise Unsupported("not a plain model")
    return inner["fields"], schema.get("config", {}).get("extra_fields_behavior", "ignore")


def _key(name: str, field: dict) -> str:
    alias = field.get("validation_alias", name)
    if not isinstance(alias, str):
        raise Unsupported("an alias path")
    return alias


def _type_spec(model: type, aggregate: Any, index: int, top_keys: list[str], nested_keys: list[str]) -> tuple[dict, list]:
    """One event type's descriptor entry, and the getters that turn its pydantic event into
    the values of `fill` (one per field, in the same order)."""
    fields, extra = _fields_of(model)
    event_type = None
    data_extra = "ignore"
    out: list[tuple] = []
    getters: list[Callable] = []
    names: dict[tuple[bool, str], int] = {}  # (nested, attribute name) -> slot
    for name, field in fields.items():
        key = _key(name, field)
        base = field["schema"]
        if name == DISCRIMINATOR:
            event_type = base["expected"][0]
            continue
        if name == DATA_FIELD:
            if base["type"] != "model":
                raise Unsupported(f"{DATA_FIELD} is not a model")
            data_fields, data_extra = _fields_of(base["cls"])
            for data_name, data_field in data_fields.items():
                _add_field(True, data_name, data_field, nested_keys, out, getters, names)
            continue
        if key in (DISCRIMINATOR, DATA_FIELD):
            raise Unsupported(f"{key} used as an alias")
        _add_field(False, name, field, top_keys, out, getters, names)
    if event_type is None or (False, VERSION.field) not in names or (False, OCCURRED_AT.field) not in names or (True, ENTITY_ID.field) not in names:
        raise Unsupported("an envelope without event_type, version, occurred_at or data.id")
    kind = "full" if event_type in aggregate.full_event_types else "patch"
    row = [_row_source(source, names, out) for source in aggregate.projection.sources(kind).values()]
    for slot in (names[(True, ENTITY_ID.field)], names[(False, VERSION.field)], names[(False, OCCURRED_AT.field)]):
        out[slot] = (*out[slot][:6], True)
    spec = {
        "name": event_type,
        "aggregate": index,
        "full": kind == "full",
        "forbid_extra": (extra == "forbid", data_extra == "forbid"),
        "fields": out,
        "id": names[(True, ENTITY_ID.field)],
        "version": names[(False, VERSION.field)],
        "occurred": names[(False, OCCURRED_AT.field)],
        "row": row,
    }
    return spec, getters


def _add_field(nested: bool, name: str, field: dict, keys: list[str], out: list, getters: list, names: dict) -> None:
    base, required, default, nullable, validators = _unwrap(field["schema"])
    check = _check(base, validators)
    key = _key(name, field)
    if key not in keys:
        keys.append(key)
    names[(nested, name)] = len(out)
    out.append((nested, keys.index(key), check, required, _native_value(check[0], default), nullable, False))
    convert = _CONVERT[check[0]]
    if nested:
        getters.append(lambda event, name=name, convert=convert: convert(getattr(event.data, name)))
    else:
        getters.append(lambda event, name=name, convert=convert: convert(getattr(event, name)))


def _row_source(source: Any, names: dict, out: list) -> tuple:
    inner = source.source if isinstance(source, OnInsert) else source
    if isinstance(inner, (Data, Envelope)):
        slot = names[(isinstance(inner, Data), inner.field)]
        out[slot] = (*out[slot][:6], True)  # stored: a row reads it
        return ("field", slot)
    if isinstance(inner, FirstOccurredAt):
        return ("first_occurred", None)
    if isinstance(inner, Const):
        return ("null", None) if inner.value_ is None else ("const", _const_value(inner.value_))
    raise Unsupported(f"source {source!r}")


def _micros(value: datetime) -> int:
    return (value - PG_EPOCH) // timedelta(microseconds=1)


def _numeric(value: Decimal) -> tuple[int, int]:
    sign, digits, exponent = value.as_tuple()
    if sign and any(digits):
        raise Unsupported("a negative decimal")
    unscaled = int("".join(map(str, digits)) or "0")
    if exponent >= 0:  # type: ignore[operator]
        return unscaled * 10**exponent, 0  # type: ignore[operator]
    return unscaled, -exponent  # type: ignore[operator]


def _nullable(convert: Callable) -> Callable:
    return lambda v: None if v is None else convert(v)


_CONVERT: dict[str, Callable] = {
    "int": _nullable(int),
    "bool": _nullable(bool),
    "text": _nullable(str),
    "email": _nullable(str),
    "enum": _nullable(str),
    "uuid": _nullable(str),
    "decimal": _nullable(_numeric),
    "timestamp": _nullable(_micros),
}


def _native_value(kind: str, value: Any) -> Any:
    return _CONVERT[kind](value)


def _const_value(value: Any) -> Any:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return _numeric(value)
    if isinstance(value, datetime):
        return _micros(value)
    raise Unsupported(f"a constant {value!r}")


def _pg_type(column: Any) -> str:
    type_ = column.type
    if isinstance(type_, (BigInteger, Integer, SmallInteger)):
        return "int8"  # the batch tables hold int8; the INSERT casts (handlers.sql._unbounded)
    if isinstance(type_, Boolean):
        return "bool"
    if isinstance(type_, Numeric):
        return "numeric"
    if isinstance(type_, DateTime):
        return "timestamptz"
    if isinstance(type_, (String, Text)):
        return "text"
    raise Unsupported(f"a {type_!r} column")


_COMPATIBLE = {"int": "int8", "bool": "bool", "decimal": "numeric", "timestamp": "timestamptz", "text": "text", "email": "text", "enum": "text", "uuid": "text"}


def _check_types(spec: dict, column_types: list[str], columns: Sequence[str]) -> None:
    for column, pg, (kind, arg) in zip(columns, column_types, spec["row"], strict=True):
        if kind == "field":
            check = spec["fields"][arg][2][0]
            if _COMPATIBLE[check] != pg:
                raise Unsupported(f"{spec['name']}: a {check} value for the {pg} column {column}")


class Description:
    """The descriptor of a contract, and how to hand pydantic's events to the native path."""

    def __init__(self, contract: Any) -> None:
        aggregates: list = []
        types: list = []
        self.getters: dict[str, list[Callable]] = {}
        self.unsupported: dict[str, str] = {}  # event type -> why it takes the Python path
        self.aggregates: list[Aggregate] = []
        top_keys: list[str] = []
        nested_keys: list[str] = []
        for aggregate in contract.aggregates:
            try:
                column_types = [_pg_type(c) for c in aggregate.table.columns]
            except Unsupported as exc:
                self.unsupported.update({t: str(exc) for t in aggregate.event_types})
                continue
            # An aggregate is native as a whole: its events collapse together.
            index, specs, getters_of = len(aggregates), [], {}
            try:
                for event_type, model in aggregate.projection.models.items():
                    try:
                        spec, getters = _type_spec(model, aggregate, index, top_keys, nested_keys)
                        _check_types(spec, column_types, aggregate.columns)
                    except (Unsupported, KeyError) as exc:
                        raise Unsupported(f"{event_type}: {type(exc).__name__}: {exc}") from None
                    specs.append(spec)
                    getters_of[event_type] = getters
            except Unsupported as exc:
                self.unsupported.update({t: str(exc) for t in aggregate.event_types})
                continue
            types += specs
            self.getters.update(getters_of)
            aggregates.append((aggregate.name, column_types))
            self.aggregates.append(aggregate)
        self.descriptor = {
            "discriminator": DISCRIMINATOR,
            "nested_key": DATA_FIELD,
            "top_keys": top_keys,
            "nested_keys": nested_keys,
            "types": types,
            "aggregates": aggregates,
        }

    def values(self, event: Any) -> list:
        """A pydantic event as the values of PartBuilder.fill."""
        return [get(event) for get in self.getters[event.event_type]]


# -- the native path ---------------------------------------------------------------------------


class NativePath:
    """The compiled contract; `part()` starts a batch part."""

    def __init__(self, contract: Any) -> None:
        self.description = Description(contract)
        self.compiled = ec_native.Contract(self.description.descriptor)

    def part(self) -> "NativePart":
        return NativePart(self)


def native_path(contract: Any) -> tuple[NativePath | None, str | None]:
    """The native path for this contract, or None and why not."""
    if ec_native is None:
        return None, _IMPORT_ERROR
    return NativePath(contract), None


class NativePart:
    """One batch part on the native path: add() each partition's values in turn, fill() what
    pydantic accepted among the declined, then finish()."""

    def __init__(self, path: NativePath) -> None:
        self._path = path
        self._builder = ec_native.PartBuilder(path.compiled)

    def add(self, values: list, topic: str) -> list[tuple[int, str]]:
        """Decodes one partition's values (offset order) into the next slots; returns (slot,
        reason) per value declined (slots count from the part's first value)."""
        return self._builder.add(values, topic)

    def fill(self, slot: int, event: Any) -> bool:
        """A declined slot's event as pydantic validated it; False if its event type is not on
        the native path (the caller prepares the part in Python)."""
        description = self._path.description
        if event.event_type not in description.getters:
            return False
        self._builder.fill(slot, event.event_type, description.values(event))
        return True

    def finish(self) -> list[tuple[Prepared, list]]:
        """Per aggregate with events: its prepared rows and the (topic, event_type) label of
        every event, in the order of the outcomes."""
        aggregates = self._path.description.aggregates
        parts = []
        for index, entities, entity_ids, full, patch, labels, outcomes in self._builder.finish():
            prepared = Prepared(
                aggregate=aggregates[index],
                events=(),
                entities=entities,
                entity_ids=entity_ids,
                full_rows=full,
                patch_rows=patch,
                native=outcomes,
                copied=True,
            )
            parts.append((prepared, labels))
        return parts


def install_batch_tables(engine: Any, aggregates: Sequence[Aggregate]) -> None:
    """Every pooled connection gets the aggregates' batch tables (temporary, emptied at every
    commit) the first time it is checked out, outside any transaction, so that no batch's rollback
    undoes them. The flag lives in the pool's per-connection `info`, for the connection's life."""
    ddl = [str(CreateTable(table, if_not_exists=True).compile(dialect=engine.dialect)) for a in aggregates for table in a.batch_tables]
    key = ("ec_batch_tables", tuple(a.name for a in aggregates))

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get(key):
            return
        for statement in ddl:
            dbapi_connection.run_async(lambda driver, statement=statement: driver.execute(statement))
        record.info[key] = True

    event.listen(engine.sync_engine, "checkout", on_checkout)
