//! The value types of the configuration file, as serde deserialisers.
//!
//! Every key's value goes through one of these (`#[serde(deserialize_with
//! = ...)]` on the section structs), never through serde's own messages:
//! each one first takes the raw [`toml::Value`] and then says in our own
//! words what it expected and what it got (`expected "host:port", got an
//! integer (7)`). The message is only the problem; the key in front of it
//! comes from the path serde walked (see `super::load`). List entries are
//! deserialised as sequence elements so that path carries their index.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Error as _, SeqAccess, Visitor};
use toml::Value;

use crate::session::Mode;

/// How a value is named in messages: `an integer (7)`, `a string ("x")`.
pub(super) fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) => format!("a string ({s:?})"),
        Value::Integer(i) => format!("an integer ({i})"),
        Value::Float(f) => format!("a number ({f})"),
        Value::Boolean(b) => format!("a boolean ({b})"),
        Value::Datetime(d) => format!("a date/time ({d})"),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// The raw value of a key, for our own checks.
fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Value::deserialize(d)
}

/// A string value, or `expected {what}, got ...`.
fn string<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<String, D::Error> {
    match raw(d)? {
        Value::String(s) => Ok(s),
        other => Err(D::Error::custom(format!("expected {what}, got {}", type_name(&other)))),
    }
}

// ---------------------------------------------------------------------------
// Strings and lists of strings

/// A kind of string entry: what it is called and how it is checked (and
/// normalised).
pub(super) trait Entry {
    /// What a value of another type is told it should have been.
    const EXPECTED: &'static str;
    /// What a list of none is told; None: an empty list is fine.
    const NON_EMPTY: Option<&'static str>;
    /// Checks (and normalises) one entry.
    fn check(s: String) -> Result<String, String>;
}

/// One checked entry of a list.
struct Checked<E>(String, PhantomData<E>);

impl<'de, E: Entry> Deserialize<'de> for Checked<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string(d, E::EXPECTED)?;
        E::check(s).map(|s| Checked(s, PhantomData)).map_err(D::Error::custom)
    }
}

/// One entry or a list of them (the list's entries carry their index).
struct OneOrList<E>(PhantomData<E>);

impl<'de, E: Entry> Visitor<'de> for OneOrList<E> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} or a list of them", E::EXPECTED)
    }

    fn visit_str<X: de::Error>(self, s: &str) -> Result<Self::Value, X> {
        E::check(s.to_string()).map(|s| vec![s]).map_err(X::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Checked(s, _)) = seq.next_element::<Checked<E>>()? {
            out.push(s);
        }
        match E::NON_EMPTY {
            Some(message) if out.is_empty() => Err(A::Error::custom(message)),
            _ => Ok(out),
        }
    }

    fn visit_i64<X: de::Error>(self, v: i64) -> Result<Self::Value, X> {
        Err(self.wrong(&Value::Integer(v)))
    }

    fn visit_f64<X: de::Error>(self, v: f64) -> Result<Self::Value, X> {
        Err(self.wrong(&Value::Float(v)))
    }

    fn visit_bool<X: de::Error>(self, v: bool) -> Result<Self::Value, X> {
        Err(self.wrong(&Value::Boolean(v)))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.wrong(&Value::Table(Default::default())))
    }
}

impl<E: Entry> OneOrList<E> {
    fn wrong<X: de::Error>(&self, v: &Value) -> X {
        X::custom(format!("expected {} or a list of them, got {}", E::EXPECTED, type_name(v)))
    }
}

/// `#[serde(deserialize_with)]` for a key taking one `E` or a list.
pub(super) fn list<'de, D: Deserializer<'de>, E: Entry>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(OneOrList::<E>(PhantomData))
}

/// `#[serde(deserialize_with)]` for a key taking one `E`.
pub(super) fn one<'de, D: Deserializer<'de>, E: Entry>(d: D) -> Result<Option<String>, D::Error> {
    let s = string(d, "a string")?;
    E::check(s).map(Some).map_err(D::Error::custom)
}

