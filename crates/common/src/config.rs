//! Every `MEMTRIM_` variable, one row each: its name, the field it sets, the kind of value it
//! takes (crate::option_kinds, which says its range), its default and its meaning. The rows
//! give the `Config` struct, its defaults, the reading of the environment, the `VARS` table of
//! `memtrim config`, and a named constant per variable for the readers that cannot build a
//! `Config` (the allocator's first call).
use crate::option_kinds::*;

/// One row of the table, as `memtrim config` lists it.
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    /// Which values it takes.
    pub range: fn() -> String,
}

/// One variable, for a reader that needs its value alone: `MEMTRIM_ALLOCATOR.read(value)`.
pub struct Opt<K> {
    pub name: &'static str,
    pub kind: K,
}

impl<K: Kind> Opt<K> {
    pub fn read(&self, value: &str) -> Option<K::Out> {
        self.kind.read(value)
    }
}

macro_rules! options {
    ($($var:ident $field:ident: $kind:ty = $k:expr, $default:literal, $meaning:literal;)*) => {
        $(pub const $var: Opt<$kind> = Opt { name: stringify!($var), kind: $k };)*

        pub const VARS: &[Var] = &[$(Var { name: stringify!($var), default: $default, meaning: $meaning, range: || $var.kind.range() },)*];

        #[derive(Clone, Debug)]
        pub struct Config {
            $(pub $field: <$kind as Kind>::Out,)*
        }

        impl Config {
            pub fn defaults() -> Config {
                Config { $($field: $var.read($default).expect(concat!(stringify!($var), "'s default is in its range")),)* }
            }

            /// Sets one variable; None if the value is not of its kind.
            fn set(&mut self, name: &str, value: &str) -> Option<()> {
                match name {
                    $(stringify!($var) => self.$field = $var.read(value)?,)*
                    _ => unreachable!("{name} has no row"),
                }
                Some(())
            }
        }
    };
}

const HOUR: u64 = 3_600_000;

