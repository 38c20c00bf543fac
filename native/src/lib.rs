//! event-consumer's native fast path: one batch part's record values -> decoded, validated and
//! collapsed per entity -> binary COPY rows, with the GIL released while it works.
//!
//! It knows no event type, field, column or aggregate by name: `Contract` is built at start-up
//! from a descriptor that `handlers/native.py` derives from the pydantic models and the
//! projections (`handlers/contract.py`). The checks are a small closed set (`Check`); whatever a
//! check is not sure of, it declines with a reason, and the caller asks pydantic (the authority)
//! about that one record: a valid event goes back into its slot (`PartBuilder.fill`), so the part
//! stays on this path. What it accepts, pydantic accepts with equal values:
//! `tests/unit/test_native.py`.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

// -- the descriptor ------------------------------------------------------------------------------

/// Why a record was declined: the index is what `decline` returns, the name is its metric label.
const REASONS: [&str; 15] = [
    "not_bytes",
    "utf8",
    "json",
    "duplicate_key",
    "event_type",
    "missing",
    "null",
    "extra_forbidden",
    "int",
    "text",
    "email",
    "bool",
    "enum",
    "decimal",
    "timestamp",
];
const R_NOT_BYTES: u8 = 0;
const R_UTF8: u8 = 1;
const R_JSON: u8 = 2;
const R_DUPLICATE: u8 = 3;
const R_EVENT_TYPE: u8 = 4;
const R_MISSING: u8 = 5;
const R_NULL: u8 = 6;
const R_EXTRA: u8 = 7;
const R_INT: u8 = 8;
const R_TEXT: u8 = 9;
const R_EMAIL: u8 = 10;
const R_BOOL: u8 = 11;
const R_ENUM: u8 = 12;
const R_DECIMAL: u8 = 13;
const R_TIMESTAMP: u8 = 14;
const R_UUID: u8 = 9; // a uuid is text of a fixed shape

#[derive(Clone, Debug)]
enum Check {
    Int { min: i64, max: i64 },
    Text { min: usize, max: usize, no_nul: bool },
    Email { max: usize },
    Bool,
    Enum(Vec<String>),
    /// places <= 4; lower/upper bounds are integers; no lower bound still declines negatives
    Decimal { places: u16, max_digits: Option<u32>, lower: Option<u64>, upper: u64, upper_inclusive: bool },
    Timestamp,
    Uuid,
}

/// A validated value, typed as its column's binary COPY form needs it.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Num(u128, u16), // unscaled, scale
    Ts(i64),       // microseconds since 2000-01-01T00:00:00Z
}

#[derive(Clone, Copy, Debug)]
enum PgType {
    Int8,
    Text,
    Bool,
    Numeric,
    Timestamptz,
}

struct Field {
    nested: bool, // inside the nested object (`data`), else in the envelope
    key: usize,   // index into Spec.top_keys or Spec.nested_keys
    check: Check,
    required: bool,
    default: Val,
    nullable: bool,
    stored: bool, // a row or the collapse reads it (else only validated)
}

enum Source {
    Field(usize),
    FirstOccurred,
    Const(Val),
    Null,
}

struct EventType {
    name: String,
    aggregate: usize,
    full: bool,
    forbid_top: bool,
    forbid_nested: bool,
    fields: Vec<Field>,
    id: usize,
    version: usize,
    occurred: usize,
    row: Vec<Source>, // one per column of its aggregate
}

struct Spec {
    discriminator: String,
    nested_key: String,
    top_keys: Vec<String>,
    nested_keys: Vec<String>,
    types: Vec<EventType>,
    aggregates: Vec<(String, Vec<PgType>)>,
}

impl Spec {
    fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }
}

fn bad(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

fn get<'py, T: FromPyObject<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    d.get_item(key)?.ok_or_else(|| bad(format!("descriptor: missing {key:?}")))?.extract()
}

fn check_from(t: &Bound<'_, PyTuple>) -> PyResult<Check> {
    let kind: String = t.get_item(0)?.extract()?;
    Ok(match kind.as_str() {
        "int" => Check::Int { min: t.get_item(1)?.extract()?, max: t.get_item(2)?.extract()? },
        "text" => Check::Text { min: t.get_item(1)?.extract()?, max: t.get_item(2)?.extract()?, no_nul: t.get_item(3)?.extract()? },
        "email" => Check::Email { max: t.get_item(1)?.extract()? },
        "bool" => Check::Bool,
        "enum" => Check::Enum(t.get_item(1)?.extract()?),
        "decimal" => {
            let places: u16 = t.get_item(1)?.extract()?;
            if places > 4 {
                return Err(bad("descriptor: decimal places above 4"));
            }
            Check::Decimal {
                places,
                max_digits: t.get_item(2)?.extract()?,
                lower: t.get_item(3)?.extract()?,
                upper: t.get_item(4)?.extract()?,
                upper_inclusive: t.get_item(5)?.extract()?,
            }
        }
        "timestamp" => Check::Timestamp,
        "uuid" => Check::Uuid,
        other => return Err(bad(format!("descriptor: unknown check {other:?}"))),
    })
}

