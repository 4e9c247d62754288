//! Soft memory limit (MEMTRIM_LIMIT), on the worker thread: over the bound, release first; still
//! over for MEMTRIM_LIMIT_STRIKES consecutive samples, send MEMTRIM_LIMIT_SIGNAL to this process
//! once (a gunicorn or puma worker then finishes its requests and exits, and its master starts a
//! fresh one), then wait out the cool-down. MEMTRIM_LIMIT_ACTION=log makes that signal a line
//! saying it would be sent (a dry run); MEMTRIM_LIMIT_STAGGER_MS makes a worker whose sibling
//! was just signalled defer its own (stagger.rs). A cgroup budget (`cgroup:90%`) bounds the
//! cgroup's usage, shared by its memtrim processes (siblings.rs): over it, they release in
//! turn, the one retaining the most first, one more each sample; once every one has had its
//! turn and usage stays over for the strikes, only the one with the largest USS signals itself,
//! and one at a time across the cgroup (its claim file, with the stagger window).
use crate::sys::{cgroup, stderr};
use crate::worker::siblings;
use crate::worker::stagger::{self, Turn};
use memtrim_common::config::{Config, LimitAction};
use memtrim_common::limit::{Bound, Limit, Metric, signal_name};
use memtrim_common::page::Stats;
use memtrim_common::units::format_size;
use std::time::{Duration, Instant};

pub enum Action {
    None,
    Release,
    Signalled,
}

pub struct LimitWatch {
    cfg: &'static Config,
    limit: Option<Limit>,
    bytes: u64,
    cgroup_bytes: u64,
    next_cgroup_read: Instant,
    strikes: u64,
    violations: u64,
    signals: u64,
    dry_runs: u64,
    deferred: u64,
    deferred_until_ms: u64,
    /// The claim file could not be used (said once): signals go unstaggered.
    stagger_failed: bool,
    budget: Budget,
    last_value: u64,
    released_this_episode: bool,
    live_at_release: u64,
    quiet_until: Option<Instant>,
}

const CGROUP_REREAD: Duration = Duration::from_secs(10);

/// This process's place in a cgroup budget, at the last sample.
#[derive(Default)]
struct Budget {
    /// By retained memory, 1 the most.
    rank: u64,
    /// The processes sharing it, this one included.
    members: u64,
    /// Whether this one has the largest USS of them.
    largest: bool,
    /// Consecutive samples with the cgroup over the budget, and when the last was counted.
    over: u64,
    over_at: Option<Instant>,
}

impl LimitWatch {
    /// `live` is the live size at start: a bound below it is a mistake, not a reason to kill.
    pub fn new(cfg: &'static Config, live: u64) -> LimitWatch {
        let mut w = LimitWatch {
            cfg,
            limit: cfg.limit,
            bytes: 0,
            cgroup_bytes: 0,
            next_cgroup_read: Instant::now(),
            strikes: 0,
            violations: 0,
            signals: 0,
            dry_runs: 0,
            deferred: 0,
            deferred_until_ms: 0,
            stagger_failed: false,
            budget: Budget::default(),
            last_value: 0,
            released_this_episode: false,
            live_at_release: 0,
            quiet_until: None,
        };
        w.resolve(Instant::now());
        if w.limit.is_some() && w.bytes == 0 {
            stderr::line("memtrim: MEMTRIM_LIMIT is relative to the cgroup's memory limit, and this process's cgroup has none; no limit");
            w.limit = None;
            w.bytes = 0;
        } else if w.limit.is_some() && w.bytes <= live {
            stderr::line(&format!("memtrim: MEMTRIM_LIMIT bound {} is below the live size at start ({}); no limit", format_size(w.bytes), format_size(live)));
            w.limit = None;
            w.bytes = 0;
        }
        w
    }

    /// Whether the limit needs PSS or USS on every sample.
    pub fn needs_smaps(&self) -> bool {
        self.limit.is_some_and(|l| matches!(l.metric, Metric::Pss | Metric::Uss | Metric::Cgroup))
    }

    fn resolve(&mut self, now: Instant) {
        if now < self.next_cgroup_read {
            return;
        }
        self.next_cgroup_read = now + CGROUP_REREAD;
        self.cgroup_bytes = cgroup::memory_limit().unwrap_or(0);
        self.bytes = match self.limit.map(|l| l.bound) {
            Some(Bound::Bytes(b)) => b,
            Some(Bound::OfCgroup(f)) => (self.cgroup_bytes as f64 * f) as u64,
            None => 0,
        };
    }

