//! event-consumer's native fast path: one batch part's record values -> decoded, validated and
//! collapsed per entity -> the upserts' array literals, with the GIL released while it works.
//!
//! It mirrors `handlers/fast_decode.py` (itself held to the pydantic contract in
//! `handlers/events.py`) and is stricter still: whatever it is not sure of, it declines, and the
//! caller decides (pydantic, the authority, diagnoses the record; if pydantic finds a valid event
//! there, the caller redoes the whole part on the Python path, so the collapse stays in offset
//! order). What it accepts, pydantic accepts with equal values: `tests/unit/test_native.py`.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;

// -- the contract's event types ------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    UserCreated,
    UserUpdated,
    UserDeleted,
    OrderCreated,
    OrderUpdated,
    OrderCancelled,
}

const KINDS: [Kind; 6] = [
    Kind::UserCreated,
    Kind::UserUpdated,
    Kind::UserDeleted,
    Kind::OrderCreated,
    Kind::OrderUpdated,
    Kind::OrderCancelled,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::UserCreated => "user.created",
            Kind::UserUpdated => "user.updated",
            Kind::UserDeleted => "user.deleted",
            Kind::OrderCreated => "order.created",
            Kind::OrderUpdated => "order.updated",
            Kind::OrderCancelled => "order.cancelled",
        }
    }
    fn from_name(s: &str) -> Option<Kind> {
        KINDS.iter().copied().find(|k| k.name() == s)
    }
    /// 0 = users, 1 = orders
    fn aggregate(self) -> usize {
        match self {
            Kind::UserCreated | Kind::UserUpdated | Kind::UserDeleted => 0,
            _ => 1,
        }
    }
    fn is_full(self) -> bool {
        !matches!(self, Kind::UserDeleted | Kind::OrderCancelled)
    }
    fn index(self) -> u32 {
        KINDS.iter().position(|k| *k == self).unwrap() as u32
    }
}

const AGGREGATES: [&str; 2] = ["users", "orders"];
const USERS_COLUMNS: [&str; 8] = ["id", "email", "name", "is_active", "version", "deleted_at", "created_at", "updated_at"];
const ORDERS_COLUMNS: [&str; 7] = ["id", "user_id", "total", "status", "version", "created_at", "updated_at"];
const STATUSES: [&str; 5] = ["pending", "paid", "shipped", "delivered", "cancelled"];

// -- JSON shape (serde): unknown keys, duplicates, nulls and wrong types are all declined ----------

fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some) // a JSON null is an error here, not an absent field
}

#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// A derived struct Deserialize also takes a JSON array (the fields in order); the contract's
/// objects must be JSON objects, so this admits a map only.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = MapOnly<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(MapOnly)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