/// A Python value as the Val a check produces (defaults, constants, `fill`).
fn val_for_check(check: &Check, v: &Bound<'_, PyAny>) -> PyResult<Val> {
    if v.is_none() {
        return Ok(Val::Null);
    }
    Ok(match check {
        Check::Int { .. } => Val::Int(v.extract()?),
        Check::Bool => Val::Bool(v.extract()?),
        Check::Text { .. } | Check::Email { .. } | Check::Enum(_) | Check::Uuid => Val::Text(v.extract()?),
        Check::Decimal { .. } => {
            let (unscaled, scale): (u128, u16) = v.extract()?;
            Val::Num(unscaled, scale)
        }
        Check::Timestamp => Val::Ts(v.extract()?),
    })
}

fn val_for_type(t: PgType, v: &Bound<'_, PyAny>) -> PyResult<Val> {
    if v.is_none() {
        return Ok(Val::Null);
    }
    Ok(match t {
        PgType::Int8 => Val::Int(v.extract()?),
        PgType::Bool => Val::Bool(v.extract()?),
        PgType::Text => Val::Text(v.extract()?),
        PgType::Numeric => {
            let (unscaled, scale): (u128, u16) = v.extract()?;
            Val::Num(unscaled, scale)
        }
        PgType::Timestamptz => Val::Ts(v.extract()?),
    })
}

fn spec_from(d: &Bound<'_, PyDict>) -> PyResult<Spec> {
    let mut aggregates = Vec::new();
    for item in get::<Bound<PyList>>(d, "aggregates")?.iter() {
        let (name, types): (String, Vec<String>) = item.extract()?;
        let types = types
            .iter()
            .map(|t| match t.as_str() {
                "int8" => Ok(PgType::Int8),
                "text" => Ok(PgType::Text),
                "bool" => Ok(PgType::Bool),
                "numeric" => Ok(PgType::Numeric),
                "timestamptz" => Ok(PgType::Timestamptz),
                other => Err(bad(format!("descriptor: unknown column type {other:?}"))),
            })
            .collect::<PyResult<Vec<_>>>()?;
        aggregates.push((name, types));
    }
    let top_keys: Vec<String> = get(d, "top_keys")?;
    let nested_keys: Vec<String> = get(d, "nested_keys")?;
    let mut types = Vec::new();
    for item in get::<Bound<PyList>>(d, "types")?.iter() {
        let t = item.downcast::<PyDict>()?;
        let aggregate: usize = get(t, "aggregate")?;
        let columns = &aggregates.get(aggregate).ok_or_else(|| bad("descriptor: no such aggregate"))?.1;
        let mut fields = Vec::new();
        for f in get::<Bound<PyList>>(t, "fields")?.iter() {
            let f = f.downcast::<PyTuple>()?;
            let nested: bool = f.get_item(0)?.extract()?;
            let key: usize = f.get_item(1)?.extract()?;
            if key >= if nested { nested_keys.len() } else { top_keys.len() } {
                return Err(bad("descriptor: field key out of range"));
            }
            let check = check_from(f.get_item(2)?.downcast::<PyTuple>()?)?;
            let default = val_for_check(&check, &f.get_item(4)?)?;
            fields.push(Field {
                nested,
                key,
                check,
                required: f.get_item(3)?.extract()?,
                default,
                nullable: f.get_item(5)?.extract()?,
                stored: f.get_item(6)?.extract()?,
            });
        }
        let mut row = Vec::new();
        for (i, s) in get::<Bound<PyList>>(t, "row")?.iter().enumerate() {
            let s = s.downcast::<PyTuple>()?;
            let kind: String = s.get_item(0)?.extract()?;
            let pg = *columns.get(i).ok_or_else(|| bad("descriptor: more sources than columns"))?;
            row.push(match kind.as_str() {
                "field" => {
                    let slot: usize = s.get_item(1)?.extract()?;
                    if slot >= fields.len() || !fields[slot].stored {
                        return Err(bad("descriptor: row source is not a stored field"));
                    }
                    Source::Field(slot)
                }
                "first_occurred" => Source::FirstOccurred,
                "const" => Source::Const(val_for_type(pg, &s.get_item(1)?)?),
                "null" => Source::Null,
                other => return Err(bad(format!("descriptor: unknown source {other:?}"))),
            });
        }
        if row.len() != columns.len() {
            return Err(bad("descriptor: a row needs one source per column"));
        }
        let (forbid_top, forbid_nested): (bool, bool) = get(t, "forbid_extra")?;
        let event_type = EventType {
            name: get(t, "name")?,
            aggregate,
            full: get(t, "full")?,
            forbid_top,
            forbid_nested,
            id: get(t, "id")?,
            version: get(t, "version")?,
            occurred: get(t, "occurred")?,
            fields,
            row,
        };
        for (slot, want) in [(event_type.id, "id"), (event_type.version, "version"), (event_type.occurred, "occurred")] {
            let ok = match event_type.fields.get(slot) {
                Some(f) => f.stored && if want == "occurred" { matches!(f.check, Check::Timestamp) } else { matches!(f.check, Check::Int { .. }) },
                None => false,
            };
            if !ok || event_type.fields[slot].nullable || !event_type.fields[slot].required {
                return Err(bad(format!("descriptor: {} needs a required stored {want} field", event_type.name)));
            }
        }
        types.push(event_type);
    }
    Ok(Spec { discriminator: get(d, "discriminator")?, nested_key: get(d, "nested_key")?, top_keys, nested_keys, types, aggregates })
}

