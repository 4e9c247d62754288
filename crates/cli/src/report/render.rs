//! The report's output: text for people, or one JSON object (the kernel's view by category,
//! the figures and the verdict, and the allocator's view as the library wrote it).
use super::allocator_view::Report;
use super::analysis::{Analysis, pct};
use super::classify::Cat;
use crate::{json, pages, view};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use std::fmt::Write as _;

/// The report as text: where the memory is, the arenas, the verdict.
pub fn to_text(a: &Analysis, r: &Report, pid: u32, comm: &str) -> String {
    let mut o = String::new();
    let rss = a.rss();
    let _ = writeln!(
        o,
        "pid {pid} ({}), allocator {}: RSS {}, PSS {}, swap {}",
        pages::printable(comm),
        r.allocator,
        view::size(rss),
        view::size(a.smaps.pss),
        view::size(a.smaps.swap)
    );
    let _ = writeln!(o, "\nwhere the memory is (kernel view, /proc/{pid}/smaps)");
    let _ = writeln!(o, "  {:<38} {:>10} {:>10} {:>10} {:>8}", "", "RSS", "PSS", "swap", "mappings");
    for (c, u) in &a.usage {
        if u.rss == 0 && u.pss == 0 && u.swap == 0 && u.mappings == 0 {
            continue;
        }
        let _ = writeln!(o, "  {:<38} {:>10} {:>10} {:>10} {:>8}", c.title(a.jemalloc), view::size(u.rss), view::size(u.pss), view::size(u.swap), u.mappings);
    }
    let named = a.named_rss();
    let _ = writeln!(
        o,
        "  {:<38} {:>10} {:>10} {:>10} {:>8}   ({:.1} % of VmRSS {} in named categories)",
        "total",
        view::size(a.smaps.rss),
        view::size(a.smaps.pss),
        view::size(a.smaps.swap),
        a.smaps.mappings,
        pct(named, rss),
        view::size(rss)
    );

    let (g, c) = (&r.glibc, &r.cost);
    let arenas = &g.arenas;
    if !arenas.is_empty() {
        let _ = writeln!(
            o,
            "\nglibc arenas{} (malloc_info in {} ms; longest arena lock {} ms)",
            if a.jemalloc { ", memtrim's own allocations" } else { "" },
            json::ms_from_us(c.malloc_info_us),
            json::ms_from_us(c.max_lock_us)
        );
        let _ = writeln!(
            o,
            "  {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9}",
            "arena", "system", "in use", "free bins", "top", "free fast", "chunks", "resident", "release", "lock ms"
        );
        for x in arenas {
            let label = if x.main { "0*".to_string() } else { x.nr.to_string() };
            let _ = writeln!(
                o,
                "  {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9}",
                label,
                view::size(x.system_bytes),
                view::size(x.in_use_bytes),
                view::size(x.free_bin_bytes),
                view::size(x.top_bytes),
                view::size(x.free_fast_bytes),
                x.free_bin_count + x.free_fast_count,
                if x.matched == "none" { "?".to_string() } else { view::size(x.resident_bytes) },
                view::size(x.release_bytes),
                json::ms_from_us(x.lock_us)
            );
        }
        let _ = writeln!(o, "  (* the main arena, in [heap]; the others are thread arenas)");
        let _ = writeln!(o, "  mmapped blocks: {}, {}", g.mmapped_count, view::size(g.mmapped_bytes));
        if !a.jemalloc && a.histogram.iter().any(|h| h.1 > 0) {
            let _ = write!(o, "  free chunks by size:");
            for (label, n, b) in a.histogram.iter().filter(|h| h.1 > 0) {
                let _ = write!(o, "  {label}: {n} ({})", view::size(*b));
            }
            o.push('\n');
        }
    }
    if let Some(je) = &r.jemalloc {
        let page = je.page.max(1);
        let _ = writeln!(
            o,
            "\njemalloc arenas (resident {}, mapped {}, retained {}, metadata {}; decay dirty {} ms, muzzy {} ms)",
            view::size(je.resident),
            view::size(je.mapped),
            view::size(je.retained),
            view::size(je.metadata),
            je.dirty_decay_ms,
            je.muzzy_decay_ms
        );
        let _ = writeln!(
            o,
            "  {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "arena", "threads", "active", "allocated", "dirty", "muzzy", "resident", "release"
        );
        for x in &je.arenas {
            let label = if x.huge { format!("{} huge", x.index) } else { x.index.to_string() };
            let _ = writeln!(
                o,
                "  {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                label,
                x.nthreads,
                view::size(x.pactive * page),
                view::size(x.small_allocated + x.large_allocated),
                view::size(x.pdirty * page),
                view::size(x.pmuzzy * page),
                view::size(x.resident),
                view::size(x.release_bytes)
            );
        }
    }
    let _ = writeln!(o, "\nverdict");
    for line in &a.verdict {
        let _ = writeln!(o, "  {line}");
    }
    for n in &r.notes {
        let _ = writeln!(o, "  note: {}", pages::printable(n));
    }
    o.truncate(o.trim_end().len());
    o
}

