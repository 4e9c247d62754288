//! When to release, decided on the worker thread from each sample: memory pressure; the process
//! going idle (its allocation rate falls, as when a worker finishes its requests); or, while
//! busy, fragmentation over MEMTRIM_FRAG_THRESHOLD, within the cost model's budget and for a kind
//! of release whose pages stay returned (cost_model.rs). Each needs MEMTRIM_MIN_RETAINED of new
//! retained memory (pressure excepted), and a release that took long waits a hundredfold before
//! the next.
//!
//! New retained memory, on glibc, is counted in the heaps' resident bytes that live blocks do not
//! use (heap_residency.rs): their growth since the last release. glibc's own figures do not move
//! when a release returns pages, nor when the host faults them in again; the process's resident
//! set moves with CPython's arenas and file pages too. jemalloc says exactly what a purge would
//! return: its unused dirty and muzzy pages.
use crate::sys::pressure::Pressure;
use crate::sys::stderr;
use crate::worker::cost_model::{Booked, CostModel};
use crate::worker::release;
use memtrim_common::config::{Config, LogLevel};
use memtrim_common::page::{HeldBack, Reason, ReleaseKind, Stats};
use std::time::{Duration, Instant};

/// Below this many allocations and frees per second a process is quiet whatever its past.
const QUIET_OPS: f64 = 50.0;
/// A process is quiet when its rate falls under this fraction of its recent busy rate.
const QUIET_FRACTION: f64 = 0.05;

/// What the allocator's retained memory is measured by.
#[derive(Clone, Copy)]
pub enum Heap {
    /// jemalloc: what a purge would return (its unused dirty and muzzy pages).
    Purgeable(u64),
    /// glibc: its heaps' resident bytes, and the live bytes in them (mmapped blocks excluded).
    Resident { resident: u64, live: u64 },
    /// glibc with no heap found: its own figures (the sample's heap and retained bytes).
    Mallinfo,
}

pub struct Policy {
    cfg: &'static Config,
    pressure: Option<Pressure>,
    cost: CostModel,
    /// The heaps' resident and live bytes just after the last release (glibc), or glibc's own
    /// retained bytes then (no heap found).
    floor: Option<(u64, u64)>,
    fresh: u64,
    next_allowed: Instant,
    /// Allocations plus frees at the previous sample, and when: the first sample (in a forked
    /// child, the parent's lifetime counts) only sets this.
    last: Option<(u64, Instant)>,
    rate: f64,
    busy_rate: f64,
    quiet_since: Option<Instant>,
    checks: u64,
    skipped_small: u64,
    skipped_backoff: u64,
    held: HeldBack,
}

/// Retained bytes as `heap` measures them, and the fragmentation they make: for glibc's heaps,
/// at most what glibc itself counts (live blocks never touched, as calloc's of fresh heap memory,
/// are not resident).
fn retained(s: &Stats, heap: Heap) -> (u64, f64) {
    match heap {
        Heap::Purgeable(bytes) => (bytes, s.frag_ratio()),
        Heap::Resident { resident, live } => {
            let r = resident.saturating_sub(live).min(s.retained_bytes);
            (r, r as f64 / resident.max(1) as f64)
        }
        Heap::Mallinfo => (s.retained_bytes, s.frag_ratio()),
    }
}

impl Policy {
    pub fn new(cfg: &'static Config) -> Policy {
        let now = Instant::now();
        Policy {
            cfg,
            pressure: Pressure::open(cfg.psi_stall_ms).or_else(|| {
                if cfg.psi_stall_ms > 0 && cfg.log >= LogLevel::Info {
                    stderr::line("memtrim: no PSI memory-pressure trigger could be armed here; releases on pressure are off");
                }
                None
            }),
            cost: CostModel::new(cfg),
            floor: None,
            fresh: 0,
            next_allowed: now,
            last: None,
            rate: 0.0,
            busy_rate: 0.0,
            quiet_since: None,
            checks: 0,
            skipped_small: 0,
            skipped_backoff: 0,
            held: HeldBack::Nothing,
        }
    }