options! {
    MEMTRIM_DISABLE disable: Flag = Flag, "0", "1: pure pass-through to the allocator, nothing counted, no thread, no page";
    MEMTRIM_ALLOCATOR allocator: Choice<Allocator> = Choice(&[("glibc", Allocator::Glibc), ("jemalloc", Allocator::Jemalloc)]), "glibc", "backend that serves the host's allocations: glibc, or jemalloc (bundled)";
    MEMTRIM_DIRTY_DECAY_MS dirty_decay_ms: OptionalMillis = OptionalMillis { max: HOUR }, "", "jemalloc: dirty_decay_ms of every arena (empty: jemalloc's default)";
    MEMTRIM_MUZZY_DECAY_MS muzzy_decay_ms: OptionalMillis = OptionalMillis { max: HOUR }, "", "jemalloc: muzzy_decay_ms of every arena (empty: jemalloc's default)";
    MEMTRIM_REPORT report: Flag = Flag, "0", "1: one summary line on stderr at exit (live, peak, allocs, frees)";
    MEMTRIM_LOG log: Choice<LogLevel> = Choice(&[("off", LogLevel::Off), ("error", LogLevel::Error), ("warn", LogLevel::Warn), ("info", LogLevel::Info), ("debug", LogLevel::Debug)]), "warn", "stderr log level";
    MEMTRIM_STATS stats: Flag = Flag, "1", "0: no worker thread and no stats page (counting and the C API remain)";
    MEMTRIM_SHM_DIR shm_dir: AbsoluteDir = AbsoluteDir, "/dev/shm", "directory of the per-process stats pages";
    MEMTRIM_INTERVAL_MS interval_ms: Millis = Millis { min: 10, max: HOUR, zero: None }, "1000", "how often the worker samples and publishes";
    MEMTRIM_START_MS start_ms: Millis = Millis { min: 10, max: HOUR, zero: Some("at the first allocation") }, "1000", "the worker thread starts on the first allocation this long after the process (or a fork child) starts; one that execs, unshares or exits sooner never has a second thread (0: the first allocation)";
    MEMTRIM_SMAPS_INTERVAL_MS smaps_interval_ms: Millis = Millis { min: 100, max: HOUR, zero: None }, "5000", "how often PSS, USS and swap are read from smaps_rollup (costs ms on big processes); a read is skipped while RSS holds within 1/32 of the last one, at most 5 times in a row";
    MEMTRIM_MIN_RETAINED min_retained: Size = Size, "1MiB", "no automatic release unless this much memory was retained since the last one";
    MEMTRIM_FRAG_THRESHOLD frag_threshold: FractionOrOff = FractionOrOff, "0.25", "while busy, release when the heap's resident bytes that live blocks do not use reach this fraction of them (off: only when idle)";
    MEMTRIM_BUSY_BUDGET busy_budget: FractionOrOff = FractionOrOff, "0.01", "while busy, releases and the page faults their pages cause when they come back stay within this share of the process's CPU (off: no budget)";
    MEMTRIM_BUDGET_WINDOW_MS budget_window_ms: Millis = Millis { min: 1000, max: HOUR, zero: None }, "60s", "the window over which MEMTRIM_BUSY_BUDGET is counted";
    MEMTRIM_REFAULT_CHECK_MS refault_check_ms: Millis = Millis { min: 100, max: 600_000, zero: None }, "5s", "how long after a release its pages are looked at again: those resident again came straight back";
    MEMTRIM_MIN_SURVIVAL min_survival: FractionOrOff = FractionOrOff, "0.5", "a kind of busy-time release (trim, tops) whose pages stay returned less than this share is held back and tried again later, 30s to 10min apart (off: refaults only cost budget)";
    MEMTRIM_FAULT_COST_NS fault_cost_ns: Count = Count { min: 0, max: 1_000_000 }, "0", "CPU cost of one page fault in ns, charged to the budget per page that comes back (0: measured when the worker starts)";
    MEMTRIM_IDLE_MS idle_ms: Millis = Millis { min: 10, max: HOUR, zero: Some("off") }, "1000", "release once the allocation rate has stayed low this long (0: never on idle)";
    MEMTRIM_ARENA_TOPS arena_tops: Flag = Flag, "1", "glibc: a release also gives back the top chunks of thread arenas, which malloc_trim(0) leaves resident (0: malloc_trim(0) alone)";
    MEMTRIM_PYMALLOC pymalloc: Flag = Flag, "1", "CPython: a release also gives back the pages of empty pymalloc pools, at the interpreter's next safe point (0: the interpreter is left alone: nothing wrapped, measured or given back)";
    MEMTRIM_PYMALLOC_EVERY_MS pymalloc_every_ms: Millis = Millis { min: 10, max: HOUR, zero: Some("off") }, "0", "for tests: give back empty pymalloc pools this often as well, whatever the policy says (0: only with releases)";
    MEMTRIM_PSI_STALL_MS psi_stall_ms: Millis = Millis { min: 0, max: 1000, zero: None }, "100", "release when memory pressure stalls tasks this long per second (PSI; 0: off)";
    MEMTRIM_LIMIT limit: LimitSpec = LimitSpec, "", "memory limit: pss:600MiB, rss:1GiB, uss:70% (of the cgroup limit), a bare size is PSS; cgroup:90%: a budget on the cgroup's usage, met by its memtrim processes' releases (largest retained first), then by recycling the one with the largest USS, one at a time (empty: none)";
    MEMTRIM_LIMIT_STRIKES limit_strikes: Count = Count { min: 1, max: 1000 }, "3", "consecutive samples over the limit, after a release, before the signal";
    MEMTRIM_LIMIT_SIGNAL limit_signal: Signal = Signal, "TERM", "signal the process sends itself over the limit (TERM: gunicorn and puma workers finish their requests and exit)";
    MEMTRIM_LIMIT_COOLDOWN_MS limit_cooldown_ms: Millis = Millis { min: 10, max: 24 * HOUR, zero: None }, "60s", "after a signal, none again for this long";
    MEMTRIM_LIMIT_ACTION limit_action: Choice<LimitAction> = Choice(&[("signal", LimitAction::Signal), ("log", LimitAction::Log)]), "signal", "what staying over the limit does: signal (MEMTRIM_LIMIT_SIGNAL), or log (a dry run: releases and strikes as for signal, then one \"would send\" line per cool-down and no signal)";
    MEMTRIM_LIMIT_STAGGER_MS limit_stagger_ms: Millis = Millis { min: 10, max: 24 * HOUR, zero: Some("off") }, "30s", "workers of one master (same parent, same user) are not signalled within this long of each other: the later one defers (0: off)";
    MEMTRIM_HARD_LIMIT hard_limit: OptionalSize = OptionalSize, "", "allocations that would take live bytes over this size fail with ENOMEM (empty: none)";
    MEMTRIM_ONLY only: Names = Names, "", "process names that get a thread and a page; others get neither (empty: all)";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    Glibc,
    Jemalloc,
}