/// A `[Tcp]`/`[Reverse]` `Listen` entry: `host:port`, port 0 allowed.
pub(super) enum ListenAddr {}
/// An `Address` entry: `host:port` with a real port.
pub(super) enum UpstreamAddr {}
/// An NKN address, kept as written.
pub(super) enum NknAddress {}
/// An NKN address in a list of peers (lower-cased, as peers are compared).
pub(super) enum NknPeer {}
/// An NKN seed: 64 hex digits (lower-cased).
pub(super) enum NknSeed {}
/// A seed RPC server: `http://host:port[/path]`.
pub(super) enum HttpUrl {}
/// A non-empty string (`[Tls]` file and server names).
pub(super) enum NonEmpty {}

const AT_LEAST_ONE: Option<&str> = Some("expected at least one \"host:port\", got an empty list");

impl Entry for ListenAddr {
    const EXPECTED: &'static str = "\"host:port\"";
    const NON_EMPTY: Option<&'static str> = AT_LEAST_ONE;
    fn check(s: String) -> Result<String, String> {
        check_host_port(&s, true).map(|()| s)
    }
}

impl Entry for UpstreamAddr {
    const EXPECTED: &'static str = "\"host:port\"";
    const NON_EMPTY: Option<&'static str> = AT_LEAST_ONE;
    fn check(s: String) -> Result<String, String> {
        check_host_port(&s, false).map(|()| s)
    }
}

impl Entry for NknAddress {
    const EXPECTED: &'static str = "a string";
    const NON_EMPTY: Option<&'static str> = None;
    fn check(s: String) -> Result<String, String> {
        check_nkn_address(&s).map(|()| s)
    }
}

impl Entry for NknPeer {
    const EXPECTED: &'static str = "a string";
    const NON_EMPTY: Option<&'static str> = None;
    fn check(s: String) -> Result<String, String> {
        check_nkn_address(&s).map(|()| s.to_ascii_lowercase())
    }
}

impl Entry for NknSeed {
    const EXPECTED: &'static str = "a string";
    const NON_EMPTY: Option<&'static str> = None;
    fn check(s: String) -> Result<String, String> {
        check_hex(&s, 64).map_err(|m| format!("expected a seed of {m}"))?;
        Ok(s.to_ascii_lowercase())
    }
}

impl Entry for HttpUrl {
    const EXPECTED: &'static str = "a string";
    const NON_EMPTY: Option<&'static str> = None;
    fn check(url: String) -> Result<String, String> {
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return Err(format!("expected an http:// URL, got {url:?}"));
        }
        Ok(url)
    }
}

impl Entry for NonEmpty {
    const EXPECTED: &'static str = "a string";
    const NON_EMPTY: Option<&'static str> = None;
    fn check(s: String) -> Result<String, String> {
        if s.trim().is_empty() {
            return Err("expected a non-empty string".into());
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------
// Scalars

/// `"strict"` or `"permissive"`, any case.
pub(super) fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let want = "\"strict\" or \"permissive\"";
    let text = string(d, want)?;
    parse_mode(&text).ok_or_else(|| D::Error::custom(format!("expected {want}, got {text:?}")))
}

/// `[Resi] Name`: 1 to 64 printable characters.
pub(super) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let n = string(d, "a string")?;
    if n.trim().is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) {
        return Err(D::Error::custom(format!(
            "expected a non-empty name of at most 64 printable characters, got {n:?}"
        )));
    }
    Ok(n)
}

/// `true` or `false`.
pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match raw(d)? {
        Value::Boolean(b) => Ok(b),
        other => Err(D::Error::custom(format!("expected true or false, got {}", type_name(&other)))),
    }
}

/// `[Nkn] Subclients`: 1 to 64.
pub(super) fn subclients<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match raw(d)? {
        Value::Integer(i) if (1..=64).contains(&i) => Ok(i as u32),
        Value::Integer(i) => Err(D::Error::custom(format!("expected 1 to 64 sub-clients, got {i}"))),
        other => Err(D::Error::custom(format!("expected an integer (1 to 64), got {}", type_name(&other)))),
    }
}

