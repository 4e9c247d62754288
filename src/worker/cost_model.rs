//! What releases cost against what they buy, for the releases that run while the host is busy.
//! A release costs its CPU and, for every page it gave back that the host touches again soon, a
//! page fault; it buys the pages that stay given back. malloc_trim under load mostly gives back
//! the free pages inside the bins that the next request splits again, while the thread arenas'
//! tops are used only at the working set's high-water mark: so each release's pages are looked
//! at again MEMTRIM_REFAULT_CHECK_MS later (heap_residency.rs), those resident again are charged
//! at the measured fault cost to the window of the release, and they make its kind's survival.
//!
//! While busy, a release runs only if it fits in MEMTRIM_BUSY_BUDGET of the process's CPU over
//! MEMTRIM_BUDGET_WINDOW_MS, counted at what the last release of its kind cost (a kind not tried
//! yet costs nothing: it is tried once), as Go's scavenger keeps to 1 %; and only a kind whose pages survive
//! (MEMTRIM_MIN_SURVIVAL): trim first, else the tops alone. A kind that falls short is tried again
//! 30 s later, then at doubling intervals up to 10 min while it stays short, so a workload that
//! changes is noticed. One release is looked at a time: busy releases wait for the check of the
//! last one. Releases for other reasons (idle, pressure, limit, request) are never held here but
//! are charged, so busy ones after them wait their turn.
use crate::worker::fault_cost;
use crate::worker::heap_residency::Released;
use memtrim_common::config::Config;
use memtrim_common::page::{HeldBack, ReleaseKind, Stats};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const FIRST_PROBE: Duration = Duration::from_secs(30);
const LAST_PROBE: Duration = Duration::from_secs(600);
/// Weight of the newest check in a kind's survival.
const ALPHA: f64 = 0.3;

/// What one kind of busy-time release has shown so far.
struct Kind {
    survival: Option<f64>,
    probe_at: Option<Instant>,
    probe_every: Duration,
    /// Its last release's cost: CPU, plus its refaults once looked at.
    cost_us: u64,
}

impl Kind {
    const NEW: Kind = Kind { survival: None, probe_at: None, probe_every: FIRST_PROBE, cost_us: 0 };
}

/// A release's cost, counted in the window it ran in.
struct Spend {
    at: Instant,
    id: u64,
    cost_us: u64,
}

/// The last release, until its pages are looked at again.
struct Pending {
    at: Instant,
    id: u64,
    kind: ReleaseKind,
    busy: bool,
    released: Released,
}

/// One release, as the cost model books it.
pub struct Booked {
    pub kind: ReleaseKind,
    pub busy: bool,
    pub cpu_us: u64,
    pub released: Option<Released>,
}

pub struct CostModel {
    cfg: &'static Config,
    fault_cost_ns: u64,
    /// The process's CPU at each sample of the window, and the last one before it.
    cpu: VecDeque<(Instant, u64)>,
    spends: VecDeque<Spend>,
    ids: u64,
    pending: Option<Pending>,
    trim: Kind,
    tops: Kind,
    je_decay: Kind,
    release_cpu_us: u64,
    released_pages: u64,
    refault_pages: u64,
    last_kind: ReleaseKind,
    last_pages: u64,
    last_refaults: Option<u64>,
}

impl CostModel {
    pub fn new(cfg: &'static Config) -> CostModel {
        CostModel {
            cfg,
            fault_cost_ns: if cfg.fault_cost_ns == 0 { fault_cost::measure() } else { cfg.fault_cost_ns },
            cpu: VecDeque::new(),
            spends: VecDeque::new(),
            ids: 0,
            pending: None,
            trim: Kind::NEW,
            tops: Kind::NEW,
            je_decay: Kind::NEW,
            release_cpu_us: 0,
            released_pages: 0,
            refault_pages: 0,
            last_kind: ReleaseKind::None,
            last_pages: 0,
            last_refaults: None,
        }
    }