    /// Looks at one sample. After `Action::Release` the caller releases and calls again with a
    /// fresh sample.
    pub fn check(&mut self, s: &Stats, now: Instant) -> Action {
        self.resolve(now);
        let Some(limit) = self.limit else { return Action::None };
        let budget = limit.metric == Metric::Cgroup;
        self.last_value = match limit.metric {
            Metric::Rss => s.rss_bytes,
            Metric::Pss => s.pss_bytes,
            Metric::Uss => s.uss_bytes,
            Metric::Live => s.live_bytes,
            Metric::Cgroup => cgroup::memory_usage().unwrap_or(0),
        };
        if budget {
            self.place_in_budget(s);
        }
        if self.last_value <= self.bytes {
            self.strikes = 0;
            self.released_this_episode = false;
            self.deferred_until_ms = 0;
            self.budget.over = 0;
            return Action::None;
        }
        // The second look after a release, in the same sample, is not another sample over.
        if self.budget.over_at != Some(now) {
            self.budget.over_at = Some(now);
            self.budget.over += 1;
        }
        // Release first, and again when live memory has fallen since the last release: what the
        // host freed since is retained now, and a release, not a signal, is the answer to it.
        // Under a budget each process releases in its turn, the one retaining the most first.
        if !self.released_this_episode {
            if budget && self.budget.over < self.budget.rank {
                return Action::None;
            }
            self.released_this_episode = true;
            self.live_at_release = s.live_bytes;
            return Action::Release;
        }
        if s.live_bytes.saturating_add(self.cfg.min_retained) < self.live_at_release {
            self.live_at_release = s.live_bytes;
            return Action::Release;
        }
        self.strikes += 1;
        self.violations += 1;
        if self.strikes < self.cfg.limit_strikes || self.quiet_until.is_some_and(|q| now < q) {
            return Action::None;
        }
        // Under a budget only the largest signals, once every process has had its release.
        if budget && (!self.budget.largest || self.budget.over < self.budget.members + self.cfg.limit_strikes) {
            return Action::None;
        }
        let what =
            format!("{} {} > {} for {} samples after a release", limit.metric.name(), format_size(self.last_value), format_size(self.bytes), self.strikes);
        let pid = std::process::id();
        let signal = signal_name(self.cfg.limit_signal);
        if self.cfg.limit_action == LimitAction::Log {
            self.dry_runs += 1;
            self.quiet_until = Some(now + Duration::from_millis(self.cfg.limit_cooldown_ms));
            stderr::line(&format!("memtrim: pid {pid} would send SIG{signal}: {what} (MEMTRIM_LIMIT_ACTION=log)"));
            return Action::None;
        }
        if !self.my_turn(&what, budget) {
            return Action::None;
        }
        self.signals += 1;
        self.quiet_until = Some(now + Duration::from_millis(self.cfg.limit_cooldown_ms));
        stderr::line(&format!("memtrim: pid {pid} over its limit: {what}; sending SIG{signal}"));
        // SAFETY: signals this very process, as configured.
        unsafe { libc::kill(libc::getpid(), self.cfg.limit_signal) };
        Action::Signalled
    }

    /// Whether this worker may signal itself now: no sibling of the same master was signalled
    /// within MEMTRIM_LIMIT_STAGGER_MS (strikes are kept while it defers).
    /// Under a budget the turn is the cgroup's, not the master's.
    fn my_turn(&mut self, what: &str, budget: bool) -> bool {
        if self.cfg.limit_stagger_ms == 0 || self.stagger_failed {
            return true;
        }
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let name = if budget { stagger::of_cgroup() } else { stagger::of_master() };
        match stagger::claim(&self.cfg.shm_dir, &name, self.cfg.limit_stagger_ms, now_ms) {
            Ok(Turn::Go) => {
                self.deferred_until_ms = 0;
                true
            }
            Ok(Turn::Defer { until_ms }) => {
                self.deferred += 1;
                if self.deferred_until_ms == 0 {
                    stderr::line(&format!(
                        "memtrim: pid {} over its limit: {what}; another process was signalled less than MEMTRIM_LIMIT_STAGGER_MS ago: deferring {} ms",
                        std::process::id(),
                        until_ms.saturating_sub(now_ms)
                    ));
                }
                self.deferred_until_ms = until_ms;
                false
            }
            Err(e) => {
                self.stagger_failed = true;
                stderr::line(&format!("memtrim: MEMTRIM_LIMIT_STAGGER_MS: {e}; limit signals go unstaggered"));
                true
            }
        }
    }

    /// This process's rank by retained memory and whether it has the largest USS among the
    /// cgroup's memtrim processes (ties go to the lower pid).
    fn place_in_budget(&mut self, s: &Stats) {
        let pid = std::process::id();
        let others = siblings::of_cgroup(&self.cfg.shm_dir, pid);
        let before = |theirs: u64, their_pid: u32, mine: u64| theirs > mine || (theirs == mine && their_pid < pid);
        self.budget.rank = 1 + others.iter().filter(|o| before(o.retained, o.pid, s.retained_bytes)).count() as u64;
        self.budget.members = 1 + others.len() as u64;
        self.budget.largest = !others.iter().any(|o| before(o.uss, o.pid, s.uss_bytes));
    }

    pub fn fill(&self, s: &mut Stats) {
        s.limit_metric = self.limit.map_or(0, |l| l.metric as u64);
        s.limit_bytes = self.bytes;
        s.limit_value = self.last_value;
        s.limit_strikes = self.strikes;
        s.limit_violations = self.violations;
        s.limit_signals = self.signals;
        s.limit_dry_runs = self.dry_runs;
        s.limit_deferred = self.deferred;
        s.limit_deferred_until_ms = self.deferred_until_ms;
        s.budget_rank = self.budget.rank;
        s.budget_members = self.budget.members;
        s.budget_largest = self.budget.largest as u64;
        s.cgroup_limit_bytes = self.cgroup_bytes;
    }
}
