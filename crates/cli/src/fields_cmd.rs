//! `memtrim fields [--json]`: the stats page's fields as the table declares them (name, JSON
//! name, offset in the stats, type, unit, kind, help), so that a reader in another language
//! (a C program has include/memtrim.h) takes the layout from here, not from a copy of it.
use crate::output::print_or_quiet;
use memtrim_common::fields::{Kind, Type, Unit};
use memtrim_common::page::{FIELDS, FIRST_STATS_BYTES, LAYOUT_VERSION};
use serde_json::json;

#[derive(clap::Args)]
pub struct Opts {
    /// One JSON object: the layout version and the fields in order
    #[arg(long)]
    json: bool,
}

fn type_name(t: Type) -> String {
    match t {
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::Text(n) => format!("text[{n}]"),
        Type::U64s(n) => format!("u64[{n}]"),
    }
}

/// The unit's name in `fields --json`, spelled out: readers in other languages match on it.
fn unit_name(u: Unit) -> &'static str {
    match u {
        Unit::None => "none",
        Unit::Count => "count",
        Unit::Bytes => "bytes",
        Unit::Us => "us",
        Unit::Ms => "ms",
        Unit::UnixMs => "unixms",
        Unit::PerSec => "persec",
        Unit::Permille => "permille",
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Check => "check",
        Kind::Id => "id",
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Flag => "flag",
        Kind::State(_) => "state",
        Kind::Counters(..) => "counters",
    }
}

pub fn main(o: Opts) -> i32 {
    if o.json {
        let fields: Vec<_> = FIELDS
            .iter()
            .map(|f| {
                let labels = match f.kind {
                    Kind::Counters(label, names) => json!({ "label": label, "names": names }),
                    _ => serde_json::Value::Null,
                };
                json!({ "name": f.name, "json": f.json, "section": f.section, "offset": f.offset, "size": f.ty.size(),
                        "type": type_name(f.ty), "unit": unit_name(f.unit), "kind": kind_name(f.kind),
                        "counters": labels, "help": f.help })
            })
            .collect();
        return print_or_quiet(&json!({ "layout_version": LAYOUT_VERSION, "first_stats_bytes": FIRST_STATS_BYTES, "fields": fields }).to_string());
    }
    let rows: Vec<String> = FIELDS.iter().map(|f| format!("{:5} {:9} {:<24} {}", f.offset, type_name(f.ty), f.json, f.help)).collect();
    print_or_quiet(&rows.join("\n"))
}
