//! The figures the verdict and the output are made of: the kernel's view by category (with
//! jemalloc's resident bytes moved out of "other anonymous", its extents having no addresses to
//! be told apart by), and the allocator's view: heap, live and retained bytes, the free bytes of
//! each arena, what a release would return, the free chunk histogram.
use super::allocator_view::{Jemalloc, Report};
use super::classify::{Cat, Usage, classify, ranges, scale};
use super::verdict::verdict;
use crate::smaps::Mapping;

pub struct Analysis {
    pub jemalloc: bool,
    pub usage: Vec<(Cat, Usage)>,
    pub smaps: Usage,
    pub vm_rss: u64,
    /// The allocator's view.
    pub heap: u64,
    pub live: u64,
    pub retained: u64,
    /// (arena label, free bytes), most first.
    pub free: Vec<(String, u64)>,
    pub free_total: u64,
    /// glibc: free bytes still resident (the arenas' resident bytes less those in use), and
    /// the resident part of the thread arenas' top chunks (which malloc_trim alone leaves).
    pub free_resident: Option<u64>,
    pub thread_tops: u64,
    pub release: u64,
    pub verdict: Vec<String>,
    /// Free chunk histogram over every glibc arena (host's backend only): (label, count, bytes).
    pub histogram: Vec<(&'static str, u64, u64)>,
}

impl Analysis {
    pub fn get(&self, c: Cat) -> Usage {
        self.usage.iter().find(|(k, _)| *k == c).map(|x| x.1).unwrap_or_default()
    }

    pub fn named_rss(&self) -> u64 {
        self.usage.iter().filter(|(c, _)| *c != Cat::Unclassified).map(|(_, u)| u.rss).sum()
    }

    /// The process's RSS: VmRSS, or the sum over smaps if that could not be read.
    pub fn rss(&self) -> u64 {
        if self.vm_rss > 0 { self.vm_rss } else { self.smaps.rss }
    }
}

/// `part` as a percentage of `whole` (0 of nothing).
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// What a free chunk of about `size` bytes is called in the histogram.
const BUCKETS: [(&str, u64); 7] = [
    ("< 1 KiB", 1 << 10),
    ("1-4 KiB", 4 << 10),
    ("4-16 KiB", 16 << 10),
    ("16-64 KiB", 64 << 10),
    ("64-256 KiB", 256 << 10),
    ("256 KiB-1 MiB", 1 << 20),
    (">= 1 MiB", u64::MAX),
];

pub fn analyse(r: &Report, maps: &[Mapping], vm_rss: u64, shm: &str) -> Analysis {
    let jemalloc = r.allocator == "jemalloc";
    let known = ranges(r);
    let mut usage = classify(maps, &known, shm);
    let mut smaps = Usage::default();
    for m in maps {
        smaps.rss += m.rss;
        smaps.pss += m.pss;
        smaps.swap += m.swap;
        smaps.mappings += 1;
    }
    let g = &r.glibc;
    let (heap, release, mut free): (u64, u64, Vec<(String, u64)>) = if jemalloc {
        let none = Jemalloc::default();
        let je = r.jemalloc.as_ref().unwrap_or(&none);
        let page = je.page.max(1);
        // jemalloc's extents are not told apart by address: its resident figure moves from
        // "other anonymous" to its own category.
        let other = usage.iter().find(|(c, _)| *c == Cat::OtherAnon).map(|x| x.1).unwrap_or_default();
        let moved = je.resident.min(other.rss);
        let moved_pss = scale(other.pss, moved, other.rss);
        for (c, u) in usage.iter_mut() {
            if *c == Cat::OtherAnon {
                u.rss -= moved;
                u.pss -= moved_pss;
            } else if *c == Cat::Jemalloc {
                u.rss += moved;
                u.pss += moved_pss;
                u.mappings = je.arenas.len() as u64;
            }
        }
        let free = je
            .arenas
            .iter()
            .map(|a| {
                let unused = (a.pactive * page).saturating_sub(a.small_allocated + a.large_allocated);
                let label = if a.huge { format!("{} (huge)", a.index) } else { a.index.to_string() };
                (label, (a.pdirty + a.pmuzzy) * page + unused)
            })
            .collect();
        (je.resident, je.release_bytes, free)
    } else {
        let heap = g.arenas.iter().map(|a| a.system_bytes).sum::<u64>() + g.mmapped_bytes;
        let free = g
            .arenas
            .iter()
            .map(|a| {
                let label = if a.main { "0 (main)".to_string() } else { a.nr.to_string() };
                (label, a.free_fast_bytes + a.free_bin_bytes + a.top_bytes)
            })
            .collect();
        (heap, g.release_bytes, free)
    };
    free.sort_by_key(|f| std::cmp::Reverse(f.1));
    let free_total: u64 = free.iter().map(|f| f.1).sum();
    let mut histogram: Vec<(&'static str, u64, u64)> = BUCKETS.iter().map(|b| (b.0, 0, 0)).collect();
    if !jemalloc {
        for &(_, _, total, count, _) in g.arenas.iter().flat_map(|a| &a.sizes) {
            let avg = total.checked_div(count).unwrap_or(0);
            if let Some(i) = BUCKETS.iter().position(|b| avg < b.1) {
                histogram[i].1 += count;
                histogram[i].2 += total;
            }
        }
    }
    let mut a = Analysis {
        jemalloc,
        usage,
        smaps,
        vm_rss,
        heap,
        live: r.live_bytes,
        retained: heap.saturating_sub(r.live_bytes),
        free,
        free_total,
        free_resident: (!jemalloc).then(|| g.arenas.iter().filter(|a| a.matched != "none").map(|a| a.resident_bytes.saturating_sub(a.in_use_bytes)).sum()),
        // CPython's empty pools go back with the same release
        release: release + r.python.as_ref().map_or(0, |p| p.empty_bytes),
        thread_tops: if jemalloc { 0 } else { g.arenas.iter().filter(|a| !a.main).map(|a| a.top_resident_bytes).sum() },
        verdict: Vec::new(),
        histogram,
    };
    a.verdict = verdict(&a, r);
    a
}