// -- JSON: one pass, keys looked up in the descriptor's key lists ---------------------------------

/// A scalar as the JSON had it; objects and arrays are `Other` (skipped, strings in them checked).
enum Raw<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'a, str>),
    Other,
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Raw::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Raw::Other)
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// Any JSON value, dropped. Unlike serde's IgnoredAny it reads strings as strings, so a lone
/// surrogate escape in a field nobody reads is refused here as pydantic refuses it.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(RawVisitor).map(|_| Skip)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawSeed.deserialize(d)? {
            Raw::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("key is not a string")),
        }
    }
}

/// What one record's object held: the known keys' values, in the descriptor's key order.
struct Parsed<'a> {
    event_type: Option<Cow<'a, str>>,
    top: Vec<Option<Raw<'a>>>,
    nested: Vec<Option<Raw<'a>>>,
    nested_seen: bool,
    nested_is_object: bool,
    unknown_top: bool,
    unknown_nested: bool,
    duplicate: bool,
}

struct TopSeed<'s>(&'s Spec);

impl<'de, 's> DeserializeSeed<'de> for TopSeed<'s> {
    type Value = Parsed<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Parsed<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for TopSeed<'s> {
    type Value = Parsed<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let spec = self.0;
        let mut p = Parsed {
            event_type: None,
            top: (0..spec.top_keys.len()).map(|_| None).collect(),
            nested: (0..spec.nested_keys.len()).map(|_| None).collect(),
            nested_seen: false,
            nested_is_object: false,
            unknown_top: false,
            unknown_nested: false,
            duplicate: false,
        };
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if key == spec.discriminator {
                let raw = map.next_value_seed(RawSeed)?;
                p.duplicate |= p.event_type.is_some();
                p.event_type = Some(match raw {
                    Raw::Str(s) => s,
                    _ => Cow::Borrowed(""), // not a string: no event type has that name
                });
            } else if key == spec.nested_key {
                p.duplicate |= p.nested_seen;
                p.nested_seen = true;
                p.nested_is_object = map.next_value_seed(NestedSeed(spec, &mut p.nested, &mut p.unknown_nested, &mut p.duplicate))?;
            } else if let Some(i) = spec.top_keys.iter().position(|k| *k == key) {
                let raw = map.next_value_seed(RawSeed)?;
                p.duplicate |= p.top[i].is_some();
                p.top[i] = Some(raw);
            } else {
                p.unknown_top = true;
                map.next_value::<Skip>()?;
            }
        }
        Ok(p)
    }
}

/// The nested object's known keys into `out`; Ok(false) when the value is not an object.
struct NestedSeed<'s, 'p, 'a>(&'s Spec, &'p mut Vec<Option<Raw<'a>>>, &'p mut bool, &'p mut bool);

impl<'de: 'a, 'a, 's, 'p> DeserializeSeed<'de> for NestedSeed<'s, 'p, 'a> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a, 's, 'p> Visitor<'de> for NestedSeed<'s, 'p, 'a> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let NestedSeed(spec, out, unknown, duplicate) = self;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if let Some(i) = spec.nested_keys.iter().position(|k| *k == key) {
                let raw = map.next_value_seed(RawSeed)?;
                *duplicate |= out[i].is_some();
                out[i] = Some(raw);
            } else {
                *unknown = true;
                map.next_value::<Skip>()?;
            }
        }
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
}

// -- the checks ----------------------------------------------------------------------------------

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, c| acc * 10 + (c - b'0') as u32))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const PG_EPOCH_DAYS: i64 = 10_957; // 2000-01-01, PostgreSQL's timestamp epoch, in days since 1970-01-01

/// YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM), a real date and time, a UTC offset under 24 h:
/// the instant in microseconds since 2000-01-01T00:00:00Z (timestamptz's binary form), or None.
/// Years 1 and 9999 are declined (their UTC conversion can overflow; pydantic checks it).
fn timestamp_micros(s: &str) -> Option<i64> {
    if !is_timestamp(s) {
        return None;
    }
    let b = s.as_bytes();
    let l = b.len();
    let n = |r: std::ops::Range<usize>| num(&b[r]).unwrap() as i64;
    let days = days_from_civil(n(0..4), n(5..7), n(8..10)) - PG_EPOCH_DAYS;
    let mut seconds = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let fraction_end = if b[l - 1] == b'Z' {
        l - 1
    } else {
        let offset = n(l - 5..l - 3) * 3600 + n(l - 2..l) * 60;
        seconds -= if b[l - 6] == b'+' { offset } else { -offset };
        l - 6
    };
    let mut micros = 0;
    if fraction_end > 20 {
        let digits = &b[20..fraction_end];
        micros = num(digits).unwrap() as i64 * 10_i64.pow(6 - digits.len() as u32);
    }
    Some(seconds * 1_000_000 + micros)
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let l = b.len();
    if !s.is_ascii() || l < 20 {
        return false;
    }
    if !(b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':') {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (num(&b[0..4]), num(&b[5..7]), num(&b[8..10]), num(&b[11..13]), num(&b[14..16]), num(&b[17..19]))
    else {
        return false;
    };
    if !(2..=9998).contains(&year) || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return false;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return false;
    }
    let fraction_end = if b[l - 1] == b'Z' {
        if !(l == 20 || (22..=27).contains(&l)) {
            return false;
        }
        l - 1
    } else {
        if !(l == 25 || (27..=32).contains(&l)) {
            return false;
        }
        if !(b[l - 6] == b'+' || b[l - 6] == b'-') || b[l - 3] != b':' {
            return false;
        }
        match (num(&b[l - 5..l - 3]), num(&b[l - 2..l])) {
            (Some(h), Some(m)) if h <= 23 && m <= 59 => {}
            _ => return false,
        }
        l - 6
    };
    if fraction_end == 19 {
        return true;
    }
    b[19] == b'.' && (1..=6).contains(&(fraction_end - 20)) && b[20..fraction_end].iter().all(u8::is_ascii_digit)
}

fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&c)
}

fn is_label(l: &[u8], tld: bool) -> bool {
    let n = l.len();
    if n == 0 || n > 63 {
        return false;
    }
    let first_ok = if tld { l[0].is_ascii_alphabetic() } else { l[0].is_ascii_alphanumeric() };
    first_ok && l[n - 1].is_ascii_alphanumeric() && l.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

const SPECIAL_TLDS: [&str; 6] = ["arpa", "invalid", "local", "localhost", "onion", "test"];

/// handlers/email.py's fast path: a plain ASCII dot-atom address, the domain lower-cased.
/// Anything its regular expression or its limits would send to email-validator is declined.
fn normalize_email(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() > 254 {
        return None;
    }
    let at = b.iter().position(|c| *c == b'@')?;
    let (local, domain) = (&b[..at], &b[at + 1..]);
    if local.is_empty() || local.len() > 64 || !local.split(|c| *c == b'.').all(|p| !p.is_empty() && p.iter().all(|c| is_atext(*c))) {
        return None;
    }
    let labels: Vec<&[u8]> = domain.split(|c| *c == b'.').collect();
    if labels.len() < 2 {
        return None;
    }
    let (tld, rest) = labels.split_last()?;
    if !rest.iter().all(|l| is_label(l, false)) || !is_label(tld, true) {
        return None;
    }
    if domain.windows(2).any(|w| w == b"--") {
        return None;
    }
    let tld_lower = std::str::from_utf8(tld).ok()?.to_ascii_lowercase();
    if SPECIAL_TLDS.contains(&tld_lower.as_str()) {
        return None;
    }
    let mut out = String::with_capacity(b.len());
    out.push_str(&s[..at + 1]);
    out.push_str(&s[at + 1..].to_ascii_lowercase());
    Some(out)
}

/// A decimal in the forms pydantic reads alike (a JSON integer, a float equal to the nearest
/// double of a decimal of at most `places` places, or plain digits with an optional fraction),
/// non-negative, as (unscaled, scale) equal to the Decimal pydantic would hold.
fn decimal(raw: &Raw, places: u16) -> Option<(u64, u16)> {
    match raw {
        Raw::U64(v) => Some((*v, 0)),
        Raw::I64(v) => (*v == 0).then_some((0, 0)),
        Raw::F64(f) => {
            // pydantic reads a float as its shortest repr; when the float is the one nearest to
            // n / 10^places, that repr is n / 10^places with trailing zeros dropped (one kept):
            // decimals of at most 15 significant digits never round to the same double.
            let f = *f;
            let factor = 10u64.pow(places as u32) as f64;
            if !(0.0..1e15 / factor).contains(&f) {
                return None;
            }
            let scaled = (f * factor).round_ties_even();
            if scaled / factor != f {
                return None;
            }
            let (mut unscaled, mut scale) = (scaled as u64, places);
            while scale > 1 && unscaled % 10 == 0 {
                unscaled /= 10;
                scale -= 1;
            }
            if scale == 0 {
                unscaled *= 10; // "12.0": one place, as repr gives it
                scale = 1;
            }
            Some((unscaled, scale))
        }
        Raw::Str(t) => {
            let b = t.as_bytes();
            let (int, frac) = match b.iter().position(|c| *c == b'.') {
                Some(p) => (&b[..p], &b[p + 1..]),
                None => (b, &b[b.len()..]),
            };
            let has_point = int.len() < b.len();
            let int_ok = (1..=15).contains(&int.len()) && int.iter().all(u8::is_ascii_digit);
            let frac_ok = if has_point { (1..=places as usize).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit) } else { true };
            if !(int_ok && frac_ok) {
                return None;
            }
            let unscaled = int.iter().chain(frac.iter()).fold(0u64, |acc, c| acc * 10 + (c - b'0') as u64);
            Some((unscaled, frac.len() as u16))
        }
        _ => None,
    }
}