enum Total<'a> {
    Pos(u64),
    Neg(i64),
    Float(f64),
    Text(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Total<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Total<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Total::Pos(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Total::Neg(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Total::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Total::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Total::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Total::Text(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData<'a> {
    #[serde(default, deserialize_with = "present")]
    id: Option<i64>,
    #[serde(default, borrow, deserialize_with = "present")]
    email: Option<Str<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<Str<'a>>,
    #[serde(default, deserialize_with = "present")]
    is_active: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    user_id: Option<i64>,
    #[serde(default, borrow, deserialize_with = "present")]
    total: Option<Total<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    status: Option<Str<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent<'a> {
    #[serde(borrow)]
    event_id: Str<'a>,
    #[serde(borrow)]
    event_type: Str<'a>,
    #[serde(borrow)]
    occurred_at: Str<'a>,
    version: i64,
    #[serde(borrow)]
    data: MapOnly<RawData<'a>>,
}

// -- the checks of handlers/fast_decode.py ------------------------------------------------------

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
/// Years 1 and 9999 are declined (their UTC conversion can overflow; the Python path checks it).
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

fn is_name(s: &str) -> bool {
    let n = s.chars().count();
    (1..=100).contains(&n) && !s.contains('\0')
}

const MONEY_LIMIT: u64 = 10_000_000_000;

/// pydantic's Money (ge=0, lt=10**10, at most 2 places) for the forms fast_decode is sure of, as
/// the text of a numeric equal to the Decimal it would hold, and as (unscaled, scale).
fn money(total: &Total) -> Option<(String, u64, u16)> {
    let text = money_text(total)?;
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let unscaled = format!("{int}{frac}").parse::<u64>().ok()?;
    let scale = frac.len() as u16;
    Some((text, unscaled, scale))
}

fn money_text(total: &Total) -> Option<String> {
    match total {
        Total::Pos(v) => (*v < MONEY_LIMIT).then(|| v.to_string()),
        Total::Neg(v) => (*v == 0).then(|| "0".to_string()),
        Total::Float(raw) => {
            let raw = *raw;
            if !(0.0..(MONEY_LIMIT as f64)).contains(&raw) {
                return None;
            }
            let cents = (raw * 100.0).round_ties_even(); // Python's round(): half to even
            if cents / 100.0 != raw {
                return None;
            }
            let cents = cents as u64;
            Some(format!("{}.{:02}", cents / 100, cents % 100))
        }
        Total::Text(t) => {
            let b = t.as_bytes();
            let (int, frac) = match b.iter().position(|c| *c == b'.') {
                Some(p) => (&b[..p], Some(&b[p + 1..])),
                None => (b, None),
            };
            let int_ok = (1..=10).contains(&int.len()) && int.iter().all(u8::is_ascii_digit);
            let frac_ok = frac.map_or(true, |f| (1..=2).contains(&f.len()) && f.iter().all(u8::is_ascii_digit));
            (int_ok && frac_ok).then(|| t.to_string())
        }
    }
}

// -- one decoded event ---------------------------------------------------------------------------

enum Payload {
    User { email: String, name: String, is_active: bool },
    Order { user_id: i64, total: String, total_num: (u64, u16), status: &'static str },
    Ref,
}

struct Event {
    kind: Kind,
    event_id: String,
    occurred_at: String,
    occurred_us: i64,
    version: i64,
    id: i64,
    payload: Payload,
}

fn decode(value: &[u8]) -> Option<Event> {
    let MapOnly(raw): MapOnly<RawEvent> = serde_json::from_slice(value).ok()?;
    let kind = Kind::from_name(&raw.event_type.0)?;
    if !is_uuid(&raw.event_id.0) || raw.version < 1 {
        return None;
    }
    let occurred_us = timestamp_micros(&raw.occurred_at.0)?;
    let MapOnly(d) = raw.data;
    let id = d.id.filter(|id| *id > 0)?;
    let payload = match kind {
        Kind::UserCreated | Kind::UserUpdated => {
            if d.user_id.is_some() || d.total.is_some() || d.status.is_some() {
                return None;
            }
            let email = normalize_email(&d.email?.0)?;
            let name = d.name?.0;
            if !is_name(&name) {
                return None;
            }
            Payload::User { email, name: name.into_owned(), is_active: d.is_active.unwrap_or(true) }
        }
        Kind::OrderCreated | Kind::OrderUpdated => {
            if d.email.is_some() || d.name.is_some() || d.is_active.is_some() {
                return None;
            }
            let user_id = d.user_id.filter(|u| *u > 0)?;
            let (total, unscaled, scale) = money(&d.total?)?;
            let status = d.status?.0;
            let status = STATUSES.iter().copied().find(|s| *s == status)?;
            Payload::Order { user_id, total, total_num: (unscaled, scale), status }
        }
        Kind::UserDeleted | Kind::OrderCancelled => {
            if d.email.is_some() || d.name.is_some() || d.is_active.is_some() || d.user_id.is_some() || d.total.is_some() || d.status.is_some() {
                return None;
            }
            Payload::Ref
        }
    };
    Some(Event {
        kind,
        event_id: raw.event_id.0.into_owned(),
        occurred_at: raw.occurred_at.0.into_owned(),
        occurred_us,
        version: raw.version,
        id,
        payload,
    })
}

// -- collapse (handlers/collapse.py) and the array literals (handlers/sql.py) -------------------

struct Change {
    first: usize, // the first record-breaking event: created_at if the row is new
    last_version: i64,
    full: Option<usize>,
    patch: Option<usize>,
}

#[derive(Default)]
struct Aggregate {
    events: Vec<Event>,
    // every accepted event in offset order, stale ones too: for the outcomes
    keys: Vec<(i64, i64)>,
    labels: Vec<u32>,
    changes: HashMap<i64, Change>,
}

impl Aggregate {
    fn push(&mut self, event: Event, label: u32) {
        let (id, version, full) = (event.id, event.version, event.kind.is_full());
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

fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// One literal per column, built row by row.
struct Columns(Vec<String>);

impl Columns {
    fn new(n: usize, rows: usize) -> Self {
        Columns((0..n).map(|_| String::with_capacity(rows * 12 + 2)).collect())
    }
    fn sep(&mut self) {
        for c in &mut self.0 {
            c.push(if c.is_empty() { '{' } else { ',' });
        }
    }
    fn finish(mut self) -> Vec<String> {
        for c in &mut self.0 {
            c.push('}');
        }
        self.0
    }
}

struct Literals {
    entities: usize,
    entity_ids: String,
    full: Option<Vec<String>>,
    patch: Option<Vec<String>>,
}

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
    /// timestamptz: microseconds since 2000-01-01T00:00:00Z
    fn timestamptz(&mut self, micros: i64) {
        self.int8(micros);
    }
    fn text(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as i32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn boolean(&mut self, b: bool) {
        self.0.extend_from_slice(&1i32.to_be_bytes());
        self.0.push(b as u8);
    }
    /// numeric of unscaled / 10^scale (scale <= 2): base-10000 digits, the fraction in one group
    fn numeric(&mut self, unscaled: u64, scale: u16) {
        let (mut int_part, fraction) = if scale == 0 {
            (unscaled, None)
        } else {
            let x = unscaled * 10u64.pow(4 - scale as u32);
            (x / 10_000, Some((x % 10_000) as i16))
        };
        let mut digits: Vec<i16> = Vec::with_capacity(4);
        while int_part > 0 {
            digits.push((int_part % 10_000) as i16);
            int_part /= 10_000;
        }
        digits.reverse();
        let mut weight = digits.len() as i16 - 1;
        digits.extend(fraction);
        if digits.iter().all(|d| *d == 0) {
            digits.clear();
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
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}

/// The full-state and patch rows of one aggregate as binary COPY data (columns in USERS_COLUMNS /
/// ORDERS_COLUMNS order), for the ids in `ids` (sorted).
fn copies(which: usize, agg: &Aggregate, ids: &[i64]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let n_cols = if which == 0 { USERS_COLUMNS.len() } else { ORDERS_COLUMNS.len() } as i16;
    let (mut full, mut patch) = (CopyRows::new(ids.len()), CopyRows::new(0));
    let (mut n_full, mut n_patch) = (0, 0);
    for id in ids {
        let change = &agg.changes[id];
        let first = &agg.events[change.first];
        if let Some(f) = change.full {
            let e = &agg.events[f];
            full.row(n_cols);
            full.int8(*id);
            match &e.payload {
                Payload::User { email, name, is_active } => {
                    full.text(email);
                    full.text(name);
                    full.boolean(*is_active);
                    full.int8(e.version);
                    full.null(); // a full state after a delete revives the user
                    full.timestamptz(first.occurred_us);
                    full.timestamptz(e.occurred_us);
                }
                Payload::Order { user_id, total_num, status, .. } => {
                    full.int8(*user_id);
                    full.numeric(total_num.0, total_num.1);
                    full.text(status);
                    full.int8(e.version);
                    full.timestamptz(first.occurred_us);
                    full.timestamptz(e.occurred_us);
                }
                Payload::Ref => unreachable!("a full-state event has a full payload"),
            }
            n_full += 1;
        }
        if let Some(p) = change.patch {
            let e = &agg.events[p];
            patch.row(n_cols);
            patch.int8(*id);
            patch.null();
            patch.null();
            if which == 0 {
                patch.boolean(false);
                patch.int8(e.version);
                patch.timestamptz(e.occurred_us);
            } else {
                patch.text("cancelled");
                patch.int8(e.version);
            }
            patch.timestamptz(first.occurred_us);
            patch.timestamptz(e.occurred_us);
            n_patch += 1;
        }
    }
    ((n_full > 0).then(|| full.finish()), (n_patch > 0).then(|| patch.finish()))
}

/// The aggregate's changed entity ids, ascending (the order of the rows and of entity_ids).
fn sorted_ids(agg: &Aggregate) -> Vec<i64> {
    let mut ids: Vec<i64> = agg.changes.keys().copied().collect();
    ids.sort_unstable();
    ids
}

/// '{1,2,3}'
fn ids_literal(ids: &[i64]) -> String {
    let mut out = String::with_capacity(ids.len() * 8 + 2);
    out.push('{');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out.push('}');
    out
}

fn literals(which: usize, agg: &Aggregate, ids: &[i64]) -> Literals {
    let n_cols = if which == 0 { USERS_COLUMNS.len() } else { ORDERS_COLUMNS.len() };
    let (mut full, mut patch) = (Columns::new(n_cols, ids.len()), Columns::new(n_cols, 0));
    let (mut n_full, mut n_patch) = (0, 0);
    for id in ids {
        let change = &agg.changes[id];
        let first = &agg.events[change.first];
        if let Some(f) = change.full {
            let e = &agg.events[f];
            full.sep();
            let c = &mut full.0;
            c[0].push_str(&id.to_string());
            match &e.payload {
                Payload::User { email, name, is_active } => {
                    quoted(&mut c[1], email);
                    quoted(&mut c[2], name);
                    c[3].push_str(if *is_active { "true" } else { "false" });
                    c[4].push_str(&e.version.to_string());
                    c[5].push_str("null"); // a full state after a delete revives the user
                    quoted(&mut c[6], &first.occurred_at);
                    quoted(&mut c[7], &e.occurred_at);
                }
                Payload::Order { user_id, total, status, .. } => {
                    c[1].push_str(&user_id.to_string());
                    quoted(&mut c[2], total);
                    quoted(&mut c[3], status);
                    c[4].push_str(&e.version.to_string());
                    quoted(&mut c[5], &first.occurred_at);
                    quoted(&mut c[6], &e.occurred_at);
                }
                Payload::Ref => unreachable!("a full-state event has a full payload"),
            }
            n_full += 1;
        }
        if let Some(p) = change.patch {
            // Inserted only when the entity is absent: a placeholder that remembers the version.
            let e = &agg.events[p];
            patch.sep();
            let c = &mut patch.0;
            c[0].push_str(&id.to_string());
            if which == 0 {
                c[1].push_str("null");
                c[2].push_str("null");
                c[3].push_str("false");
                c[4].push_str(&e.version.to_string());
                quoted(&mut c[5], &e.occurred_at);
                quoted(&mut c[6], &first.occurred_at);
                quoted(&mut c[7], &e.occurred_at);
            } else {
                c[1].push_str("null");
                c[2].push_str("null");
                quoted(&mut c[3], "cancelled");
                c[4].push_str(&e.version.to_string());
                quoted(&mut c[5], &first.occurred_at);
                quoted(&mut c[6], &e.occurred_at);
            }
            n_patch += 1;
        }
    }
    Literals {
        entities: ids.len(),
        entity_ids: ids_literal(ids),
        full: (n_full > 0).then(|| full.finish()),
        patch: (n_patch > 0).then(|| patch.finish()),
    }
}

// -- Python ----------------------------------------------------------------------------------------

#[derive(Default)]
struct Inner {
    aggregates: [Aggregate; 2],
}

impl Inner {
    /// (address, length) of each value's bytes, or None for a value that is not bytes.
    fn add_raw(&mut self, values: &[Option<(usize, usize)>], topic: u32) -> Vec<usize> {
        let mut declined = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let decoded = value.and_then(|(ptr, len)| {
                // SAFETY: the caller keeps every bytes object alive (and bytes are immutable).
                let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
                decode(bytes)
            });
            match decoded {
                Some(event) => {
                    let label = topic * KINDS.len() as u32 + event.kind.index();
                    self.aggregates[event.kind.aggregate()].push(event, label);
                }
                None => declined.push(i),
            }
        }
        declined
    }
}

/// One batch part: `add` the values of each partition in turn (offset order), then `finish`.
#[pyclass(module = "ec_native")]
struct PartBuilder {
    inner: Inner,
    topics: Vec<String>,
    finished: bool,
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

#[pymethods]
impl PartBuilder {
    #[new]
    fn new() -> Self {
        PartBuilder { inner: Inner::default(), topics: Vec::new(), finished: false }
    }

    /// Decodes one partition's record values (bytes or None, offset order) into the part.
    /// Returns the indices of the values it declined (None, not bytes, or not surely valid).
    fn add(&mut self, py: Python<'_>, values: &Bound<'_, PyList>, topic: &str) -> PyResult<Vec<usize>> {
        if self.finished {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("PartBuilder already finished"));
        }
        let topic_index = match self.topics.iter().position(|t| t == topic) {
            Some(i) => i,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        } as u32;
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
        let inner = &mut self.inner;
        let declined = py.allow_threads(|| inner.add_raw(&slices, topic_index));
        drop(keep);
        Ok(declined)
    }

    /// Per aggregate with events ("users" first, then "orders"): (name, entities, entity_ids,
    /// full-state rows or None, patch rows or None, labels, Outcomes). The rows are a list of array
    /// literals, one per column in USERS_COLUMNS / ORDERS_COLUMNS order, or with `copy` binary
    /// COPY data (bytes) of those columns; labels are (topic, event_type) per event, in the order
    /// of Outcomes.outcomes().
    #[pyo3(signature = (copy = false))]
    fn finish<'py>(&mut self, py: Python<'py>, copy: bool) -> PyResult<Bound<'py, PyList>> {
        if self.finished {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("PartBuilder already finished"));
        }
        self.finished = true;
        let inner = &self.inner;
        type Copies = (Option<Vec<u8>>, Option<Vec<u8>>);
        let built: Vec<Option<(Literals, Option<Copies>)>> = py.allow_threads(|| {
            (0..2)
                .map(|w| {
                    let agg = &inner.aggregates[w];
                    (!agg.keys.is_empty()).then(|| {
                        let ids = sorted_ids(agg);
                        if copy {
                            let lit = Literals { entities: ids.len(), entity_ids: ids_literal(&ids), full: None, patch: None };
                            (lit, Some(copies(w, agg, &ids)))
                        } else {
                            (literals(w, agg, &ids), None)
                        }
                    })
                })
                .collect()
        });
        let mut label_objects: HashMap<u32, Py<PyTuple>> = HashMap::new();
        let out = PyList::empty(py);
        for (which, item) in built.into_iter().enumerate() {
            let Some((lit, copied)) = item else { continue };
            let agg = &mut self.inner.aggregates[which];
            let mut labels = Vec::with_capacity(agg.labels.len());
            for label in &agg.labels {
                let obj = match label_objects.get(label) {
                    Some(o) => o.clone_ref(py),
                    None => {
                        let topic = &self.topics[(*label / KINDS.len() as u32) as usize];
                        let kind = KINDS[(*label % KINDS.len() as u32) as usize];
                        let t = PyTuple::new(py, [topic.as_str(), kind.name()])?.unbind();
                        label_objects.insert(*label, t.clone_ref(py));
                        t
                    }
                };
                labels.push(obj);
            }
            let outcomes = Py::new(py, Outcomes { keys: std::mem::take(&mut agg.keys) })?;
            let labels = PyList::new(py, labels)?;
            let item = match copied {
                Some((full, patch)) => {
                    let full = full.map(|b| PyBytes::new(py, &b));
                    let patch = patch.map(|b| PyBytes::new(py, &b));
                    (AGGREGATES[which], lit.entities, lit.entity_ids, full, patch, labels, outcomes).into_pyobject(py)?
                }
                None => (AGGREGATES[which], lit.entities, lit.entity_ids, lit.full, lit.patch, labels, outcomes).into_pyobject(py)?,
            };
            out.append(item)?;
        }
        self.inner = Inner::default();
        Ok(out)
    }
}

/// One value through the fast path alone, for the tests: None if declined, else (event_type,
/// event_id, occurred_at, version, id, email, name, is_active, user_id, total, status) with None
/// for the fields the event type does not have. occurred_at and total are the text PostgreSQL gets.
#[pyfunction]
fn decode_one(py: Python<'_>, value: &[u8]) -> PyResult<PyObject> {
    let Some(e) = decode(value) else { return Ok(py.None()) };
    let (email, name, is_active, user_id, total, status) = match e.payload {
        Payload::User { email, name, is_active } => (Some(email), Some(name), Some(is_active), None, None, None),
        Payload::Order { user_id, total, status, .. } => (None, None, None, Some(user_id), Some(total), Some(status)),
        Payload::Ref => (None, None, None, None, None, None),
    };
    let t = (e.kind.name(), e.event_id, e.occurred_at, e.version, e.id, email, name, is_active, user_id, total, status);
    Ok(t.into_pyobject(py)?.into_any().unbind())
}

#[pymodule]
fn ec_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PartBuilder>()?;
    m.add_class::<Outcomes>()?;
    m.add_function(wrap_pyfunction!(decode_one, m)?)?;
    m.add("USERS_COLUMNS", PyTuple::new(m.py(), USERS_COLUMNS)?)?;
    m.add("ORDERS_COLUMNS", PyTuple::new(m.py(), ORDERS_COLUMNS)?)?;
    let types = PyDict::new(m.py());
    for k in KINDS {
        types.set_item(k.name(), (AGGREGATES[k.aggregate()], k.is_full()))?;
    }
    m.add("EVENT_TYPES", types)?;
    Ok(())
}
