//! Every `MEMTRIM_` variable: its default, its meaning, and how its value is read. The table is
//! the single source for `memtrim config` and for the library's defaults.
use crate::limit::{parse_limit, parse_signal, Limit};
use crate::units::{parse_bool, parse_duration_ms, parse_fraction, parse_size};

pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

pub const VARS: &[Var] = &[
    Var { name: "MEMTRIM_DISABLE", default: "0", meaning: "1: pure pass-through to the allocator, nothing counted, no thread, no page" },
    Var { name: "MEMTRIM_ALLOCATOR", default: "glibc", meaning: "backend that serves the host's allocations: glibc, or jemalloc (bundled)" },
    Var { name: "MEMTRIM_DIRTY_DECAY_MS", default: "", meaning: "jemalloc: dirty_decay_ms of every arena (empty: jemalloc's default)" },
    Var { name: "MEMTRIM_MUZZY_DECAY_MS", default: "", meaning: "jemalloc: muzzy_decay_ms of every arena (empty: jemalloc's default)" },
    Var { name: "MEMTRIM_REPORT", default: "0", meaning: "1: one summary line on stderr at exit (live, peak, allocs, frees)" },
    Var { name: "MEMTRIM_LOG", default: "warn", meaning: "stderr log level: off, error, warn, info, debug" },
    Var { name: "MEMTRIM_STATS", default: "1", meaning: "0: no worker thread and no stats page (counting and the C API remain)" },
    Var { name: "MEMTRIM_SHM_DIR", default: "/dev/shm", meaning: "directory of the per-process stats pages" },
    Var { name: "MEMTRIM_INTERVAL_MS", default: "1000", meaning: "how often the worker samples and publishes (duration: 250ms, 2s)" },
    Var { name: "MEMTRIM_START_MS", default: "1000", meaning: "the worker thread starts on the first allocation this long after the process (or a fork child) starts; one that execs, unshares or exits sooner never has a second thread (0: the first allocation)" },
    Var { name: "MEMTRIM_SMAPS_INTERVAL_MS", default: "5000", meaning: "how often PSS, USS and swap are read from smaps_rollup (costs ms on big processes)" },
    Var { name: "MEMTRIM_MIN_RETAINED", default: "1MiB", meaning: "no automatic release unless this much memory was retained since the last one" },
    Var { name: "MEMTRIM_FRAG_THRESHOLD", default: "0.5", meaning: "while busy, release when retained/heap reaches this fraction (0.5, 50%; off: only when idle)" },
    Var { name: "MEMTRIM_IDLE_MS", default: "1000", meaning: "release once the allocation rate has stayed low this long (0: never on idle)" },
    Var { name: "MEMTRIM_ARENA_TOPS", default: "1", meaning: "glibc: a release also gives back the top chunks of thread arenas, which malloc_trim(0) leaves resident (0: malloc_trim(0) alone)" },
    Var { name: "MEMTRIM_PYMALLOC", default: "1", meaning: "CPython: a release also gives back the pages of empty pymalloc pools, at the interpreter's next safe point (0: the interpreter is left alone: nothing wrapped, measured or given back)" },
    Var { name: "MEMTRIM_PYMALLOC_EVERY_MS", default: "0", meaning: "for tests: give back empty pymalloc pools this often as well, whatever the policy says (0: only with releases)" },
    Var { name: "MEMTRIM_PSI_STALL_MS", default: "100", meaning: "release when memory pressure stalls tasks this long per second (PSI; 0: off)" },
    Var { name: "MEMTRIM_LIMIT", default: "", meaning: "memory limit: pss:600MiB, rss:1GiB, uss:70% (of the cgroup limit), a bare size is PSS (empty: none)" },
    Var { name: "MEMTRIM_LIMIT_STRIKES", default: "3", meaning: "consecutive samples over the limit, after a release, before the signal" },
    Var { name: "MEMTRIM_LIMIT_SIGNAL", default: "TERM", meaning: "signal the process sends itself over the limit (TERM: gunicorn and puma workers finish their requests and exit)" },
    Var { name: "MEMTRIM_LIMIT_COOLDOWN_MS", default: "60s", meaning: "after a signal, none again for this long" },
    Var { name: "MEMTRIM_HARD_LIMIT", default: "", meaning: "allocations that would take live bytes over this size fail with ENOMEM (empty: none)" },
    Var { name: "MEMTRIM_ONLY", default: "", meaning: "comma list of process names; others get no thread and no page (empty: all)" },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    Glibc,
    Jemalloc,
}

