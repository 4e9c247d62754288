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
    smaps_cadence: SmapsCadence,
    smaps_at_ms: u64,
    /// The command name, re-read with smaps_rollup (a host renames itself rarely).
    comm: [u8; 16],
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
            smaps_cadence: SmapsCadence::new(Duration::from_millis(cfg.smaps_interval_ms), smaps_every_sample),
            smaps_at_ms: 0,
            comm: procfs::comm(),
            samples: 0,
            process_cpu_us: 0,
        }
    }

    /// A sample; `fresh` re-reads the allocator's figures even if not due (after a release).
    pub fn sample(&mut self, fresh: bool) -> Stats {
        let t0 = Instant::now();
        let interval = Duration::from_millis(self.cfg.interval_ms);
        let rss = procfs::rss_bytes();
        if self.smaps_cadence.due(t0, rss) {
            self.smaps = procfs::smaps_rollup();
            self.smaps_at_ms = clock::unix_ms();
            self.comm = procfs::comm();
        }
        let t = accounting::totals();
        let glibc = backend::active() == Allocator::Glibc;
        let heaps = if glibc { self.heaps.resident(t0, (!fresh).then(|| t.allocs.wrapping_add(t.frees))) } else { None };
        let heap_bytes = self.heap.heap_bytes(interval, fresh, t.live, heaps.unwrap_or(0));
        let resident = if glibc { heaps } else { Some(heap_bytes) };
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
        let smaps = self.smaps.as_ref();
        self.samples += 1;
        Stats {
            pid: self.pid,
            // SAFETY: getppid has no preconditions.
            ppid: unsafe { libc::getppid() } as u32,
            uid: self.uid,
            allocator: match backend::active() {
                Allocator::Glibc => ALLOCATOR_GLIBC,
                Allocator::Jemalloc => ALLOCATOR_JEMALLOC,
            },
            start_ticks: self.start_ticks,
            comm: self.comm,
            updated_at_ms: clock::unix_ms(),
            samples: self.samples,
            live_bytes: t.live,
            peak_live_bytes: t.peak,
            allocs: t.allocs,
            frees: t.frees,
            heap_bytes,
            retained_bytes: heap_bytes.saturating_sub(t.live),
            rss_bytes: rss,
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

/// When to read smaps_rollup. It walks the page tables (milliseconds per 100 MiB resident, the
/// largest part of the worker's own CPU), so a read due every MEMTRIM_SMAPS_INTERVAL_MS is
/// skipped while RSS has not moved by 1/32 since the last one, up to SKIPS times in a row: a
/// steady process's PSS is then at most SKIPS + 1 intervals old. A limit on PSS, USS or the
/// cgroup reads it every sample.
struct SmapsCadence {
    interval: Duration,
    every_sample: bool,
    next: Option<Instant>,
    /// RSS at the last read, and the due reads skipped since.
    rss: u64,
    skipped: u32,
}

impl SmapsCadence {
    const SKIPS: u32 = 5;

    fn new(interval: Duration, every_sample: bool) -> SmapsCadence {
        SmapsCadence { interval, every_sample, next: None, rss: 0, skipped: 0 }
    }

    fn due(&mut self, now: Instant, rss: u64) -> bool {
        if self.next.is_some_and(|next| now < next) && !self.every_sample {
            return false;
        }
        let first = self.next.is_none();
        self.next = Some(now + self.interval);
        if first || self.every_sample || rss.abs_diff(self.rss) > self.rss / 32 || self.skipped >= Self::SKIPS {
            (self.rss, self.skipped) = (rss, 0);
            return true;
        }
        self.skipped += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rss_skips_reads_up_to_the_bound_and_a_move_reads_at_once() {
        const MIB: u64 = 1 << 20;
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = SmapsCadence::new(5 * s, false);
        let reads = |c: &mut SmapsCadence, from: u64, to: u64, rss: u64| (from..to).filter(|&i| c.due(t0 + s * i as u32, rss)).collect::<Vec<_>>();
        // first sample reads; then due every 5 s, skipped 5 times while RSS holds: one read in 30 s
        assert_eq!(reads(&mut c, 0, 35, 100 * MIB), [0, 30]);
        // 2 MiB of 100 is within 1/32: the read due at 35 is skipped
        assert_eq!(reads(&mut c, 35, 40, 102 * MIB), []);
        // 6 MiB is not: the one due at 40 happens
        assert_eq!(reads(&mut c, 40, 45, 106 * MIB), [40]);
        // and a fall counts as a move too
        assert_eq!(reads(&mut c, 45, 50, 90 * MIB), [45]);
        let mut every = SmapsCadence::new(5 * s, true);
        assert_eq!(reads(&mut every, 0, 4, 100 * MIB), [0, 1, 2, 3]);
    }
}