fn digit_count(mut v: u64) -> u32 {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

/// One value through its check: the value to keep (Null when not stored), or the decline reason.
fn check(raw: &Raw, c: &Check, stored: bool) -> Result<Val, u8> {
    match c {
        Check::Int { min, max } => {
            let v = match raw {
                Raw::I64(v) => *v,
                Raw::U64(v) if *v <= i64::MAX as u64 => *v as i64,
                _ => return Err(R_INT),
            };
            if v < *min || v > *max {
                return Err(R_INT);
            }
            Ok(Val::Int(v))
        }
        Check::Text { min, max, no_nul } => {
            let Raw::Str(s) = raw else { return Err(R_TEXT) };
            let n = s.chars().count();
            if n < *min || n > *max || (*no_nul && s.contains('\0')) {
                return Err(R_TEXT);
            }
            Ok(if stored { Val::Text(s.to_string()) } else { Val::Null })
        }
        Check::Email { max } => {
            let Raw::Str(s) = raw else { return Err(R_EMAIL) };
            if s.len() > *max {
                return Err(R_EMAIL);
            }
            normalize_email(s).map(Val::Text).ok_or(R_EMAIL)
        }
        Check::Bool => match raw {
            Raw::Bool(b) => Ok(Val::Bool(*b)),
            _ => Err(R_BOOL),
        },
        Check::Enum(values) => {
            let Raw::Str(s) = raw else { return Err(R_ENUM) };
            match values.iter().find(|v| *v == s) {
                Some(v) => Ok(if stored { Val::Text(v.clone()) } else { Val::Null }),
                None => Err(R_ENUM),
            }
        }
        Check::Decimal { places, max_digits, lower, upper, upper_inclusive } => {
            let (unscaled, scale) = decimal(raw, *places).ok_or(R_DECIMAL)?;
            let unit = 10u128.pow(scale as u32);
            let v = unscaled as u128;
            let above = lower.map_or(true, |lo| v >= lo as u128 * unit);
            let below = if *upper_inclusive { v <= *upper as u128 * unit } else { v < *upper as u128 * unit };
            let digits_ok = max_digits.map_or(true, |m| digit_count(unscaled) <= m);
            if !(above && below && digits_ok) {
                return Err(R_DECIMAL);
            }
            Ok(Val::Num(unscaled as u128, scale))
        }
        Check::Timestamp => {
            let Raw::Str(s) = raw else { return Err(R_TIMESTAMP) };
            timestamp_micros(s).map(Val::Ts).ok_or(R_TIMESTAMP)
        }
        Check::Uuid => {
            let Raw::Str(s) = raw else { return Err(R_UUID) };
            if !is_uuid(s) {
                return Err(R_UUID);
            }
            Ok(if stored { Val::Text(s.to_ascii_lowercase()) } else { Val::Null })
        }
    }
}

// -- one decoded event ---------------------------------------------------------------------------

struct Event {
    kind: usize, // index into Spec.types
    id: i64,
    version: i64,
    occurred: i64,
    values: Vec<Val>, // per field of its type (Null where not stored)
}

fn int_of(v: &Val) -> i64 {
    match v {
        Val::Int(i) | Val::Ts(i) => *i,
        _ => unreachable!("the descriptor's id, version and occurred fields are checked at start"),
    }
}

fn event_from(spec: &Spec, kind: usize, values: Vec<Val>) -> Event {
    let t = &spec.types[kind];
    Event { kind, id: int_of(&values[t.id]), version: int_of(&values[t.version]), occurred: int_of(&values[t.occurred]), values }
}

/// pydantic's JSON parser refuses a number with more than 4300 digits before its point (Python's
/// int conversion limit); serde reads it. Any run of that many digits is left to pydantic.
const MAX_DIGIT_RUN: usize = 4300;

fn has_long_digit_run(value: &[u8]) -> bool {
    let mut run = 0;
    for c in value {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run > MAX_DIGIT_RUN {
            return true;
        }
    }
    false
}

fn decode(spec: &Spec, value: &[u8]) -> Result<Event, u8> {
    let text = std::str::from_utf8(value).map_err(|_| R_UTF8)?;
    if value.len() > MAX_DIGIT_RUN && has_long_digit_run(value) {
        return Err(R_JSON);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let p = TopSeed(spec).deserialize(&mut de).map_err(|_| R_JSON)?;
    de.end().map_err(|_| R_JSON)?;
    if p.duplicate {
        return Err(R_DUPLICATE);
    }
    let kind = p.event_type.as_deref().and_then(|n| spec.type_index(n)).ok_or(R_EVENT_TYPE)?;
    if !p.nested_is_object {
        return Err(R_MISSING);
    }
    let t = &spec.types[kind];
    let mut values = Vec::with_capacity(t.fields.len());
    for f in &t.fields {
        let raw = if f.nested { &p.nested[f.key] } else { &p.top[f.key] };
        values.push(match raw {
            None if f.required => return Err(R_MISSING),
            None => f.default.clone(),
            Some(Raw::Null) if f.nullable => Val::Null,
            Some(Raw::Null) => return Err(R_NULL),
            Some(raw) => check(raw, &f.check, f.stored)?,
        });
    }
    if t.forbid_top || t.forbid_nested {
        let used = |nested: bool, i: usize| t.fields.iter().any(|f| f.nested == nested && f.key == i);
        let extra_top = p.unknown_top || p.top.iter().enumerate().any(|(i, r)| r.is_some() && !used(false, i));
        let extra_nested = p.unknown_nested || p.nested.iter().enumerate().any(|(i, r)| r.is_some() && !used(true, i));
        if (t.forbid_top && extra_top) || (t.forbid_nested && extra_nested) {
            return Err(R_EXTRA);
        }
    }
    Ok(event_from(spec, kind, values))
}

// -- collapse (handlers/collapse.py) -------------------------------------------------------------

struct Change {
    first: usize, // the first record-breaking event: created_at if the row is new
    last_version: i64,
    full: Option<usize>,
    patch: Option<usize>,
}

#[derive(Default)]
struct Collapsed<'e> {
    events: Vec<&'e Event>,
    // every event in offset order, stale ones too: for the outcomes and the labels
    keys: Vec<(i64, i64)>,
    labels: Vec<u32>,
    changes: HashMap<i64, Change>,
}

impl<'e> Collapsed<'e> {
    fn push(&mut self, event: &'e Event, full: bool, label: u32) {
        let (id, version) = (event.id, event.version);
        self.keys.push((id, version));
        self.labels.push(label);
        let index = self.events.len();
        let change = match self.changes.entry(id) {
            Entry::Vacant(slot) => slot.insert(Change { first: index, last_version: version, full: None, patch: None }),
            Entry::Occupied(slot) => {
                let change = slot.into_mut();
                if version <= change.last_version {
                    return; // stale within the batch
                }
                change.last_version = version;
                change
            }
        };
        if full {
            change.full = Some(index);
            change.patch = None;
        } else {
            change.patch = Some(index);
        }
        self.events.push(event);
    }
}

// -- binary COPY ---------------------------------------------------------------------------------

/// PostgreSQL's binary COPY format: a header, per row a field count and each field as a length
/// (-1: NULL) and its binary value, a trailer.
struct CopyRows(Vec<u8>);

impl CopyRows {
    fn new(rows: usize) -> Self {
        let mut v = Vec::with_capacity(rows * 96 + 21);
        v.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        v.extend_from_slice(&[0; 8]); // flags, header extension length
        CopyRows(v)
    }
    fn row(&mut self, fields: i16) {
        self.0.extend_from_slice(&fields.to_be_bytes());
    }
    fn null(&mut self) {
        self.0.extend_from_slice(&(-1i32).to_be_bytes());
    }
    fn int8(&mut self, v: i64) {
        self.0.extend_from_slice(&8i32.to_be_bytes());
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn text(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn boolean(&mut self, b: bool) {
        self.0.extend_from_slice(&1i32.to_be_bytes());
        self.0.push(b as u8);
    }
    /// numeric of unscaled / 10^scale: base-10000 digit groups around the decimal point, zero
    /// groups at both ends dropped, the display scale kept (as the Decimal pydantic gives)
    fn numeric(&mut self, unscaled: u128, scale: u16) {
        let text = unscaled.to_string();
        let scale = scale as usize;
        let (int_digits, frac_digits) = if text.len() > scale {
            (text[..text.len() - scale].trim_start_matches('0').to_string(), text[text.len() - scale..].to_string())
        } else {
            (String::new(), format!("{text:0>scale$}"))
        };
        let group = |chunk: &[u8]| chunk.iter().fold(0i16, |acc, c| acc * 10 + (c - b'0') as i16);
        let padded_int = format!("{}{int_digits}", "0".repeat((4 - int_digits.len() % 4) % 4));
        let mut digits: Vec<i16> = padded_int.as_bytes().chunks(4).map(group).collect();
        let mut weight = digits.len() as i16 - 1;
        let padded_frac = format!("{frac_digits}{}", "0".repeat((4 - frac_digits.len() % 4) % 4));
        digits.extend(padded_frac.as_bytes().chunks(4).map(group));
        let leading = digits.iter().take_while(|d| **d == 0).count();
        digits.drain(..leading);
        weight -= leading as i16;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        self.0.extend_from_slice(&(8 + 2 * digits.len() as i32).to_be_bytes());
        for v in [digits.len() as i16, weight, 0, scale as i16] {
            self.0.extend_from_slice(&v.to_be_bytes());
        }
        for d in digits {
            self.0.extend_from_slice(&d.to_be_bytes());
        }
    }
    fn value(&mut self, v: &Val, pg: PgType) {
        match (v, pg) {
            (Val::Null, _) => self.null(),
            (Val::Int(i), PgType::Int8) | (Val::Ts(i), PgType::Timestamptz) => self.int8(*i),
            (Val::Text(s), PgType::Text) => self.text(s),
            (Val::Bool(b), PgType::Bool) => self.boolean(*b),
            (Val::Num(u, s), PgType::Numeric) => self.numeric(*u, *s),
            (v, pg) => panic!("descriptor defect: {v:?} in a {pg:?} column"),
        }
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

struct AggregateRows {
    aggregate: usize,
    entity_ids: String, // '{1,2,3}', ascending
    entities: usize,
    full: Option<Vec<u8>>,
    patch: Option<Vec<u8>>,
    keys: Vec<(i64, i64)>,
    labels: Vec<u32>,
}

fn rows_of(spec: &Spec, aggregate: usize, c: Collapsed) -> AggregateRows {
    let columns = &spec.aggregates[aggregate].1;
    let mut ids: Vec<i64> = c.changes.keys().copied().collect();
    ids.sort_unstable();
    let mut entity_ids = String::with_capacity(ids.len() * 8 + 2);
    entity_ids.push('{');
    let (mut full, mut patch) = (CopyRows::new(ids.len()), CopyRows::new(0));
    let (mut n_full, mut n_patch) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            entity_ids.push(',');
        }
        entity_ids.push_str(&id.to_string());
        let change = &c.changes[id];
        let first = c.events[change.first].occurred;
        for (slot, out, n) in [(change.full, &mut full, &mut n_full), (change.patch, &mut patch, &mut n_patch)] {
            let Some(index) = slot else { continue };
            let e = c.events[index];
            out.row(columns.len() as i16);
            for (source, pg) in spec.types[e.kind].row.iter().zip(columns) {
                match source {
                    Source::Field(f) => out.value(&e.values[*f], *pg),
                    Source::FirstOccurred => out.value(&Val::Ts(first), *pg),
                    Source::Const(v) => out.value(v, *pg),
                    Source::Null => out.null(),
                }
            }
            *n += 1;
        }
    }
    entity_ids.push('}');
    AggregateRows {
        aggregate,
        entity_ids,
        entities: ids.len(),
        full: (n_full > 0).then(|| full.finish()),
        patch: (n_patch > 0).then(|| patch.finish()),
        keys: c.keys,
        labels: c.labels,
    }
}

// -- Python ----------------------------------------------------------------------------------------

/// The descriptor, compiled once at start-up and shared by every PartBuilder.
#[pyclass(module = "ec_native", frozen)]
struct Contract {
    spec: Arc<Spec>,
}

#[pymethods]
impl Contract {
    #[new]
    fn new(descriptor: &Bound<'_, PyDict>) -> PyResult<Self> {
        Ok(Contract { spec: Arc::new(spec_from(descriptor)?) })
    }

    /// One value alone: (event_type, values per field of its type) or (None, decline reason).
    fn decode<'py>(&self, py: Python<'py>, value: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
        match decode(&self.spec, value) {
            Ok(e) => {
                let values = PyList::empty(py);
                for v in &e.values {
                    values.append(val_to_py(py, v)?)?;
                }
                PyTuple::new(py, [self.spec.types[e.kind].name.clone().into_pyobject(py)?.into_any(), values.into_any()])
            }
            Err(r) => PyTuple::new(py, [py.None().into_bound(py), REASONS[r as usize].into_pyobject(py)?.into_any()]),
        }
    }
}

fn val_to_py<'py>(py: Python<'py>, v: &Val) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Val::Null => py.None().into_bound(py),
        Val::Int(i) | Val::Ts(i) => i.into_pyobject(py)?.into_any(),
        Val::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
        Val::Text(s) => s.into_pyobject(py)?.into_any(),
        Val::Num(u, s) => (*u, *s).into_pyobject(py)?.into_any(),
    })
}

