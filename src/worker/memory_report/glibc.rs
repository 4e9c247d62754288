//! The glibc section of the report (always: under the jemalloc backend glibc's arenas hold
//! memtrim's own allocations): malloc_info for every arena, right after it the thread heaps it
//! lives in (found by address: every 64 MiB-aligned address in a private anonymous read-write
//! mapping whose first words are a plausible heap_info, read with process_vm_readv so that a
//! mapping unmapped meanwhile gives an error, never a fault), their residency (mincore) and the
//! release prediction (heaps.rs), and the large mmapped blocks (mmapped_probe.rs).
use super::heaps::{self, Placed};
use super::malloc_info::{self, MallocInfo};
use super::mmapped_probe::{self, Found, PROBE_BUDGET, PROBE_LIMIT};
use crate::sys::glibc_heaps::{HEAP_MAX, Heap, find_heaps, read_maps};
use crate::worker::residency::Residency;
use memtrim_common::json::Writer;
use std::time::Instant;

/// What the section found, and what finding it cost.
pub struct Glibc {
    info: MallocInfo,
    placed: Vec<Placed>,
    heaps: Vec<Heap>,
    mmapped: Found,
    pub release: u64,
    pub malloc_info_us: u64,
    pub malloc_info_and_heaps_us: u64,
    /// (arena index, µs) of the longest arena lock.
    pub max_lock: (usize, u64),
    pub resident_us: u64,
    pub probe_us: u64,
}

/// Reads glibc's arenas, heaps and mmapped blocks; `own` are memtrim's own ranges (not probed
/// for blocks). What could not be read is said in `notes`.
pub fn gather(res: &mut Residency, page: usize, own: &[(usize, usize)], notes: &mut Vec<String>) -> Glibc {
    let t_mi = Instant::now();
    let captured = malloc_info::capture();
    let maps = read_maps();
    let heaps = find_heaps(&maps, page);
    let malloc_info_and_heaps_us = t_mi.elapsed().as_micros() as u64;
    let (info, malloc_info_us, max_lock) = match captured {
        Some(c) => {
            let max = c.locks.iter().copied().enumerate().max_by_key(|&(_, l)| l).unwrap_or((0, 0));
            (malloc_info::parse(&c.text, &c.locks), c.us, max)
        }
        None => {
            notes.push("malloc_info could not be read (fopencookie failed): no glibc arena figures".into());
            (MallocInfo::default(), 0, (0, 0))
        }
    };
    let mut placed = heaps::match_heaps(&info.arenas, &heaps);
    let t_res = Instant::now();
    // SAFETY: sbrk(0) only reads the current break.
    let brk = unsafe { libc::sbrk(0) } as usize;
    heaps::predict(&info.arenas, &mut placed, &maps, brk, res, page as u64);
    let resident_us = t_res.elapsed().as_micros() as u64;
    let unmatched = info.arenas.iter().zip(&placed).filter(|(a, p)| a.nr != 0 && p.heaps.is_empty()).count();
    if unmatched > 0 {
        notes.push(format!("{unmatched} thread arena(s) could not be matched to their heaps: their residency and prediction are missing"));
    }

    // The mmapped blocks outside every known heap and memtrim's own ranges.
    let mut skip: Vec<(usize, usize)> = heaps.iter().map(|h| (h.base, h.base + HEAP_MAX)).collect();
    skip.extend_from_slice(own);
    let t_probe = Instant::now();
    let mmapped = if info.mmap_count > 0 {
        mmapped_probe::find(&maps, &skip, info.mmap_count, page, res)
    } else {
        Found { blocks: Vec::new(), probes: 0, complete: true }
    };
    let probe_us = t_probe.elapsed().as_micros() as u64;
    if !mmapped.complete {
        notes.push(format!(
            "found {} of glibc's {} mmapped blocks by address (the probe stops after {} probes or {} ms)",
            mmapped.blocks.len(),
            info.mmap_count,
            PROBE_LIMIT,
            PROBE_BUDGET.as_millis()
        ));
    }
    let release = placed.iter().map(|p| p.release).sum();
    Glibc { info, placed, heaps, mmapped, release, malloc_info_us, malloc_info_and_heaps_us, max_lock, resident_us, probe_us }
}

impl Glibc {
    pub fn probes(&self) -> u64 {
        self.mmapped.probes
    }

    /// Writes the `glibc` member (measuring the residency of the heaps and blocks as it goes).
    pub fn write(&mut self, w: &mut Writer, res: &mut Residency) {
        w.key("glibc").begin_object().key("arenas").begin_array();
        for (a, p) in self.info.arenas.iter().zip(&self.placed) {
            let (binned, binned_n) = a.binned();
            w.begin_object();
            w.field("nr", a.nr)
                .field("main", a.nr == 0)
                .field("system_bytes", a.system)
                .field("max_system_bytes", a.max_system)
                .field("aspace_bytes", a.aspace);
            w.field("in_use_bytes", a.in_use).field("free_fast_bytes", a.fast_bytes).field("free_fast_count", a.fast_count);
            w.field("free_bin_bytes", binned).field("free_bin_count", binned_n).field("top_bytes", a.top);
            w.field("resident_bytes", p.resident).field("top_resident_bytes", p.top_resident);
            w.field("whole_free_bytes", p.whole_free).field("partial_free_bytes", p.slack).field("release_bytes", p.release);
            w.field("lock_us", a.lock_us).field("match", p.matched);
            if let Some((s, e)) = p.range {
                w.key("range").numbers(&[s as u64, (e - s) as u64]);
            }
            w.field("heaps", p.heaps.len());
            w.key("sizes").begin_array();
            for b in &a.bins {
                let kind = if b.fast {
                    "fast"
                } else if b.unsorted {
                    "unsorted"
                } else {
                    "bin"
                };
                w.begin_array().value(b.from).value(b.to).value(b.total).value(b.count).value(kind).end_array();
            }
            w.end_array().end_object();
        }
        w.end_array();
        let t_res = Instant::now();
        // Every thread heap found: [base, size, mprotect size, resident, arena nr or -1].
        w.key("heaps").begin_array();
        for h in &self.heaps {
            let nr = self.info.arenas.iter().zip(&self.placed).find(|(_, p)| p.heaps.iter().any(|x| x.base == h.base)).map_or(-1, |(a, _)| a.nr as i64);
            let r = res.bytes(h.base, h.base + h.size);
            w.begin_array().value(h.base).value(h.size).value(h.mprotect).value(r).value(nr).end_array();
        }
        w.end_array().field("mmapped_count", self.info.mmap_count).field("mmapped_bytes", self.info.mmap_bytes);
        w.key("mmapped_blocks").begin_array();
        for &(s, l) in &self.mmapped.blocks {
            w.numbers(&[s as u64, l as u64, res.bytes(s, s + l)]);
        }
        w.end_array();
        self.resident_us += t_res.elapsed().as_micros() as u64;
        let whole: u64 = self.placed.iter().map(|p| p.whole_free).sum();
        w.field("mmapped_found_all", self.mmapped.complete).field("probes", self.mmapped.probes);
        w.field("whole_free_bytes", whole).field("release_bytes", self.release).field("heap_size_max", HEAP_MAX);
        w.end_object();
    }
}