    /// The reason to release now and the kind of release, if any.
    pub fn decide(&mut self, s: &Stats, heap: Heap, glibc: bool, now: Instant) -> Option<(Reason, ReleaseKind)> {
        self.checks += 1;
        self.cost.observe(now, s.process_cpu_us);
        let ops = s.allocs.wrapping_add(s.frees);
        let (last_ops, last_at) = self.last.replace((ops, now))?;
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
        self.rate = ops.wrapping_sub(last_ops) as f64 / dt;
        self.busy_rate = self.rate.max(self.busy_rate * 0.9);
        if self.rate <= QUIET_OPS.max(self.busy_rate * QUIET_FRACTION) {
            self.quiet_since.get_or_insert(now);
        } else {
            self.quiet_since = None;
        }
        let (retained, frag) = retained(s, heap);
        self.fresh = match (heap, self.floor) {
            // before the first release, all glibc retains that is resident (live blocks never
            // touched would hide it from resident minus live)
            (Heap::Resident { resident, .. }, None) => s.retained_bytes.min(resident),
            (Heap::Purgeable(_), _) | (_, None) => retained,
            // growth of the heaps' resident bytes that live growth does not explain: blocks that
            // stay live and untouched do not move it
            (Heap::Resident { resident, live }, Some((r0, l0))) => self.grown((resident, live), r0 as i64 - l0 as i64),
            (Heap::Mallinfo, Some((r0, _))) => self.grown((retained, 0), r0 as i64),
        };

        let pressure = self.pressure.as_ref().is_some_and(|p| p.fired());
        // Quiet for long enough; again later in the same quiet spell only if new retained memory
        // (below) came since, as a trickle of requests leaves.
        let idle = self.cfg.idle_ms > 0 && self.quiet_since.is_some_and(|q| now.duration_since(q) >= Duration::from_millis(self.cfg.idle_ms));
        let fragmented = self.cfg.frag_threshold.is_some_and(|t| frag >= t);
        let reason = match (pressure, idle, fragmented) {
            (true, _, _) => Reason::Pressure,
            (_, true, _) => Reason::Idle,
            (_, _, true) => Reason::Retained,
            _ => {
                self.held = HeldBack::NoTrigger;
                return None;
            }
        };
        if reason != Reason::Pressure && self.fresh < self.cfg.min_retained {
            self.skipped_small += 1;
            self.held = HeldBack::MinRetained;
            return None;
        }
        if now < self.next_allowed {
            self.skipped_backoff += 1;
            self.held = HeldBack::Backoff;
            return None;
        }
        let kind = match reason {
            Reason::Retained => match self.cost.choose_busy(now, glibc, self.cfg.arena_tops) {
                Ok(kind) => kind,
                Err(why) => {
                    self.held = why;
                    return None;
                }
            },
            _ => release::full(glibc),
        };
        self.held = HeldBack::Nothing;
        Some((reason, kind))
    }