/// The per-event keys of one aggregate's events, for the applied/stale outcome of each.
#[pyclass(module = "ec_native", frozen)]
struct Outcomes {
    keys: Vec<(i64, i64)>,
}

#[pymethods]
impl Outcomes {
    /// handlers.collapse.applies_one_by_one: per event, in order, does it apply when the events
    /// are applied one by one to the stored versions ({entity id: version})?
    fn outcomes<'py>(&self, py: Python<'py>, stored: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyTuple>> {
        let mut known: HashMap<i64, i64> = HashMap::with_capacity(stored.len());
        for (k, v) in stored.iter() {
            known.insert(k.extract()?, v.extract()?);
        }
        let out = py.allow_threads(|| {
            let mut best: HashMap<i64, i64> = HashMap::with_capacity(self.keys.len());
            self.keys
                .iter()
                .map(|(id, version)| {
                    let current = *best.entry(*id).or_insert_with(|| known.get(id).copied().unwrap_or(0));
                    if *version > current {
                        best.insert(*id, *version);
                        true
                    } else {
                        false
                    }
                })
                .collect::<Vec<bool>>()
        });
        PyTuple::new(py, out)
    }

    fn __len__(&self) -> usize {
        self.keys.len()
    }
}

/// One batch part: `add` the values of each partition in turn (offset order), `fill` the slots
/// pydantic found valid among those declined, then `finish`.
#[pyclass(module = "ec_native")]
struct PartBuilder {
    spec: Arc<Spec>,
    slots: Vec<(Option<Event>, u32)>, // per value added, in order: the event (None: declined) and its topic
    topics: Vec<String>,
    finished: bool,
}