/// An integer in `MIN..=MAX`.
pub(super) fn count<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let v = raw(d)?;
    let out_of_range = |i: i64| D::Error::custom(format!("{i} is out of range (allowed: {MIN} to {MAX})"));
    match v {
        Value::Integer(i) if i >= 0 && (MIN..=MAX).contains(&(i as u64)) => {
            T::try_from(i as u64).map_err(|_| out_of_range(i))
        }
        Value::Integer(i) => Err(out_of_range(i)),
        other => Err(D::Error::custom(format!(
            "expected an integer ({MIN} to {MAX}), got {}",
            type_name(&other)
        ))),
    }
}

/// A duration in `MIN_MS..=MAX_MS` milliseconds: a string with a unit, or
/// a number of seconds.
pub(super) fn duration<'de, D, const MIN_MS: u64, const MAX_MS: u64>(d: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    let given = match raw(d)? {
        Value::String(s) => parse_duration(&s),
        Value::Integer(i) => secs_to_duration(i as f64).ok_or(format!("expected a duration, got {i} seconds")),
        Value::Float(f) => secs_to_duration(f).ok_or(format!("expected a duration, got {f} seconds")),
        other => Err(format!(
            "expected a duration such as \"250ms\", \"1.5s\" or a number of seconds, got {}",
            type_name(&other)
        )),
    }
    .map_err(D::Error::custom)?;
    let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
    if given < min || given > max {
        return Err(D::Error::custom(format!(
            "{} is out of range (allowed: {} to {})",
            fmt_duration(given),
            fmt_duration(min),
            fmt_duration(max)
        )));
    }
    Ok(given)
}

/// A byte size in `MIN..=MAX`: an integer, or a string with a unit.
pub(super) fn size<'de, D, const MIN: usize, const MAX: usize>(d: D) -> Result<usize, D::Error>
where
    D: Deserializer<'de>,
{
    let n = match raw(d)? {
        Value::String(s) => parse_size(&s),
        Value::Integer(i) if i >= 0 => Ok(i as usize),
        Value::Integer(i) => Err(format!("expected a size in bytes, got {i}")),
        other => Err(format!(
            "expected a size such as 65536, \"64KiB\" or \"16MiB\", got {}",
            type_name(&other)
        )),
    }
    .map_err(D::Error::custom)?;
    if !(MIN..=MAX).contains(&n) {
        return Err(D::Error::custom(format!(
            "{} is out of range (allowed: {} to {})",
            fmt_size(n),
            fmt_size(MIN),
            fmt_size(MAX)
        )));
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// Parsing and formatting (public: the CLI, the demo and Python use them)

/// `"strict"` or `"permissive"`.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Strict => "strict",
        Mode::Permissive => "permissive",
    }
}

/// Parses a mode name, case-insensitively.
pub fn parse_mode(s: &str) -> Option<Mode> {
    match s.trim().to_ascii_lowercase().as_str() {
        "strict" => Some(Mode::Strict),
        "permissive" => Some(Mode::Permissive),
        _ => None,
    }
}

/// Formats a duration the way the file accepts it (`"250ms"`, `"1.5s"`,
/// `"250us"`, `"1500ns"`).
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if d.subsec_nanos() % 1_000_000 != 0 && d < Duration::from_millis(1) {
        match d.subsec_nanos() % 1000 {
            0 => format!("{}us", d.as_micros()),
            _ => format!("{}ns", d.as_nanos()),
        }
    } else if ms < 1000.0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Formats a byte size (`"16MiB"`, `"1500B"`).
pub fn fmt_size(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (u, name) in UNITS {
        if n >= u && n % u == 0 {
            return format!("{}{name}", n / u);
        }
    }
    format!("{n}B")
}

