//! When to release, decided on the worker thread from each sample: memory pressure; the process
//! going idle (its allocation rate falls, as when a worker finishes its requests); or, while
//! busy, fragmentation over MEMTRIM_FRAG_THRESHOLD. Each needs MEMTRIM_MIN_RETAINED of new
//! retained memory (pressure excepted), and a cost model spaces releases: one that took long
//! waits a hundredfold; one that yielded little doubles a back-off on the busy-time trigger
//! (only: the one release of an idle spell must not wait minutes behind busy-time ones).
//!
//! New retained memory, on glibc, is counted in resident bytes: before the first release, the
//! allocator's retained bytes; after it, the growth of RSS since the release that live growth
//! does not explain. (glibc's own figures do not move when a release returns pages, nor when
//! the host faults them in again.) jemalloc says exactly what a purge would return: its unused
//! dirty and muzzy pages.
use crate::sys::pressure::Pressure;
use crate::sys::stderr;
use crate::worker::release::Outcome;
use memtrim_common::config::{Config, LogLevel};
use memtrim_common::page::{HeldBack, Reason, Stats};
use std::time::{Duration, Instant};

/// Below this many allocations and frees per second a process is quiet whatever its past.
const QUIET_OPS: f64 = 50.0;
/// A process is quiet when its rate falls under this fraction of its recent busy rate.
const QUIET_FRACTION: f64 = 0.05;
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct Policy {
    cfg: &'static Config,
    pressure: Option<Pressure>,
    /// RSS and live bytes just after the last release.
    floor: Option<(u64, u64)>,
    fresh: u64,
    next_allowed: Instant,
    backoff: Duration,
    backoff_until: Instant,
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
            floor: None,
            fresh: 0,
            next_allowed: now,
            backoff: Duration::ZERO,
            backoff_until: now,
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

    /// The reason to release now, if any; `purgeable` is what the allocator itself knows a
    /// release would return, where it knows (jemalloc).
    pub fn decide(&mut self, s: &Stats, purgeable: Option<u64>, now: Instant) -> Option<Reason> {
        self.checks += 1;
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
        self.fresh = match (purgeable, self.floor) {
            (Some(bytes), _) => bytes,
            (None, None) => s.retained_bytes,
            (None, Some((rss, live))) => {
                let unexplained = (s.rss_bytes as i64 - rss as i64) - (s.live_bytes as i64 - live as i64);
                if unexplained < 0 {
                    // The host gave memory back by itself: measure from here.
                    self.floor = Some((s.rss_bytes, s.live_bytes));
                }
                unexplained.max(0) as u64
            }
        };

        let pressure = self.pressure.as_ref().is_some_and(|p| p.fired());
        // Quiet for long enough; again later in the same quiet spell only if new retained memory
        // (below) came since, as a trickle of requests leaves.
        let idle = self.cfg.idle_ms > 0 && self.quiet_since.is_some_and(|q| now.duration_since(q) >= Duration::from_millis(self.cfg.idle_ms));
        let fragmented = self.cfg.frag_threshold.is_some_and(|t| s.frag_ratio() >= t);
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
        if now < self.next_allowed || (reason == Reason::Retained && now < self.backoff_until) {
            self.skipped_backoff += 1;
            self.held = HeldBack::Backoff;
            return None;
        }
        self.held = HeldBack::Nothing;
        Some(reason)
    }

    /// Books a release that ran; `after` is a sample taken just after it.
    pub fn released(&mut self, out: &Outcome, after: &Stats, now: Instant) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        self.backoff = if out.released < self.cfg.min_retained / 2 { (self.backoff * 2).clamp(interval * 2, MAX_BACKOFF) } else { Duration::ZERO };
        let spacing = interval.max(Duration::from_micros(out.us) * 100);
        self.next_allowed = now + spacing;
        self.backoff_until = now + self.backoff;
        self.floor = Some((after.rss_bytes, after.live_bytes));
        self.fresh = 0;
        self.held = HeldBack::Nothing;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn policy() -> Policy {
        let mut cfg = Config::defaults();
        cfg.psi_stall_ms = 0;
        Policy::new(Box::leak(Box::new(cfg)))
    }

    /// A sample: `ops` allocations and frees so far, `retained` of a 100 MiB heap.
    fn stats(ops: u64, retained: u64) -> Stats {
        Stats { allocs: ops, heap_bytes: 100 * MIB, retained_bytes: retained, ..Default::default() }
    }

    fn small_release() -> Outcome {
        Outcome { released: 0, before: 0, after: 0, us: 10 }
    }

    #[test]
    fn backoff_of_busy_releases_does_not_hold_the_idle_one() {
        let mut p = policy();
        let t = Instant::now();
        let s = |i: u64| t + Duration::from_secs(i);
        let purgeable = Some(80 * MIB);
        assert_eq!(p.decide(&stats(0, 80 * MIB), purgeable, s(0)), None, "the first sample only sets the rate");
        // Busy and fragmented: busy-time releases that return nothing, the back-off doubling
        // to 16 s by the end.
        let mut ops = 0;
        for i in 1..20 {
            ops += 1_000_000;
            if let Some(r) = p.decide(&stats(ops, 80 * MIB), purgeable, s(i)) {
                assert_eq!(r, Reason::Retained);
                p.released(&small_release(), &stats(ops, 80 * MIB), s(i));
            }
        }
        assert!(p.skipped_backoff > 0, "releases that returned nothing back off");
        // Quiet from here: the idle release comes after MEMTRIM_IDLE_MS, not minutes later.
        let idle = (20..40).find_map(|i| p.decide(&stats(ops, 80 * MIB), purgeable, s(i)).map(|r| (i, r)));
        assert_eq!(idle, Some((21, Reason::Idle)));
    }

    #[test]
    fn a_quiet_spell_releases_again_after_a_trickle_of_work() {
        let mut p = policy();
        let t = Instant::now();
        let s = |i: u64| t + Duration::from_secs(i);
        p.decide(&stats(10_000_000, 0), Some(0), s(0));
        assert_eq!(p.decide(&stats(20_000_000, 0), Some(0), s(1)), None, "busy, nothing retained");
        assert_eq!(p.decide(&stats(20_000_000, 0), Some(20 * MIB), s(2)), None, "quiet for less than MEMTRIM_IDLE_MS");
        assert_eq!(p.decide(&stats(20_000_000, 0), Some(20 * MIB), s(3)), Some(Reason::Idle));
        p.released(&Outcome { released: 20 * MIB, before: 0, after: 0, us: 10 }, &stats(20_000_000, 0), s(3));
        assert_eq!(p.decide(&stats(20_000_000, 0), Some(0), s(4)), None, "nothing new");
        // A trickle of requests, too little to count as busy, leaves retained memory behind.
        assert_eq!(p.decide(&stats(20_000_010, 0), Some(5 * MIB), s(5)), Some(Reason::Idle));
    }
}
