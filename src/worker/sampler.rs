//! One sample of everything the page shows, taken on the worker thread.
use crate::alloc::{accounting, backend};
use crate::sys::{clock, jemalloc_ctl, procfs, rusage};
use crate::worker::heap_residency::Heaps;
use crate::worker::heap_stats::HeapStats;
use crate::worker::policy::Heap;
use crate::worker::release;
use memtrim_common::config::{Allocator, Config};
use memtrim_common::page::{ALLOCATOR_GLIBC, ALLOCATOR_JEMALLOC, Stats};
use std::time::{Duration, Instant};

pub struct Sampler {
    cfg: &'static Config,
    pid: u32,
    start_ticks: u64,
    uid: u32,
    heap: HeapStats,
    heaps: Heaps,
    /// The last sample's view of the allocator's retained memory, for the policy.
    retained: Heap,
    smaps: Option<procfs::Smaps>,
    smaps_every_sample: bool,
    smaps_at_ms: u64,
    next_smaps: Instant,
    samples: u64,
    process_cpu_us: u64,
}

impl Sampler {
    /// `smaps_every_sample`: PSS and USS on every sample (a limit is set on one of them).
    pub fn new(cfg: &'static Config, pid: u32, start_ticks: u64, smaps_every_sample: bool) -> Sampler {
        Sampler {
            cfg,
            pid,
            start_ticks,
            // SAFETY: getuid has no preconditions.
            uid: unsafe { libc::getuid() },
            heap: HeapStats::new(),
            heaps: Heaps::new(),
            retained: Heap::Mallinfo,
            smaps: None,
            smaps_every_sample,
            smaps_at_ms: 0,
            next_smaps: Instant::now(),
            samples: 0,
            process_cpu_us: 0,
        }
    }

    /// A sample; `fresh` re-reads the allocator's figures even if not due (after a release).
    pub fn sample(&mut self, fresh: bool) -> Stats {
        let t0 = Instant::now();
        let interval = Duration::from_millis(self.cfg.interval_ms);
        if t0 >= self.next_smaps || self.smaps_every_sample {
            self.smaps = procfs::smaps_rollup();
            self.smaps_at_ms = clock::unix_ms();
            self.next_smaps = t0 + Duration::from_millis(self.cfg.smaps_interval_ms);
        }
        let t = accounting::totals();
        let heap_bytes = self.heap.heap_bytes(interval, fresh, t.live);
        let glibc = backend::active() == Allocator::Glibc;
        let resident = if glibc { self.heaps.resident(t0) } else { Some(heap_bytes) };
        self.retained = match resident {
            _ if !glibc => Heap::Purgeable(jemalloc_ctl::purgeable()),
            Some(resident) => Heap::Resident { resident, live: t.live.saturating_sub(self.heap.mmapped()) },
            None => Heap::Mallinfo,
        };
        let usage = rusage::process();
        let worker_cpu_us = clock::thread_cpu_us();
        // a counter: the worker's own CPU, read after the process's, can make the difference dip
        self.process_cpu_us = self.process_cpu_us.max(usage.cpu_us.saturating_sub(worker_cpu_us));
        let r = release::record();
        let (ppid, _) = procfs::ppid_and_start();
        let smaps = self.smaps.as_ref();
        self.samples += 1;
        Stats {
            pid: self.pid,
            ppid,
            uid: self.uid,
            allocator: match backend::active() {
                Allocator::Glibc => ALLOCATOR_GLIBC,
                Allocator::Jemalloc => ALLOCATOR_JEMALLOC,
            },
            start_ticks: self.start_ticks,
            comm: procfs::comm(),
            updated_at_ms: clock::unix_ms(),
            samples: self.samples,
            live_bytes: t.live,
            peak_live_bytes: t.peak,
            allocs: t.allocs,
            frees: t.frees,
            heap_bytes,
            retained_bytes: heap_bytes.saturating_sub(t.live),
            rss_bytes: procfs::rss_bytes(),
            pss_bytes: smaps.map_or(0, |s| s.pss),
            uss_bytes: smaps.map_or(0, |s| s.uss),
            swap_bytes: smaps.map_or(0, |s| s.swap),
            smaps_at_ms: self.smaps_at_ms,
            trims: r.by_reason.iter().sum(),
            released_bytes: r.released,
            last_trim_us: r.last_us,
            max_trim_us: r.max_us,
            last_trim_at_ms: r.last_at_ms,
            sample_cost_us: t0.elapsed().as_micros() as u64,
            worker_cpu_us,
            process_cpu_us: self.process_cpu_us,
            minor_faults: usage.minor_faults,
            heap_resident_bytes: resident.unwrap_or(0),
            interval_ms: self.cfg.interval_ms,
            smaps_interval_ms: self.cfg.smaps_interval_ms,
            releases_by_reason: r.by_reason,
            last_reason: r.last_reason,
            last_rss_before: r.last_before,
            last_rss_after: r.last_after,
            ..Default::default()
        }
    }

    /// The last sample's view of the allocator's retained memory.
    pub fn retained(&self) -> Heap {
        self.retained
    }

    /// The heaps the sampler watches, for a release to watch too.
    pub fn heaps(&mut self) -> Option<&mut Heaps> {
        (backend::active() == Allocator::Glibc).then_some(&mut self.heaps)
    }
}