#[derive(Serialize)]
struct Category {
    title: &'static str,
    rss_bytes: u64,
    pss_bytes: u64,
    swap_bytes: u64,
    mappings: u64,
}

#[derive(Serialize)]
struct FreeBytes<'a> {
    arena: &'a str,
    free_bytes: u64,
}

#[derive(Serialize)]
struct HistogramEntry {
    size: &'static str,
    count: u64,
    bytes: u64,
}

/// `memtrim report --json`. Field names are a contract, as for `ls --json` and `stat --json`.
#[derive(Serialize)]
struct Output<'a> {
    pid: u32,
    comm: &'a str,
    allocator: &'a str,
    rss_bytes: u64,
    smaps_rss_bytes: u64,
    pss_bytes: u64,
    swap_bytes: u64,
    mappings: u64,
    /// In the order of the text output.
    #[serde(serialize_with = "in_order")]
    categories: Vec<(&'static str, Category)>,
    thread_top_resident_bytes: u64,
    free_resident_bytes: Option<u64>,
    named_rss_bytes: u64,
    named_fraction: f64,
    heap_bytes: u64,
    live_bytes: u64,
    retained_bytes: u64,
    retained_fraction: f64,
    free_bytes: u64,
    release_bytes: u64,
    free_by_arena: Vec<FreeBytes<'a>>,
    free_chunk_histogram: Vec<HistogramEntry>,
    verdict: &'a [String],
    allocator_view: &'a RawValue,
}

fn in_order<S: Serializer>(v: &[(&'static str, Category)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, c) in v {
        m.serialize_entry(k, c)?;
    }
    m.end()
}

/// A fraction with four decimals.
fn fraction(part: u64, whole: u64) -> f64 {
    (pct(part, whole) * 100.0).round() / 10_000.0
}

/// The report as one JSON object; `raw` is the report file as the library wrote it.
pub fn to_json(a: &Analysis, r: &Report, raw: &RawValue, pid: u32, comm: &str) -> String {
    let rss = a.rss();
    let named = a.named_rss();
    let out = Output {
        pid,
        comm,
        allocator: &r.allocator,
        rss_bytes: rss,
        smaps_rss_bytes: a.smaps.rss,
        pss_bytes: a.smaps.pss,
        swap_bytes: a.smaps.swap,
        mappings: a.smaps.mappings,
        categories: a
            .usage
            .iter()
            .map(|(c, u): &(Cat, _)| {
                (c.key(), Category { title: c.title(a.jemalloc), rss_bytes: u.rss, pss_bytes: u.pss, swap_bytes: u.swap, mappings: u.mappings })
            })
            .collect(),
        thread_top_resident_bytes: a.thread_tops,
        free_resident_bytes: a.free_resident,
        named_rss_bytes: named,
        named_fraction: fraction(named, rss),
        heap_bytes: a.heap,
        live_bytes: a.live,
        retained_bytes: a.retained,
        retained_fraction: fraction(a.retained, a.heap),
        free_bytes: a.free_total,
        release_bytes: a.release,
        free_by_arena: a.free.iter().map(|(arena, b)| FreeBytes { arena, free_bytes: *b }).collect(),
        free_chunk_histogram: a.histogram.iter().map(|&(size, count, bytes)| HistogramEntry { size, count, bytes }).collect(),
        verdict: &a.verdict,
        allocator_view: raw,
    };
    serde_json::to_string(&out).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}