pub fn parse_allocator(value: &str) -> Option<Allocator> {
    match value.trim() {
        "glibc" => Some(Allocator::Glibc),
        "jemalloc" => Some(Allocator::Jemalloc),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub disable: bool,
    pub allocator: Allocator,
    pub report: bool,
    pub log: LogLevel,
    pub stats: bool,
    pub shm_dir: String,
    pub interval_ms: u64,
    pub start_ms: u64,
    pub smaps_interval_ms: u64,
    pub only: Vec<String>,
    pub min_retained: u64,
    /// None: no release while busy.
    pub frag_threshold: Option<f64>,
    pub idle_ms: u64,
    pub arena_tops: bool,
    pub pymalloc: bool,
    pub pymalloc_every_ms: u64,
    pub psi_stall_ms: u64,
    pub limit: Option<Limit>,
    pub limit_strikes: u64,
    pub limit_signal: i32,
    pub limit_cooldown_ms: u64,
    pub hard_limit: Option<u64>,
    pub dirty_decay_ms: Option<u64>,
    pub muzzy_decay_ms: Option<u64>,
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
                    if let Err(expected) = cfg.set(var.name, value) {
                        warn(&format!("memtrim: {shown}={value:?} is not {expected}; using the default {:?}", var.default));
                    }
                }
            }
        }
        cfg
    }

    pub fn defaults() -> Config {
        let mut cfg = Config {
            disable: false,
            allocator: Allocator::Glibc,
            report: false,
            log: LogLevel::Warn,
            stats: true,
            shm_dir: String::new(),
            interval_ms: 0,
            start_ms: 0,
            smaps_interval_ms: 0,
            only: Vec::new(),
            min_retained: 0,
            frag_threshold: None,
            idle_ms: 0,
            arena_tops: false,
            pymalloc: false,
            pymalloc_every_ms: 0,
            psi_stall_ms: 0,
            limit: None,
            limit_strikes: 0,
            limit_signal: 0,
            limit_cooldown_ms: 0,
            hard_limit: None,
            dirty_decay_ms: None,
            muzzy_decay_ms: None,
        };
        for v in VARS {
            cfg.set(v.name, v.default).expect("defaults in the table parse");
        }
        cfg
    }

    /// Sets one variable; on a bad value returns what was expected.
    fn set(&mut self, name: &str, value: &str) -> Result<(), &'static str> {
        match name {
            "MEMTRIM_DISABLE" => self.disable = parse_bool(value).ok_or("a boolean (0/1)")?,
            "MEMTRIM_REPORT" => self.report = parse_bool(value).ok_or("a boolean (0/1)")?,
            "MEMTRIM_ALLOCATOR" => {
                self.allocator = parse_allocator(value).ok_or("a known allocator (glibc, jemalloc)")?
            }
            "MEMTRIM_LOG" => {
                self.log = match value.trim() {
                    "off" => LogLevel::Off,
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    _ => return Err("a log level (off, error, warn, info, debug)"),
                }
            }
            "MEMTRIM_STATS" => self.stats = parse_bool(value).ok_or("a boolean (0/1)")?,
            "MEMTRIM_SHM_DIR" => {
                if !value.starts_with('/') {
                    return Err("an absolute directory");
                }
                self.shm_dir = value.trim_end_matches('/').to_string();
            }
            "MEMTRIM_INTERVAL_MS" => self.interval_ms = duration_in(value, 10, 3_600_000)?,
            "MEMTRIM_START_MS" => self.start_ms = duration_or_zero(value)?,
            "MEMTRIM_SMAPS_INTERVAL_MS" => self.smaps_interval_ms = duration_in(value, 100, 3_600_000)?,
            "MEMTRIM_ONLY" => self.only = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            "MEMTRIM_MIN_RETAINED" => self.min_retained = parse_size(value).ok_or("a size (8M, 64MiB)")?,
            "MEMTRIM_FRAG_THRESHOLD" => {
                self.frag_threshold = match value.trim() {
                    "off" => None,
                    v => Some(parse_fraction(v).ok_or("a fraction (0.5, 50%) or off")?),
                }
            }
            "MEMTRIM_IDLE_MS" => self.idle_ms = duration_or_zero(value)?,
            "MEMTRIM_ARENA_TOPS" => self.arena_tops = parse_bool(value).ok_or("a boolean (0/1)")?,
            "MEMTRIM_PYMALLOC" => self.pymalloc = parse_bool(value).ok_or("a boolean (0/1)")?,
            "MEMTRIM_PYMALLOC_EVERY_MS" => self.pymalloc_every_ms = duration_or_zero(value)?,
            "MEMTRIM_PSI_STALL_MS" => self.psi_stall_ms = duration_in(value, 0, 1000).map_err(|_| "a stall from 0 to 1000ms per second")?,
            "MEMTRIM_LIMIT" => {
                self.limit = match value.trim() {
                    "" => None,
                    v => Some(parse_limit(v).ok_or("a limit (pss:600MiB, rss:1GiB, uss:70%)")?),
                }
            }
            "MEMTRIM_LIMIT_STRIKES" => self.limit_strikes = value.trim().parse().ok().filter(|n| (1..=1000).contains(n)).ok_or("a count from 1 to 1000")?,
            "MEMTRIM_LIMIT_SIGNAL" => self.limit_signal = parse_signal(value).ok_or("a signal (TERM, INT, HUP, QUIT, USR1, USR2, KILL)")?,
            "MEMTRIM_LIMIT_COOLDOWN_MS" => self.limit_cooldown_ms = duration_in(value, 10, 3_600_000 * 24)?,
            "MEMTRIM_HARD_LIMIT" => {
                self.hard_limit = match value.trim() {
                    "" => None,
                    v => Some(parse_size(v).filter(|b| *b > 0).ok_or("a size (2GiB)")?),
                }
            }
            "MEMTRIM_DIRTY_DECAY_MS" => self.dirty_decay_ms = optional_duration(value)?,
            "MEMTRIM_MUZZY_DECAY_MS" => self.muzzy_decay_ms = optional_duration(value)?,
            _ => unreachable!("{name} is in VARS but has no setter"),
        }
        Ok(())
    }
}