    /// Each sample: the process's CPU so far (memtrim's worker excluded); looks at the last
    /// release's pages again when due.
    pub fn observe(&mut self, now: Instant, process_cpu_us: u64) {
        let window = Duration::from_millis(self.cfg.budget_window_ms);
        self.cpu.push_back((now, process_cpu_us));
        while self.cpu.len() > 2 && now.duration_since(self.cpu[1].0) >= window {
            self.cpu.pop_front();
        }
        while self.spends.front().is_some_and(|s| now.duration_since(s.at) >= window) {
            self.spends.pop_front();
        }
        let check = Duration::from_millis(self.cfg.refault_check_ms);
        if let Some(p) = self.pending.take_if(|p| now.duration_since(p.at) >= check) {
            let back = p.released.resident_again();
            self.looked_at(p, back, now);
        }
    }

    fn looked_at(&mut self, p: Pending, back: u64, now: Instant) {
        self.refault_pages += back;
        self.last_refaults = Some(back);
        let cost = back * self.fault_cost_ns / 1000;
        match self.spends.iter_mut().find(|s| s.id == p.id) {
            Some(s) => s.cost_us += cost,
            // the release's window has passed (a window shorter than the check): the faults
            // count in this one
            None => self.spends.push_back(Spend { at: now, id: p.id, cost_us: cost }),
        }
        let min = self.cfg.min_survival;
        let Some(k) = self.kind_mut(p.kind) else { return };
        k.cost_us += cost;
        if !p.busy || p.released.pages == 0 {
            return;
        }
        let s = 1.0 - back as f64 / p.released.pages as f64;
        let s = k.survival.map_or(s, |old| old + ALPHA * (s - old));
        k.survival = Some(s);
        if min.is_some_and(|m| s < m) {
            k.probe_at = Some(now + k.probe_every);
            k.probe_every = (k.probe_every * 2).min(LAST_PROBE);
        } else {
            (k.probe_at, k.probe_every) = (None, FIRST_PROBE);
        }
    }

    fn kind_mut(&mut self, kind: ReleaseKind) -> Option<&mut Kind> {
        match kind {
            ReleaseKind::Trim => Some(&mut self.trim),
            ReleaseKind::Tops => Some(&mut self.tops),
            ReleaseKind::JeDecay => Some(&mut self.je_decay),
            ReleaseKind::None | ReleaseKind::JePurge => None,
        }
    }

    /// While busy: the kind of release to run, or what holds it back (that of the first kind).
    pub fn choose_busy(&mut self, now: Instant, glibc: bool, arena_tops: bool) -> Result<ReleaseKind, HeldBack> {
        if self.pending.is_some() {
            return Err(HeldBack::Pending);
        }
        let kinds: &[ReleaseKind] = match (glibc, arena_tops) {
            (false, _) => &[ReleaseKind::JeDecay],
            (true, true) => &[ReleaseKind::Trim, ReleaseKind::Tops],
            (true, false) => &[ReleaseKind::Trim],
        };
        let mut held = None;
        for &kind in kinds {
            let k = self.kind(kind);
            let why = if !self.survives(k, now) {
                HeldBack::Refaults
            } else if !self.affordable(k) {
                HeldBack::Budget
            } else {
                if let Some(k) = self.kind_mut(kind).filter(|k| k.probe_at.is_some_and(|t| now >= t)) {
                    // one probe; a check with a verdict brings the next forward or clears it
                    k.probe_at = Some(now + k.probe_every);
                }
                return Ok(kind);
            };
            held.get_or_insert(why);
        }
        Err(held.unwrap_or(HeldBack::Refaults))
    }

    fn kind(&self, kind: ReleaseKind) -> &Kind {
        match kind {
            ReleaseKind::Tops => &self.tops,
            ReleaseKind::JeDecay => &self.je_decay,
            _ => &self.trim,
        }
    }

    fn survives(&self, k: &Kind, now: Instant) -> bool {
        match (self.cfg.min_survival, k.survival) {
            (Some(min), Some(s)) if s < min => k.probe_at.is_some_and(|t| now >= t),
            _ => true,
        }
    }

    fn affordable(&self, k: &Kind) -> bool {
        let Some(budget) = self.cfg.busy_budget else { return true };
        (self.spent() + k.cost_us) as f64 <= budget * self.window_cpu() as f64
    }