/// What staying over MEMTRIM_LIMIT does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitAction {
    Signal,
    /// A dry run: the line the signal would come with, and no signal.
    Log,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

impl Config {
    /// The configuration from the environment's `NAME=value` entries, as bytes and in order
    /// (only `MEMTRIM_` names are looked at). A name given twice means its first value, as for
    /// getenv. Each bad value (one that is not UTF-8 too) or unknown name yields one line for
    /// `warn`; the affected setting keeps its default.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>, warn: &mut dyn FnMut(&str)) -> Config {
        let mut cfg = Config::defaults();
        // by VARS index, not a list of the names met: the environment may hold many thousands
        let mut seen = [false; VARS.len()];
        for (name, value) in pairs {
            if !name.starts_with(b"MEMTRIM_") {
                continue;
            }
            let shown = String::from_utf8_lossy(name);
            let Some((var, seen)) = VARS.iter().zip(seen.iter_mut()).find(|(v, _)| v.name.as_bytes() == name) else {
                warn(&format!("memtrim: unknown variable {shown} ignored (typo? `memtrim config` lists them all)"));
                continue;
            };
            if std::mem::replace(seen, true) {
                continue;
            }
            match std::str::from_utf8(value) {
                Err(_) => warn(&format!("memtrim: {shown}'s value is not UTF-8; using the default {:?}", var.default)),
                Ok(value) => {
                    if cfg.set(var.name, value).is_none() {
                        warn(&format!("memtrim: {shown}={value:?} is not {}; using the default {:?}", (var.range)(), var.default));
                    }
                }
            }
        }
        cfg
    }
}

impl Config {
    /// Whether a process with these names (its comm and the basenames of its first command-line
    /// words) gets a worker thread and a page under MEMTRIM_ONLY.
    pub fn selects(&self, names: &[&str]) -> bool {
        self.only.is_empty() || names.iter().any(|n| self.only.iter().any(|o| o == n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> (Config, Vec<String>) {
        let mut warnings = Vec::new();
        let cfg = Config::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())), &mut |w| warnings.push(w.to_string()));
        (cfg, warnings)
    }

    #[test]
    fn every_var_has_a_setter_and_a_parsable_default() {
        let cfg = Config::defaults();
        assert!(!cfg.disable);
        assert_eq!(cfg.log, LogLevel::Warn);
        for v in VARS {
            let mut c = Config::defaults();
            assert_eq!(c.set(v.name, v.default), Some(()), "{}", v.name);
            assert!(!(v.range)().is_empty(), "{} says no range", v.name);
        }
    }

    #[test]
    fn a_bad_value_is_told_the_range() {
        let (cfg, w) = parse(&[("MEMTRIM_LIMIT_STRIKES", "0")]);
        assert_eq!(cfg.limit_strikes, 3);
        assert_eq!(w, ["memtrim: MEMTRIM_LIMIT_STRIKES=\"0\" is not a count from 1 to 1000; using the default \"3\""]);
    }