    /// Books a release that ran; `heap` and `after` are measured just after it.
    pub fn released(&mut self, b: Booked, us: u64, after: &Stats, heap: Heap, now: Instant) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        self.next_allowed = now + interval.max(Duration::from_micros(us) * 100);
        self.cost.charge(now, b);
        self.floor = match heap {
            Heap::Purgeable(_) => None,
            Heap::Resident { resident, live } => Some((resident, live)),
            Heap::Mallinfo => Some((after.retained_bytes, 0)),
        };
        self.fresh = 0;
        self.held = HeldBack::Nothing;
    }

    /// Books a release the host made itself (memtrim_trim()).
    pub fn book(&mut self, now: Instant, b: Booked) {
        self.cost.charge(now, b);
    }

    /// New retained bytes: `now`'s resident minus live over what the last release left; the
    /// host took retained memory back into use when it is less, and the floor moves there.
    fn grown(&mut self, now: (u64, u64), floor: i64) -> u64 {
        let unexplained = (now.0 as i64 - now.1 as i64) - floor;
        if unexplained < 0 {
            self.floor = Some(now);
        }
        unexplained.max(0) as u64
    }

    /// The policy's state, for the page.
    pub fn fill(&self, s: &mut Stats) {
        s.policy_checks = self.checks;
        s.skipped_small = self.skipped_small;
        s.skipped_backoff = self.skipped_backoff;
        s.release_skip_reason = self.held as u64;
        s.alloc_rate = self.rate as u64;
        s.idle = self.quiet_since.is_some() as u64;
        s.new_retained = self.fresh;
        s.min_retained = self.cfg.min_retained;
        s.frag_threshold_permille = self.cfg.frag_threshold.map_or(u64::MAX, |t| (t * 1000.0).round() as u64);
        s.idle_ms = self.cfg.idle_ms;
        s.psi_stall_ms = self.cfg.psi_stall_ms;
        s.psi_armed = self.pressure.is_some() as u64;
        self.cost.fill(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn policy(set: impl FnOnce(&mut Config)) -> Policy {
        let mut cfg = Config::defaults();
        cfg.psi_stall_ms = 0;
        cfg.fault_cost_ns = 1000;
        set(&mut cfg);
        Policy::new(Box::leak(Box::new(cfg)))
    }

    /// A sample: `ops` allocations and frees so far, `cpu_s` seconds of the process's CPU.
    fn stats(ops: u64, cpu_s: u64) -> Stats {
        Stats { allocs: ops, process_cpu_us: cpu_s * 1_000_000, rss_bytes: 300 * MIB, retained_bytes: 100 * MIB, ..Default::default() }
    }

    /// glibc's heaps: `resident` bytes of which `live` are in use.
    fn heap(resident: u64, live: u64) -> Heap {
        Heap::Resident { resident: resident * MIB, live: live * MIB }
    }

    fn booked(kind: ReleaseKind, cpu_us: u64) -> Booked {
        Booked { kind, busy: true, cpu_us, released: None }
    }

    /// Busy-time releases held back by the budget do not hold the release of the idle spell
    /// after them.
    #[test]
    fn busy_releases_held_back_do_not_hold_the_idle_one() {
        let mut p = policy(|c| c.busy_budget = Some(0.001));
        let t = Instant::now();
        let s = |i: u64| t + Duration::from_secs(i);
        assert_eq!(p.decide(&stats(0, 0), heap(100, 20), true, s(0)), None, "the first sample only sets the rate");
        let mut ops = 0;
        let mut busy = 0;
        for i in 1..20 {
            ops += 1_000_000;
            if let Some((r, kind)) = p.decide(&stats(ops, i), heap(100, 20), true, s(i)) {
                assert_eq!((r, kind), (Reason::Retained, ReleaseKind::Trim));
                busy += 1;
                // 50 ms of CPU, against a budget of 1 ms a second
                p.released(booked(kind, 50_000), 10, &stats(ops, i), heap(20, 20), s(i));
            }
        }
        assert_eq!((busy, p.held), (1, HeldBack::Budget), "one release in the window, then the budget holds");
        let idle = (20..40).find_map(|i| p.decide(&stats(ops, 20), heap(100, 20), true, s(i)).map(|r| (i, r)));
        assert_eq!(idle, Some((21, (Reason::Idle, ReleaseKind::Trim))), "the idle release comes after MEMTRIM_IDLE_MS");
    }

    #[test]
    fn a_quiet_spell_releases_again_after_a_trickle_of_work() {
        let mut p = policy(|_| ());
        let t = Instant::now();
        let s = |i: u64| t + Duration::from_secs(i);
        let je = |mib: u64| Heap::Purgeable(mib * MIB);
        p.decide(&stats(10_000_000, 0), je(0), false, s(0));
        assert_eq!(p.decide(&stats(20_000_000, 0), je(0), false, s(1)), None, "busy, nothing retained");
        assert_eq!(p.decide(&stats(20_000_000, 0), je(20), false, s(2)), None, "quiet for less than MEMTRIM_IDLE_MS");
        assert_eq!(p.decide(&stats(20_000_000, 0), je(20), false, s(3)), Some((Reason::Idle, ReleaseKind::JePurge)));
        p.released(booked(ReleaseKind::JePurge, 10), 10, &stats(20_000_000, 0), je(0), s(3));
        assert_eq!(p.decide(&stats(20_000_000, 0), je(0), false, s(4)), None, "nothing new");
        // A trickle of requests, too little to count as busy, leaves retained memory behind.
        assert_eq!(p.decide(&stats(20_000_010, 0), je(5), false, s(5)), Some((Reason::Idle, ReleaseKind::JePurge)));
    }

    /// The process's resident set grows by 50 MiB (CPython's arenas, file pages) while its heaps
    /// stay as they were after the last release: no new retained memory, no release.
    #[test]
    fn growth_outside_the_heaps_is_not_retained_memory() {
        let mut p = policy(|c| (c.idle_ms, c.frag_threshold) = (0, Some(0.1)));
        let t = Instant::now();
        let s = |i: u64| t + Duration::from_secs(i);
        let busy = |i: u64| Stats { rss_bytes: (300 + 10 * i) * MIB, ..stats(i * 1_000_000, i) };
        p.decide(&busy(0), heap(100, 20), true, s(0));
        assert_eq!(p.decide(&busy(1), heap(100, 20), true, s(1)), Some((Reason::Retained, ReleaseKind::Trim)));
        p.released(booked(ReleaseKind::Trim, 100), 10, &busy(1), heap(30, 20), s(1));
        for i in 2..7 {
            assert_eq!(p.decide(&busy(i), heap(30, 20), true, s(i)), None);
        }
        assert_eq!((p.fresh, p.held), (0, HeldBack::MinRetained));
        assert_eq!(p.decide(&busy(7), heap(60, 20), true, s(7)), Some((Reason::Retained, ReleaseKind::Trim)), "30 MiB freed in the heaps");
    }
}
