//! The pre-pass before serde: section and key names as written are matched
//! to the names of the section structs.
//!
//! The original file capitalises `[Tcp] Address`; Python passes
//! `heartbeat_interval`; people type `dead-timeout`. Serde matches names
//! exactly, so this pass rewrites every name to its canonical form first
//! (compared in lower case without `_` and `-`). Whatever it cannot place
//! (an unknown section or key, a name given twice, a section that is not a
//! table) becomes an error with the most useful hint we can give — the
//! closest known name, or the section a misplaced key belongs to — and is
//! dropped, so the rest of the file is still checked.
//!
//! The known names come from the structs themselves ([`field_names`]), so
//! a key added to a section struct is known here without a second list.

use std::collections::BTreeMap;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml::{Table, Value};

use super::values::type_name;
use super::Problems;

/// A section's canonical name and its keys' canonical names.
pub(super) type Schema = [(&'static str, &'static [&'static str])];

/// The serde field names of struct `T` (after its `rename_all`), read by
/// letting it ask a probe deserializer for a struct.
pub(super) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The form names are compared in: lower case, without `_` and `-`.
fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn find(known: &[&'static str], given: &str) -> Option<&'static str> {
    let g = norm(given);
    known.iter().copied().find(|k| norm(k) == g)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `given`, if close enough to be a likely typo.
fn closest(given: &str, known: &[&'static str]) -> Option<&'static str> {
    let g = norm(given);
    known
        .iter()
        .map(|k| (levenshtein(&g, &norm(k)), *k))
        .filter(|(d, k)| *d <= 2.max(norm(k).len() / 4) && *d < norm(k).len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The sections (other than `except`) that have a key named `given`.
fn owner_of(schema: &Schema, given: &str, except: &str) -> Option<&'static str> {
    schema
        .iter()
        .filter(|(s, _)| *s != except)
        .find(|(_, keys)| find(keys, given).is_some())
        .map(|(s, _)| *s)
}

/// `[Tcp], [Nkn] or [Tls]` (with `last` as the final separator).
fn section_list(schema: &Schema, last: &str) -> String {
    let names: Vec<String> = schema.iter().map(|(s, _)| format!("[{s}]")).collect();
    match names.split_last() {
        Some((tail, head)) if !head.is_empty() => format!("{}{last}{tail}", head.join(", ")),
        _ => names.join(", "),
    }
}

/// Rewrites the names of `table` to their canonical forms; everything that
/// cannot be placed is reported to `p` and left out.
pub(super) fn normalise(table: Table, schema: &Schema, p: &mut Problems) -> Table {
    let sections: Vec<&'static str> = schema.iter().map(|(s, _)| *s).collect();
    let mut out = Table::new();
    let mut written_as: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in table {
        let Some(canonical) = find(&sections, &name) else {
            unknown_top_level(&name, &value, schema, p);
            continue;
        };
        let section_key = format!("[{canonical}]");
        let Value::Table(t) = value else {
            p.add(Some(section_key), format!("expected a section (table), got {}", type_name(&value)));
            continue;
        };
        if let Some(prev) = written_as.get(canonical) {
            p.add(
                Some(section_key),
                format!("section given twice (as [{prev}] and [{name}]; names are case-insensitive)"),
            );
            continue;
        }
        written_as.insert(canonical, name);
        let keys = schema.iter().find(|(s, _)| *s == canonical).map_or(&[][..], |(_, k)| *k);
        out.insert(canonical.to_string(), Value::Table(section(canonical, keys, t, schema, p)));
    }
    out
}

fn unknown_top_level(name: &str, value: &Value, schema: &Schema, p: &mut Problems) {
    let sections: Vec<&'static str> = schema.iter().map(|(s, _)| *s).collect();
    if let Value::Table(_) = value {
        let msg = match closest(name, &sections) {
            Some(s) => format!("unknown section (did you mean [{s}]?)"),
            None => format!("unknown section (known sections: {})", section_list(schema, ", ")),
        };
        p.add(Some(format!("[{name}]")), msg);
        return;
    }
    let msg = match owner_of(schema, name, "") {
        Some(s) => format!("unknown top-level key; keys belong in a section (did you mean to put it under [{s}]?)"),
        None => format!("unknown top-level key; keys belong in a section: {}", section_list(schema, " or ")),
    };
    p.add(Some(name.to_string()), msg);
}

/// The keys of one section, renamed; unknown and doubled keys reported.
fn section(name: &str, known: &[&'static str], table: Table, schema: &Schema, p: &mut Problems) -> Table {
    let mut out = Table::new();
    let mut written_as: BTreeMap<&str, String> = BTreeMap::new();
    for (given, value) in table {
        let Some(k) = find(known, &given) else {
            let msg = match (closest(&given, known), owner_of(schema, &given, name)) {
                (Some(k), _) => {
                    // A misspelt key stands for the one it resembles: no
                    // second error saying that one is missing.
                    p.mark(format!("[{name}] {k}"));
                    format!("unknown key (did you mean {k}?)")
                }
                (None, Some(s)) => format!("unknown key in [{name}] (it is a key of [{s}])"),
                (None, None) => format!("unknown key (known keys of [{name}]: {})", known.join(", ")),
            };
            p.add(Some(format!("[{name}] {given}")), msg);
            continue;
        };
        let key = format!("[{name}] {k}");
        if let Some(prev) = written_as.get(k) {
            p.add(Some(key), format!("given twice (as {prev} and {given}; keys are case-insensitive)"));
            continue;
        }
        written_as.insert(k, given);
        if let Some(date) = date_in(&value) {
            // Serde would hand a date/time on as a string; no key takes one.
            p.add(Some(key), format!("got {}, which no key takes", type_name(date)));
            continue;
        }
        out.insert(k.to_string(), value);
    }
    out
}

/// A date/time in `v` (or in a list in it).
fn date_in(v: &Value) -> Option<&Value> {
    match v {
        Value::Datetime(_) => Some(v),
        Value::Array(a) => a.iter().find_map(date_in),
        _ => None,
    }
}