    #[test]
    fn bad_value_warns_once_and_keeps_default() {
        let (cfg, w) = parse(&[("MEMTRIM_REPORT", "maybe"), ("PATH", "/bin")]);
        assert!(!cfg.report);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("MEMTRIM_REPORT") && w[0].contains("maybe") && w[0].contains("default"), "{}", w[0]);
    }

    #[test]
    fn durations_lists_and_selection() {
        let (cfg, w) = parse(&[("MEMTRIM_INTERVAL_MS", "250ms"), ("MEMTRIM_ONLY", "gunicorn, puma,")]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(cfg.interval_ms, 250);
        assert_eq!(cfg.only, ["gunicorn", "puma"]);
        assert!(cfg.selects(&["python3", "gunicorn"]));
        assert!(!cfg.selects(&["sh"]));
        let (cfg, w) = parse(&[("MEMTRIM_INTERVAL_MS", "1ms"), ("MEMTRIM_SHM_DIR", "tmp")]);
        assert_eq!((cfg.interval_ms, cfg.shm_dir.as_str(), w.len()), (1000, "/dev/shm", 2));
    }

    #[test]
    fn a_name_given_twice_means_its_first_value() {
        let (cfg, w) = parse(&[("MEMTRIM_REPORT", "1"), ("MEMTRIM_REPORT", "0"), ("MEMTRIM_LOG", "info"), ("MEMTRIM_LOG", "nonsense")]);
        assert!(w.is_empty(), "{w:?}");
        assert!(cfg.report, "MEMTRIM_REPORT given 1 then 0 was read as 0: the last value was used, not the first");
        assert_eq!(cfg.log, LogLevel::Info);
    }

    #[test]
    fn a_positive_duration_that_rounds_to_zero_warns() {
        for (name, value) in
            [("MEMTRIM_IDLE_MS", "0.0000000001s"), ("MEMTRIM_IDLE_MS", "0.4"), ("MEMTRIM_DIRTY_DECAY_MS", "0.0001s"), ("MEMTRIM_PSI_STALL_MS", "0.2ms")]
        {
            let (cfg, w) = parse(&[(name, value)]);
            assert_eq!(w.len(), 1, "{name}={value}: {w:?}");
            assert!(w[0].contains(name) && w[0].contains("default"), "{}", w[0]);
            let default = Config::defaults();
            assert_eq!((cfg.idle_ms, cfg.dirty_decay_ms, cfg.psi_stall_ms), (default.idle_ms, default.dirty_decay_ms, default.psi_stall_ms), "{name}={value}");
        }
        let (cfg, w) = parse(&[("MEMTRIM_IDLE_MS", "0"), ("MEMTRIM_PSI_STALL_MS", "0s"), ("MEMTRIM_DIRTY_DECAY_MS", "0.0")]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!((cfg.idle_ms, cfg.psi_stall_ms, cfg.dirty_decay_ms), (0, 0, Some(0)));
    }

    #[test]
    fn a_value_that_is_not_utf8_warns_and_keeps_the_default() {
        let mut warnings = Vec::new();
        let pairs: [(&[u8], &[u8]); 2] = [(b"MEMTRIM_LOG", b"w\xffrn"), (b"MEMTRIM_REPORT", b"1")];
        let cfg = Config::from_pairs(pairs.into_iter(), &mut |w| warnings.push(w.to_string()));
        assert_eq!((cfg.log, cfg.report), (LogLevel::Warn, true));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("MEMTRIM_LOG") && warnings[0].contains("not UTF-8") && warnings[0].contains("default \"warn\""), "{}", warnings[0]);
    }

    #[test]
    fn unknown_name_warns() {
        let (_, w) = parse(&[("MEMTRIM_REPROT", "1")]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("MEMTRIM_REPROT"));
    }
}
