//! The report file the library writes (src/worker/memory_report/): the allocator's view, read
//! with serde. Members it does not know are ignored and missing ones read as zero, empty or
//! absent, so that a report with fields added later still reads.
use serde::Deserialize;
use std::collections::BTreeMap;

/// What identifies a report: read first, so that one of another version is refused by its
/// version rather than by a field it names differently.
#[derive(Deserialize)]
struct Header {
    version: u64,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Report {
    pub pid: u64,
    pub start_ticks: u64,
    pub request: u64,
    pub allocator: String,
    pub live_bytes: u64,
    pub glibc: Glibc,
    pub jemalloc: Option<Jemalloc>,
    pub python: Option<Python>,
    pub ruby: bool,
    /// memtrim's own ranges by name: [start, length, resident].
    pub own: BTreeMap<String, [u64; 3]>,
    pub cost: Cost,
    pub notes: Vec<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Glibc {
    pub arenas: Vec<GlibcArena>,
    /// Every thread heap: [base, size, mprotect size, resident, arena nr or -1].
    pub heaps: Vec<(u64, u64, u64, u64, i64)>,
    pub mmapped_count: u64,
    pub mmapped_bytes: u64,
    /// [start, length, resident].
    pub mmapped_blocks: Vec<[u64; 3]>,
    pub release_bytes: u64,
    pub heap_size_max: u64,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct GlibcArena {
    pub nr: u64,
    pub main: bool,
    pub system_bytes: u64,
    pub in_use_bytes: u64,
    pub free_fast_bytes: u64,
    pub free_fast_count: u64,
    pub free_bin_bytes: u64,
    pub free_bin_count: u64,
    pub top_bytes: u64,
    pub resident_bytes: u64,
    pub top_resident_bytes: u64,
    pub release_bytes: u64,
    pub lock_us: u64,
    /// How its heaps were found: exact, ambiguous, nearest, brk, or none.
    #[serde(rename = "match")]
    pub matched: String,
    /// The free chunk histogram: [from, to, total, count, kind].
    pub sizes: Vec<(u64, u64, u64, u64, String)>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Jemalloc {
    pub page: u64,
    pub refresh_us: u64,
    pub resident: u64,
    pub mapped: u64,
    pub retained: u64,
    pub metadata: u64,
    pub dirty_decay_ms: i64,
    pub muzzy_decay_ms: i64,
    pub arenas: Vec<JemallocArena>,
    pub release_bytes: u64,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct JemallocArena {
    pub index: u64,
    pub huge: bool,
    pub nthreads: u64,
    pub pactive: u64,
    pub pdirty: u64,
    pub pmuzzy: u64,
    pub resident: u64,
    pub small_allocated: u64,
    pub large_allocated: u64,
    pub release_bytes: u64,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Python {
    pub state: u64,
    pub fresh_walk: bool,
    pub allocated_bytes: u64,
    pub free_bytes: u64,
    pub empty_bytes: u64,
    pub empty_pools: u64,
    /// CPython's arenas: [start, length, resident].
    pub ranges: Vec<[u64; 3]>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Cost {
    pub total_us: u64,
    pub cpu_us: u64,
    pub malloc_info_us: u64,
    pub max_lock_us: u64,
    pub max_lock_arena: u64,
}

/// Reads a report of this memtrim's version.
pub fn parse(raw: &str) -> Result<Report, String> {
    let header: Header = serde_json::from_str(raw).map_err(|e| format!("not a report: {e}"))?;
    if header.version != memtrim_common::report::VERSION {
        return Err(format!(
            "the report is of version {}, this memtrim reads version {} (another memtrim version in the process?)",
            header.version,
            memtrim_common::report::VERSION
        ));
    }
    serde_json::from_str(raw).map_err(|e| format!("not a report: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_library_writes_and_ignores_the_rest() {
        let r = parse(r#"{"version":1,"pid":5,"request":4294967295,"allocator":"glibc","new_field":[1,{"x":null}],"glibc":{"arenas":[{"nr":1,"match":"exact","sizes":[[17,32,256,8,"fast"]]}],"heaps":[[67108864,135168,135168,4096,-1]],"mmapped_blocks":[[1,18446744073709551615,0]]},"own":{"side_pool":[1,2,3]},"notes":["a \"quoted\" note"]}"#).unwrap();
        assert_eq!((r.pid, r.request, r.allocator.as_str()), (5, u32::MAX as u64, "glibc"));
        assert_eq!(r.glibc.arenas[0].matched, "exact");
        assert_eq!(r.glibc.arenas[0].sizes[0], (17, 32, 256, 8, "fast".to_string()));
        assert_eq!(r.glibc.heaps[0].4, -1);
        assert_eq!(r.glibc.mmapped_blocks[0][1], u64::MAX);
        assert_eq!(r.own["side_pool"], [1, 2, 3]);
        assert_eq!(r.notes, ["a \"quoted\" note"]);
        assert!(r.jemalloc.is_none() && r.python.is_none() && !r.ruby);
    }

    #[test]
    fn refuses_another_version_and_what_is_not_a_report() {
        let e = parse(r#"{"version":2,"glibc":"renamed"}"#).unwrap_err();
        assert!(e.contains("version 2, this memtrim reads version 1"), "{e}");
        assert!(parse("{\"version\":1} x").unwrap_err().starts_with("not a report"));
        assert!(parse(r#"{"version":1,"glibc":{"heaps":[[1,2]]}}"#).is_err(), "a heap is five numbers");
        assert!(parse("[").is_err());
    }
}