    fn spent(&self) -> u64 {
        self.spends.iter().map(|s| s.cost_us).sum()
    }

    fn window_cpu(&self) -> u64 {
        match (self.cpu.front(), self.cpu.back()) {
            (Some(a), Some(b)) => b.1.saturating_sub(a.1),
            _ => 0,
        }
    }

    /// Books a release that ran, for any reason; its pages, where known, are looked at again
    /// later (one release at a time: a newer one replaces the one not looked at yet).
    pub fn charge(&mut self, now: Instant, b: Booked) {
        self.ids += 1;
        let id = self.ids;
        self.spends.push_back(Spend { at: now, id, cost_us: b.cpu_us });
        self.release_cpu_us += b.cpu_us;
        self.last_kind = b.kind;
        if let Some(k) = self.kind_mut(b.kind) {
            k.cost_us = b.cpu_us;
        }
        // a release whose pages are not known (jemalloc, memtrim_trim()) leaves the last check
        if let Some(released) = b.released {
            (self.last_pages, self.last_refaults) = (released.pages, None);
            self.released_pages += released.pages;
            self.pending = Some(Pending { at: now, id, kind: b.kind, busy: b.busy, released });
        }
    }

    pub fn fill(&self, s: &mut Stats) {
        let permille = |f: Option<f64>| f.map_or(u64::MAX, |f| (f * 1000.0).round() as u64);
        s.busy_budget_permille = permille(self.cfg.busy_budget);
        s.budget_used_permille = (self.spent() * 1000).checked_div(self.window_cpu()).unwrap_or(0);
        s.release_cpu_us = self.release_cpu_us;
        s.last_release_kind = self.last_kind as u64;
        s.last_release_pages = self.last_pages;
        s.last_refault_pages = self.last_refaults.unwrap_or(u64::MAX);
        s.released_pages = self.released_pages;
        s.refault_pages = self.refault_pages;
        s.fault_cost_ns = self.fault_cost_ns;
        s.survival_trim_permille = permille(self.trim.survival);
        s.survival_tops_permille = permille(self.tops.survival);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(set: impl FnOnce(&mut Config)) -> CostModel {
        let mut cfg = Config::defaults();
        cfg.fault_cost_ns = 1000;
        set(&mut cfg);
        CostModel::new(Box::leak(Box::new(cfg)))
    }

    fn booked(kind: ReleaseKind, cpu_us: u64, pages: u64) -> Booked {
        Booked { kind, busy: true, cpu_us, released: Some(Released::counted(pages)) }
    }

    /// `secs` after `t`, observed by `m` as one CPU second a second.
    fn at(m: &mut CostModel, t: Instant, secs: u64) -> Instant {
        let now = t + Duration::from_secs(secs);
        m.observe(now, secs * 1_000_000);
        now
    }

    /// The last release's check, as if `back` of its pages were resident again.
    fn check(m: &mut CostModel, back: u64, now: Instant) {
        let p = m.pending.take().expect("a release awaits its check");
        m.looked_at(p, back, now);
    }

    /// A process spending one CPU second a second, trims costing 20 ms: the trims within any
    /// window stay within 1 % of it (600 ms a minute, one release's worth of slack), and the
    /// budget is used, not only respected.
    #[test]
    fn busy_releases_stay_within_the_budget() {
        let mut m = model(|_| ());
        let t = Instant::now();
        let mut at = Vec::new();
        for i in 0..240u64 {
            let now = t + Duration::from_millis(500 * i);
            m.observe(now, i * 500_000);
            if let Ok(kind) = m.choose_busy(now, true, false) {
                m.charge(now, Booked { kind, busy: true, cpu_us: 20_000, released: None });
                at.push(i);
            }
        }
        for w in 0..=120 {
            let n = at.iter().filter(|&&i| (w..w + 120).contains(&i)).count();
            assert!(n <= 31, "{n} trims of 20 ms within a minute of 60 CPU seconds");
        }
        assert!(at.len() >= 50, "only {} trims in two minutes", at.len());
    }

    /// Trims whose pages come straight back are held, the tops still run; after FIRST_PROBE one
    /// trim is tried again, and a trim that keeps its pages brings trims back.
    #[test]
    fn refaulting_trims_are_held_and_probed_later() {
        let mut m = model(|_| ());
        let t = Instant::now();
        let s = |m: &mut CostModel, secs: u64| at(m, t, secs);
        let now = s(&mut m, 0);
        assert_eq!(m.choose_busy(now, true, true), Ok(ReleaseKind::Trim));
        m.charge(now, booked(ReleaseKind::Trim, 100, 1000));
        let now = s(&mut m, 1);
        assert_eq!(m.choose_busy(now, true, true), Err(HeldBack::Pending), "one release looked at a time");
        check(&mut m, 900, t + Duration::from_secs(5));
        assert!(m.trim.survival.is_some_and(|s| (s - 0.1).abs() < 1e-9), "survival {:?}", m.trim.survival);
        let now = s(&mut m, 6);
        assert_eq!(m.choose_busy(now, true, true), Ok(ReleaseKind::Tops), "trims held, the tops are not");
        assert_eq!(m.choose_busy(now, true, false), Err(HeldBack::Refaults), "without the tops, nothing runs");
        let now = s(&mut m, 35);
        assert_eq!(m.choose_busy(now, true, false), Ok(ReleaseKind::Trim), "a probe 30 s after the check");
        m.charge(now, booked(ReleaseKind::Trim, 100, 1000));
        check(&mut m, 900, t + Duration::from_secs(40));
        let now = s(&mut m, 80);
        assert_eq!(m.choose_busy(now, true, false), Err(HeldBack::Refaults), "the next probe waits twice as long");
        let now = s(&mut m, 100);
        assert_eq!(m.choose_busy(now, true, false), Ok(ReleaseKind::Trim));
        m.charge(now, booked(ReleaseKind::Trim, 100, 1000));
        check(&mut m, 0, t + Duration::from_secs(105));
        let now = s(&mut m, 106);
        check_survival_rises(&mut m, now);
    }

    /// A probe of a held kind whose check finds nothing to judge by (it made no page
    /// non-resident, or a release for another reason replaced it before its check) still leaves
    /// a next probe: the kind is never held for good.
    #[test]
    fn a_probe_without_a_verdict_is_probed_again() {
        let mut held = Vec::new();
        for case in ["no pages", "replaced by an idle release", "no snapshot"] {
            let mut m = model(|_| ());
            let t = Instant::now();
            let s = |m: &mut CostModel, secs: u64| at(m, t, secs);
            let now = s(&mut m, 0);
            m.charge(now, booked(ReleaseKind::Trim, 100, 1000));
            check(&mut m, 900, t + Duration::from_secs(5));
            let now = s(&mut m, 35);
            assert_eq!(m.choose_busy(now, true, false), Ok(ReleaseKind::Trim), "the first probe");
            match case {
                "no pages" => {
                    m.charge(now, booked(ReleaseKind::Trim, 100, 0));
                    check(&mut m, 0, t + Duration::from_secs(40));
                }
                "replaced by an idle release" => {
                    m.charge(now, booked(ReleaseKind::Trim, 100, 1000));
                    m.charge(now, Booked { kind: ReleaseKind::Trim, busy: false, cpu_us: 100, released: Some(Released::counted(1000)) });
                    check(&mut m, 0, t + Duration::from_secs(40));
                }
                _ => m.charge(now, Booked { kind: ReleaseKind::Trim, busy: true, cpu_us: 100, released: None }),
            }
            let probed = (41..3600).find(|&i| {
                let now = s(&mut m, i);
                m.choose_busy(now, true, false) == Ok(ReleaseKind::Trim)
            });
            if probed.is_none() {
                held.push(case);
            }
        }
        assert!(held.is_empty(), "trims held for an hour after a probe with {held:?}");
    }

    /// A budget window shorter than the refault check (1 s against the default 5 s), refaults
    /// counted only by the budget (MEMTRIM_MIN_SURVIVAL=off): releases whose every page comes
    /// back, a CPU second of faults each, still stay near the budget over two minutes.
    #[test]
    fn refaults_count_whatever_the_window() {
        let mut m = model(|c| (c.budget_window_ms, c.min_survival) = (1000, None));
        let t = Instant::now();
        let check = Duration::from_millis(m.cfg.refault_check_ms);
        let (mut runs, mut cost_us) = (0u64, 0u64);
        for i in 0..1200u64 {
            let now = t + Duration::from_millis(100 * i);
            // one CPU second a second; the check finds every released page resident again
            if m.pending.as_ref().is_some_and(|p| now.duration_since(p.at) >= check) {
                check_all_back(&mut m, now);
            }
            m.observe(now, i * 100_000);
            if let Ok(kind) = m.choose_busy(now, true, false) {
                m.charge(now, booked(kind, 1000, 1_000_000));
                runs += 1;
                cost_us += 1000 + 1_000_000;
            }
        }
        // 1 % of 120 CPU seconds, and one release's worth of slack
        assert!(cost_us <= 1_200_000 + 1_001_000, "{runs} releases took {} ms of 1200 ms", cost_us / 1000);
    }

    fn check_all_back(m: &mut CostModel, now: Instant) {
        let p = m.pending.take().expect("a release awaits its check");
        let back = p.released.pages;
        m.looked_at(p, back, now);
    }

    fn check_survival_rises(m: &mut CostModel, now: Instant) {
        // 0.1, 0.1, then 1.0: the moving average passes 0.5 after a few good checks
        for i in 0..3 {
            if m.choose_busy(now, true, false) == Ok(ReleaseKind::Trim) {
                return;
            }
            m.charge(now, booked(ReleaseKind::Trim, 100, 1000));
            check(m, 0, now + Duration::from_secs(i));
        }
        assert!(m.trim.survival.is_some_and(|s| s >= 0.5), "survival {:?}", m.trim.survival);
    }

    /// A release whose pages are not known (memtrim_trim() from the host, jemalloc) is charged
    /// but leaves the busy release before it to its check.
    #[test]
    fn a_release_without_pages_keeps_the_last_check() {
        let mut m = model(|_| ());
        let t = Instant::now();
        m.observe(t, 0);
        m.charge(t, booked(ReleaseKind::Trim, 100, 1000));
        m.charge(t, Booked { kind: ReleaseKind::Trim, busy: false, cpu_us: 50, released: None });
        check(&mut m, 900, t + Duration::from_secs(5));
        assert!(m.trim.survival.is_some_and(|s| s < 0.5), "survival {:?}", m.trim.survival);
        assert_eq!((m.release_cpu_us, m.last_pages, m.last_refaults), (150, 1000, Some(900)));
    }

    /// Pages that come back are charged to the window of the release that gave them back.
    #[test]
    fn refaults_are_charged_to_the_release() {
        let mut m = model(|_| ());
        let t = Instant::now();
        m.observe(t, 0);
        m.observe(t + Duration::from_secs(10), 10_000_000);
        m.charge(t + Duration::from_secs(10), booked(ReleaseKind::Trim, 1000, 50_000));
        let mut s = Stats::default();
        m.fill(&mut s);
        assert_eq!(s.budget_used_permille, 0, "1 ms of 10 s");
        check(&mut m, 40_000, t + Duration::from_secs(15));
        m.fill(&mut s);
        // 40 000 faults of 1 µs: 41 ms of 10 s
        assert_eq!((s.budget_used_permille, s.last_refault_pages, s.refault_pages, s.released_pages), (4, 40_000, 40_000, 50_000));
        assert_eq!(s.survival_trim_permille, 200);
    }

    /// A process that spent no CPU in the window: no division by zero, one release of a kind
    /// not tried yet.
    #[test]
    fn no_cpu_allows_one_release() {
        let mut m = model(|_| ());
        let t = Instant::now();
        m.observe(t, 0);
        assert_eq!(m.choose_busy(t, true, true), Ok(ReleaseKind::Trim));
        m.charge(t, Booked { kind: ReleaseKind::Trim, busy: true, cpu_us: 10, released: None });
        m.observe(t + Duration::from_secs(1), 0);
        assert_eq!(m.choose_busy(t + Duration::from_secs(1), true, true), Err(HeldBack::Budget));
        let mut s = Stats::default();
        m.fill(&mut s);
        assert_eq!(s.budget_used_permille, 0);
    }
}
