//! The JSON that `ls --json` and `stat --json` print, one object per process: every field of
//! the page's table (crates/common/src/stats.rs) under its JSON name, then what the reader
//! adds. Field names are a contract (docs/DESIGN.md): add fields freely, never rename.
use crate::pages::{Entry, State};
use memtrim_common::fields::{Field, Kind, Type, Unit};
use memtrim_common::json::escaped;
use memtrim_common::page::{FIELDS, Stats};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

/// serde_json's output with the characters the library's JSON escapes escaped too
/// (memtrim_common::json::escaped: DEL and the line and paragraph separators).
struct Escaping;

impl serde_json::ser::Formatter for Escaping {
    fn write_string_fragment<W: ?Sized + std::io::Write>(&mut self, w: &mut W, fragment: &str) -> std::io::Result<()> {
        let mut done = 0;
        for (i, c) in fragment.char_indices().filter(|(_, c)| escaped(*c)) {
            w.write_all(&fragment.as_bytes()[done..i])?;
            write!(w, "\\u{:04x}", c as u32)?;
            done = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[done..])
    }
}

fn to_string(v: &impl Serialize) -> String {
    let mut out = Vec::new();
    // Serializing to memory fails only on a map with non-string keys: none here.
    let _ = v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, Escaping));
    String::from_utf8(out).unwrap_or_default()
}

/// Microseconds as milliseconds with three decimals (`12.345`).
pub fn ms_from_us(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// A field's JSON value, by its kind and unit: a state by its name (null when it has none or
/// does not apply), a flag as a boolean, per-label counters as an object, a ratio in
/// thousandths as a number (null when off), microseconds as milliseconds where the JSON name
/// says `_ms`; numbers otherwise, whether or not they apply yet, but null for a field the page's
/// writer (an older memtrim) does not have and for a count the page marks as not measured yet.
fn value(f: &Field, s: &Stats) -> Option<Out> {
    let n = f.number(s);
    Some(Out::Value(match (f.kind, f.ty, f.unit) {
        (Kind::Check, ..) => return None,
        _ if !f.written(s) => Value::Null,
        // the page's marker of a count not measured yet
        (_, Type::U64, _) if n == u64::MAX && !f.applies(s) => Value::Null,
        (Kind::Counters(_, names), ..) => return Some(Out::PerLabel(names, f.numbers(s))),
        (_, Type::Text(_), _) => json!(f.text(s)),
        (Kind::State(_), ..) => f.state(s).map_or(Value::Null, |name| json!(name)),
        (Kind::Flag, ..) => json!(n != 0),
        (_, _, Unit::Permille) if f.applies(s) => json!(n as f64 / 1000.0),
        (_, _, Unit::Permille) => Value::Null,
        (_, _, Unit::Us) if f.json.ends_with("_ms") => json!(n as f64 / 1000.0),
        _ => json!(n),
    }))
}

enum Out {
    Value(Value),
    /// An object in the labels' order.
    PerLabel(&'static [&'static str], Vec<u64>),
}

impl Serialize for Out {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Value(v) => v.serialize(ser),
            Out::PerLabel(names, values) => {
                let mut m = ser.serialize_map(Some(names.len()))?;
                for (k, v) in names.iter().zip(values) {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// One process: its fields, then what the reader adds.
struct Process<'a> {
    e: &'a Entry,
    now_ms: u64,
}

impl Serialize for Process<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let s = &self.e.stats;
        let mut m = ser.serialize_map(None)?;
        for f in FIELDS {
            if let Some(v) = value(f, s) {
                m.serialize_entry(f.json, &v)?;
            }
        }
        m.serialize_entry("state", if self.e.state == State::Live { "live" } else { "gone" })?;
        m.serialize_entry("age_ms", &self.now_ms.saturating_sub(s.updated_at_ms))?;
        m.serialize_entry("frag_ratio", &((s.frag_ratio() * 1e4).round() / 1e4))?;
        m.serialize_entry("live_blocks", &s.allocs.saturating_sub(s.frees))?;
        m.serialize_entry("page", &self.e.path.to_string_lossy())?;
        m.end()
    }
}

/// One process as a JSON object on one line. `now_ms` is the reader's unix time, for the age.
pub fn object(e: &Entry, now_ms: u64) -> String {
    to_string(&Process { e, now_ms })
}

/// A JSON array of objects, one per line.
pub fn array(entries: &[&Entry], now_ms: u64) -> String {
    if entries.is_empty() {
        return "[]".into();
    }
    let rows: Vec<String> = entries.iter().map(|e| format!("  {}", object(e, now_ms))).collect();
    format!("[\n{}\n]", rows.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrim_common::page::Reason;
    use std::path::PathBuf;

    #[test]
    fn escapes() {
        assert_eq!(to_string(&"a\"b\\c\n\x01\x7f"), "\"a\\\"b\\\\c\\n\\u0001\\u007f\"");
        assert_eq!(to_string(&"é\u{2028}x"), "\"é\\u2028x\"");
        assert_eq!(ms_from_us(12_345), "12.345");
        assert_eq!(ms_from_us(7), "0.007");
    }

    #[test]
    fn fields_keep_their_names_and_forms() {
        let mut s = Stats { pid: 7, allocator: 1, live_bytes: 5, trims: 1, last_trim_us: 1_500, frag_threshold_permille: 250, idle: 1, ..Default::default() };
        s.comm[..3].copy_from_slice(b"a\x7fb");
        s.releases_by_reason[Reason::Idle as usize] = 1;
        s.last_reason = Reason::Idle as u64;
        let o: Value = serde_json::from_str(&object(&Entry { path: PathBuf::from("/p"), state: State::Live, stats: s }, 0)).unwrap();
        assert_eq!(o["pid"], 7);
        assert_eq!(o["comm"], "a\x7fb");
        assert_eq!(o["allocator"], "jemalloc");
        assert_eq!(o["live_bytes"], 5);
        assert_eq!(o["last_trim_ms"], 1.5);
        assert_eq!(o["py_last_hold_us"], 0);
        assert_eq!(o["frag_threshold"], 0.25);
        assert_eq!(o["idle"], true);
        assert_eq!(o["releases_by_reason"]["idle"], 1);
        assert!(
            object(&Entry { path: PathBuf::new(), state: State::Live, stats: s }, 0)
                .contains(r#""releases_by_reason":{"request":0,"api":0,"retained":0,"idle":1,"#)
        );
        assert_eq!(o["last_reason"], "idle");
        assert_eq!(o["limit_metric"], Value::Null);
        assert_eq!(o["py_state"], "none");
        assert_eq!((o["state"].as_str(), o["page"].as_str()), (Some("live"), Some("/p")));
        assert!(o.get("check").is_none());
        let none = Stats { frag_threshold_permille: u64::MAX, ..Default::default() };
        let o: Value = serde_json::from_str(&object(&Entry { path: PathBuf::new(), state: State::Gone, stats: none }, 0)).unwrap();
        assert_eq!((&o["frag_threshold"], &o["last_reason"]), (&Value::Null, &Value::Null));
    }

    /// A count the page marks absent (u64::MAX: no release looked at again yet) is null, not
    /// the marker as a number.
    #[test]
    fn an_absent_count_is_null() {
        let s = Stats { last_release_pages: 12, last_refault_pages: u64::MAX, ..Default::default() };
        let o: Value = serde_json::from_str(&object(&Entry { path: PathBuf::new(), state: State::Live, stats: s }, 0)).unwrap();
        assert_eq!((&o["last_release_pages"], &o["last_refault_pages"]), (&Value::from(12), &Value::Null));
    }
}