fn optional_duration(value: &str) -> Result<Option<u64>, &'static str> {
    match value.trim() {
        "" => Ok(None),
        v => parse_duration_ms(v).filter(|ms| *ms <= 3_600_000).map(Some).ok_or("a duration up to 1h (0, 500ms, 10s)"),
    }
}

fn duration_or_zero(value: &str) -> Result<u64, &'static str> {
    match parse_duration_ms(value) {
        Some(0) => Ok(0),
        _ => duration_in(value, 10, 3_600_000).map_err(|_| "0 (off) or a duration from 10ms to 1h"),
    }
}

fn duration_in(value: &str, min_ms: u64, max_ms: u64) -> Result<u64, &'static str> {
    parse_duration_ms(value).filter(|v| (min_ms..=max_ms).contains(v)).ok_or("a duration in range (250ms, 2s; `memtrim config` shows the defaults)")
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
        assert!(cfg.report, "the last MEMTRIM_REPORT was used");
        assert_eq!(cfg.log, LogLevel::Info);
    }

    #[test]
    fn a_positive_duration_that_rounds_to_zero_warns() {
        for (name, value) in [("MEMTRIM_IDLE_MS", "0.0000000001s"), ("MEMTRIM_IDLE_MS", "0.4"), ("MEMTRIM_DIRTY_DECAY_MS", "0.0001s"), ("MEMTRIM_PSI_STALL_MS", "0.2ms")] {
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