impl PartBuilder {
    fn live(&self) -> PyResult<()> {
        if self.finished {
            return Err(PyRuntimeError::new_err("PartBuilder already finished"));
        }
        Ok(())
    }
}

#[pymethods]
impl PartBuilder {
    #[new]
    fn new(contract: &Contract) -> Self {
        PartBuilder { spec: contract.spec.clone(), slots: Vec::new(), topics: Vec::new(), finished: false }
    }

    /// Decodes one partition's record values (bytes or None, offset order) into the next slots.
    /// Returns (slot, reason) for each value it declined.
    fn add(&mut self, py: Python<'_>, values: &Bound<'_, PyList>, topic: &str) -> PyResult<Vec<(usize, &'static str)>> {
        self.live()?;
        let topic_index = match self.topics.iter().position(|t| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        } as u32;
        let base = self.slots.len();
        let mut keep: Vec<Bound<'_, PyAny>> = Vec::with_capacity(values.len());
        let mut slices: Vec<Option<(usize, usize)>> = Vec::with_capacity(values.len());
        for item in values.iter() {
            match item.downcast::<PyBytes>() {
                Ok(b) => {
                    let s = b.as_bytes();
                    slices.push(Some((s.as_ptr() as usize, s.len())));
                }
                Err(_) => slices.push(None),
            }
            keep.push(item);
        }
        let spec = &self.spec;
        let slots = &mut self.slots;
        let declined = py.allow_threads(|| {
            let mut declined = Vec::new();
            for (i, value) in slices.iter().enumerate() {
                let decoded = match value {
                    // SAFETY: `keep` holds every bytes object alive (and bytes are immutable).
                    Some((ptr, len)) => decode(spec, unsafe { std::slice::from_raw_parts(*ptr as *const u8, *len) }),
                    None => Err(R_NOT_BYTES),
                };
                match decoded {
                    Ok(event) => slots.push((Some(event), topic_index)),
                    Err(reason) => {
                        slots.push((None, topic_index));
                        declined.push((base + i, REASONS[reason as usize]));
                    }
                }
            }
            declined
        });
        drop(keep);
        Ok(declined)
    }