/// Splits `"1.5s"` into its number and unit.
fn number_and_unit(t: &str) -> (&str, &str) {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    (num, unit.trim())
}

/// Parses a duration: a number with unit (`ns`, `us`, `ms`, `s`, `m`, `h`),
/// e.g. `"250ms"`, `"1.5s"`, `"2m"`. A bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = number_and_unit(s.trim());
    let bad = || format!("expected a duration such as \"250ms\", \"1.5s\" or \"2m\", got {s:?}");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "" | "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {s:?} (use ms, s, m or h, e.g. \"250ms\", \"1.5s\", \"2m\")"
            ))
        }
    };
    secs_to_duration(secs).ok_or_else(|| format!("duration {s:?} is out of range"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return None;
    }
    Some(Duration::from_nanos((secs * 1e9).round() as u64))
}

/// Parses a byte size: an integer, or a number with unit (`B`, `KB`, `KiB`,
/// `MB`, `MiB`, `GB`, `GiB`), e.g. `"16MiB"`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (num, unit) = number_and_unit(s.trim());
    let bad = || format!("expected a size such as 65536, \"64KiB\" or \"16MiB\", got {s:?}");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => (1u64 << 20) as f64,
        "gb" => 1e9,
        "gib" | "g" => (1u64 << 30) as f64,
        u => return Err(format!("unknown size unit {u:?} in {s:?} (use B, KiB, MiB or GiB, e.g. \"16MiB\")")),
    };
    let v = n * mult;
    if v.fract() != 0.0 {
        return Err(format!("size {s:?} is not a whole number of bytes"));
    }
    if v > (1u64 << 50) as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(v as usize)
}

/// Checks `host:port` (IPv6 hosts in brackets). Port 0 is allowed only for
/// listening addresses.
pub fn check_host_port(s: &str, listen: bool) -> Result<(), String> {
    let want = "expected \"host:port\"";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{want}, got {s:?} (no port)"));
    };
    check_host(host).map_err(|why| format!("{want}, got {s:?} ({why})"))?;
    let port: u32 = match port.parse() {
        Ok(p) if !port.starts_with('+') => p,
        _ => return Err(format!("{want}, got {s:?} (port {port:?} is not a number)")),
    };
    if port > 65535 {
        return Err(format!("port {port} in {s:?} is out of range (0 to 65535)"));
    }
    if port == 0 && !listen {
        return Err(format!("port 0 in {s:?}: an upstream needs a real port (1 to 65535)"));
    }
    Ok(())
}

/// The host part of `host:port`: a name, an IPv4 address, or an IPv6
/// address in brackets. The error says what is wrong with it.
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("no host");
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err("unbalanced brackets around the host");
    }
    if host.starts_with('[') {
        return match host[1..host.len() - 1].parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err("bad IPv6 address"),
        };
    }
    if host.contains(':') {
        return Err("write IPv6 hosts in brackets, e.g. \"[::1]:4001\"");
    }
    if host.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')) {
        return Err("bad host name");
    }
    Ok(())
}

fn check_hex(s: &str, len: usize) -> Result<(), String> {
    if s.len() != len || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        let hint = if !s.chars().all(|c| c.is_ascii_hexdigit()) {
            "has non-hex characters".to_string()
        } else {
            format!("has {} characters", s.len())
        };
        return Err(format!("{len} hex digits, got {s:?} ({hint})"));
    }
    Ok(())
}

/// An NKN address: an optional `identifier.` prefix and a 64-hex-digit
/// public key.
pub fn check_nkn_address(s: &str) -> Result<(), String> {
    let (ident, key) = match s.rsplit_once('.') {
        Some((i, k)) => (Some(i), k),
        None => (None, s),
    };
    if ident == Some("") {
        return Err(format!(
            "expected an NKN address ([identifier.]public key), got {s:?} (empty identifier)"
        ));
    }
    check_hex(key, 64).map_err(|m| {
        format!("expected an NKN address ([identifier.] + public key of 64 hex digits), got {s:?}: the key is {m}")
    })
}