    /// Puts a declined slot's event, validated by pydantic, back in its place: `values` per field
    /// of the event type, as handlers.native gives them.
    fn fill(&mut self, slot: usize, event_type: &str, values: &Bound<'_, PyList>) -> PyResult<()> {
        self.live()?;
        let kind = self.spec.type_index(event_type).ok_or_else(|| bad(format!("unknown event type {event_type:?}")))?;
        let t = &self.spec.types[kind];
        if values.len() != t.fields.len() {
            return Err(bad(format!("{event_type} has {} fields, not {}", t.fields.len(), values.len())));
        }
        let vals = t.fields.iter().zip(values.iter()).map(|(f, v)| val_for_check(&f.check, &v)).collect::<PyResult<Vec<_>>>()?;
        let event = event_from(&self.spec, kind, vals);
        let Some((entry, _)) = self.slots.get_mut(slot) else { return Err(bad("no such slot")) };
        if entry.is_some() {
            return Err(bad("slot already holds an event"));
        }
        *entry = Some(event);
        Ok(())
    }

    /// Per aggregate with events, in the descriptor's order: (aggregate index, entities,
    /// entity_ids, full-state COPY data or None, patch COPY data or None, labels, Outcomes);
    /// labels are (topic, event_type) per event, in the order of Outcomes.outcomes().
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.live()?;
        self.finished = true;
        let spec = &self.spec;
        let slots = std::mem::take(&mut self.slots);
        let n_types = spec.types.len() as u32;
        let built: Vec<AggregateRows> = py.allow_threads(|| {
            let mut collapsed: Vec<Collapsed> = (0..spec.aggregates.len()).map(|_| Collapsed::default()).collect();
            for (event, topic) in slots.iter().filter_map(|(e, t)| e.as_ref().map(|e| (e, *t))) {
                let t = &spec.types[event.kind];
                collapsed[t.aggregate].push(event, t.full, topic * n_types + event.kind as u32);
            }
            collapsed
                .into_iter()
                .enumerate()
                .filter(|(_, c)| !c.keys.is_empty())
                .map(|(a, c)| rows_of(spec, a, c))
                .collect()
        });
        let mut label_objects: HashMap<u32, Py<PyTuple>> = HashMap::new();
        let out = PyList::empty(py);
        for rows in built {
            let mut labels = Vec::with_capacity(rows.labels.len());
            for label in &rows.labels {
                let obj = match label_objects.get(label) {
                    Some(o) => o.clone_ref(py),
                    None => {
                        let topic = &self.topics[(*label / n_types) as usize];
                        let kind = &spec.types[(*label % n_types) as usize].name;
                        let t = PyTuple::new(py, [topic.as_str(), kind.as_str()])?.unbind();
                        label_objects.insert(*label, t.clone_ref(py));
                        t
                    }
                };
                labels.push(obj);
            }
            let outcomes = Py::new(py, Outcomes { keys: rows.keys })?;
            let full = rows.full.map(|b| PyBytes::new(py, &b));
            let patch = rows.patch.map(|b| PyBytes::new(py, &b));
            let labels = PyList::new(py, labels)?;
            out.append((rows.aggregate, rows.entities, rows.entity_ids, full, patch, labels, outcomes).into_pyobject(py)?)?;
        }
        Ok(out)
    }
}

#[pymodule]
fn ec_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Contract>()?;
    m.add_class::<PartBuilder>()?;
    m.add_class::<Outcomes>()?;
    m.add("DECLINE_REASONS", PyTuple::new(m.py(), REASONS)?)?;
    Ok(())
}
