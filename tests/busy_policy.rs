//! The busy-time release policy and its cost model against a CPython server that is never idle
//! (tests/py/busy_churn.py: 4 threads serving requests of glibc-malloc'd bytearrays without
//! pause): memory that stays returned is released while busy, within the budget; memory that
//! comes straight back is held for its refaults, where without the survival gate it is released
//! again and again; a tiny budget holds busy releases back.
//!
//! glibc only: refaults are measured with mincore over glibc's heaps (the jemalloc backend's busy
//! release is decay, with no refault measure), so this binary is not in scripts/test's jemalloc
//! list. Figures come from `memtrim stat PID --json`, read every 100 ms (the worker samples every
//! 200 ms); every read must show the process busy (`idle` false). The tests run one at a time:
//! each keeps both cores busy, and the figures are shares of the process's CPU.

mod common;

use common::{Json, JsonExt, PyHost, python, serial, stat_json};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// What every host runs with: blocks below 4 MiB stay in glibc's arenas, which do not trim by
/// themselves; samples every 200 ms, refaults looked at 1 s after a release, a minor fault
/// charged 1 µs; no idle trigger (the host is never idle anyway) and no pressure trigger (the
/// machine is shared: its pressure is not the test's).
const ENV: [(&str, &str); 7] = [
    ("MALLOC_MMAP_THRESHOLD_", "4194304"),
    ("MALLOC_TRIM_THRESHOLD_", "4294967296"),
    ("MEMTRIM_INTERVAL_MS", "200ms"),
    ("MEMTRIM_REFAULT_CHECK_MS", "1s"),
    ("MEMTRIM_FAULT_COST_NS", "1000"),
    ("MEMTRIM_IDLE_MS", "0"),
    ("MEMTRIM_PSI_STALL_MS", "0"),
];

/// The page fields of the cost model (JSON names) that every read must have.
const COST_FIELDS: [&str; 11] = [
    "process_cpu_ms",
    "minor_faults",
    "heap_resident_bytes",
    "budget_used",
    "release_cpu_ms",
    "last_release_kind",
    "last_release_pages",
    "last_refault_pages",
    "released_pages",
    "refault_pages",
    "fault_cost_ns",
];

/// tests/py/busy_churn.py under the library, serving; None (skipped) without python3 or on
/// another backend than glibc.
fn start(tag: &str, extra: &[(&str, &str)]) -> Option<PyHost> {
    if common::allocator() != "glibc" {
        eprintln!("SKIP: refaults are measured on glibc's heaps only");
        return None;
    }
    let mut env = ENV.to_vec();
    env.extend_from_slice(extra);
    let mut h = PyHost::start(python()?, "busy_churn.py", tag, &env);
    h.ask("start");
    h.page();
    Some(h)
}

fn page_size() -> u64 {
    // SAFETY: no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u64
}

/// One read of the page.
struct Sample {
    at: Instant,
    j: Json,
}

impl Sample {
    fn n(&self, key: &str) -> u64 {
        self.j.field(key).as_u64().unwrap_or_else(|| panic!("{key} is not a count: {}", self.j))
    }

    /// The last release's pages resident again at its check, once looked at (null until then).
    fn refaulted(&self) -> Option<u64> {
        self.j.field("last_refault_pages").as_u64()
    }

    /// Busy-time releases so far.
    fn busy(&self) -> u64 {
        self.j.field("releases_by_reason").int("retained") as u64
    }

    fn skip(&self) -> String {
        self.j.field("release_skip_reason").as_str().unwrap_or("null").to_string()
    }

    fn line(&self, t0: Instant) -> String {
        let j = &self.j;
        format!(
            "{:5.1} s: busy releases {}, kind {}, heap resident {:.1} MiB, live {:.1} MiB, new retained {:.1} MiB, last release {} pages, refaulted {}, skip {}, budget_used {}, survival trim {} tops {}, process cpu {} ms, release cpu {} ms",
            self.at.duration_since(t0).as_secs_f64(),
            self.busy(),
            j.field("last_release_kind"),
            mib(self.n("heap_resident_bytes")),
            mib(self.n("live_bytes")),
            mib(self.n("new_retained")),
            self.n("last_release_pages"),
            self.refaulted().map_or("-".into(), |n| n.to_string()),
            self.skip(),
            j.field("budget_used"),
            j.field("survival_trim"),
            j.field("survival_tops"),
            j.field("process_cpu_ms"),
            j.field("release_cpu_ms"),
        )
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

/// Reads the page every 100 ms for `limit`, or until `done` holds for the reads so far. Every
/// read must have the cost model's fields and show the process busy.
fn watch(h: &PyHost, limit: Duration, done: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let start = Instant::now();
    let mut v: Vec<Sample> = Vec::new();
    while start.elapsed() < limit && !done(&v) {
        let j = stat_json(&h.dir.0, h.pid).unwrap_or_else(|e| panic!("memtrim stat failed: {e}"));
        for f in COST_FIELDS {
            assert!(j.has(f), "the page has no {f} (memtrim stat --json): {j}");
        }
        assert_eq!(j.field("idle"), &Json::Bool(false), "the serving host was seen idle: {j}");
        v.push(Sample { at: Instant::now(), j });
        std::thread::sleep(Duration::from_millis(100));
    }
    v
}

/// The reads where something changed (a release, the reason the last sample held one back),
/// one per line.
fn timeline(v: &[Sample], t0: Instant) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for s in v {
        let key = format!("{} {} {:?} {}", s.j.int("trims"), s.skip(), s.refaulted(), s.n("heap_resident_bytes") / (4 * MIB));
        if key != last {
            out += &s.line(t0);
            out.push('\n');
            last = key;
        }
    }
    out
}

/// How many reads said each release_skip_reason, in the order first seen.
fn reasons(v: &[Sample]) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for s in v {
        match out.iter_mut().find(|(r, _)| *r == s.skip()) {
            Some((_, n)) => *n += 1,
            None => out.push((s.skip(), 1)),
        }
    }
    out
}

fn requests(h: &mut PyHost) -> u64 {
    let a = h.ask("requests");
    a.strip_prefix("requests ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("requests answered {a:?}"))
}

/// Phase A: 60 MiB in 32 KiB blocks, held 1.5 s in the serving threads' arenas, then freed,
/// while the threads go on serving. Within 12 s a busy-time release returns it: heap resident
/// falls by at least 40 MiB from its peak, the release's own pages make up most of the fall, at
/// most a fifth of them are resident again at its refault check, and the release CPU and
/// refaults stay within the default budget (1 %, 1.5 % allowed).
#[test]
fn memory_that_stays_returned_is_released_while_busy() {
    let _one = serial();
    let Some(mut h) = start("stays", &[]) else { return };
    let t0 = Instant::now();
    // the arenas grow to the requests' working size, and the budget's window gathers some of
    // the process's CPU (the first release of a window always fits: on a window of little CPU
    // it alone would be most of the budget)
    let mut v = watch(&h, Duration::from_secs(10), |_| false);
    let base = v.last().unwrap().n("heap_resident_bytes");
    let served = requests(&mut h);
    h.ask("hold 60 32768");
    let held = v.len();
    v.extend(watch(&h, Duration::from_millis(1500), |_| false));
    let before = v.last().unwrap().busy();
    let peak = v[held..].iter().map(|s| s.n("heap_resident_bytes")).max().unwrap();
    h.ask("free");
    let page = page_size();
    // the release that returned the burst (40 MiB or more), once its refault check is on the page
    let big = |s: &Sample| s.busy() > before && s.n("last_release_pages") * page >= 40 * MIB;
    let freed = v.len();
    v.extend(watch(&h, Duration::from_secs(12), |w| w.last().is_some_and(|s| big(s) && s.refaulted().is_some())));
    let served = requests(&mut h) - served;
    let log = timeline(&v, t0);
    eprintln!("{log}");
    let last = v.last().unwrap();
    let low = v[freed..].iter().map(|s| s.n("heap_resident_bytes")).min().unwrap();
    eprintln!(
        "heap resident: {:.1} MiB settled, {:.1} MiB peak with the burst held, {:.1} MiB lowest after; {served} requests served meanwhile",
        mib(base),
        mib(peak),
        mib(low)
    );
    assert!(peak >= base + 40 * MIB, "holding 60 MiB took heap resident only from {:.1} to {:.1} MiB", mib(base), mib(peak));
    assert!(served >= 100, "the host served only {served} requests while watched");
    assert!(big(last), "no busy-time release returned 40 MiB or more within 12 s of the free:\n{log}");
    let Some(refaulted) = last.refaulted() else { panic!("the release's refault check never came:\n{log}") };
    let fell = peak.saturating_sub(low);
    assert!(fell >= 40 * MIB, "heap resident fell by only {:.1} MiB from its peak of {:.1}:\n{log}", mib(fell), mib(peak));
    let released = last.n("last_release_pages");
    assert!(released * page * 10 >= fell * 6, "the release's {released} pages are not most of the fall of {:.1} MiB:\n{log}", mib(fell));
    assert!(refaulted * 5 <= released, "{refaulted} of the release's {released} pages were resident again at the check:\n{log}");
    assert_eq!(last.j.num("busy_budget"), 0.01, "the default MEMTRIM_BUSY_BUDGET");
    let used = last.j.num("budget_used");
    assert!(used <= 0.015, "budget_used {used} over the 1 % budget:\n{log}");
}

/// Phase B, with the budget off so that only refaults hold releases: every 300 ms each thread
/// allocates and frees 10 MiB in 64 KiB blocks, while serving. Returns the busy-time releases
/// of 20 s of it, and the reads.
fn waves(tag: &str, extra: &[(&str, &str)]) -> Option<(u64, Vec<Sample>, Instant)> {
    let mut env = vec![("MEMTRIM_BUSY_BUDGET", "off")];
    env.extend_from_slice(extra);
    let mut h = start(tag, &env)?;
    let t0 = Instant::now();
    let settle = watch(&h, Duration::from_secs(3), |_| false);
    let before = settle.last().unwrap().busy();
    h.ask("waves 10 65536 300");
    let v = watch(&h, Duration::from_secs(20), |_| false);
    let n = v.last().unwrap().busy() - before;
    eprintln!("{tag}: {n} busy-time releases in 20 s of waves\n{}", timeline(&v, t0));
    Some((n, v, t0))
}

/// Memory that comes straight back: once the first busy-time releases find their pages resident
/// again at their checks, the page says `refaults`, and 20 s of waves see at most 4 busy-time
/// releases (the trim, the tops alone, a probe) under the default MEMTRIM_MIN_SURVIVAL; with
/// MEMTRIM_MIN_SURVIVAL=off the same waves are released at least 3 times as often, and at least 10
/// times (one release per refault check, the most the policy allows, is about 20).
#[test]
fn memory_that_comes_straight_back_is_held_for_its_refaults() {
    let _one = serial();
    let Some((gated, v, t0)) = waves("gated", &[]) else { return };
    let log = timeline(&v, t0);
    assert!(v.iter().any(|s| s.skip() == "refaults"), "release_skip_reason never read refaults:\n{log}");
    assert!(gated <= 4, "{gated} busy-time releases in 20 s of memory that comes straight back:\n{log}");
    let last = v.last().unwrap();
    let refaulted = last.n("refault_pages") as f64 / last.n("released_pages").max(1) as f64;
    assert!(refaulted >= 0.5, "only {refaulted:.2} of the released pages refaulted: the waves do not come back as they should:\n{log}");
    let Some((free, v, t0)) = waves("ungated", &[("MEMTRIM_MIN_SURVIVAL", "off")]) else { return };
    eprintln!("busy-time releases in 20 s: {gated} held for refaults, {free} with MEMTRIM_MIN_SURVIVAL=off");
    assert!(!v.iter().any(|s| s.skip() == "refaults"), "release_skip_reason read refaults with MEMTRIM_MIN_SURVIVAL=off:\n{}", timeline(&v, t0));
    assert!(
        free >= 10 && free >= 3 * gated,
        "{free} busy-time releases with MEMTRIM_MIN_SURVIVAL=off, {gated} with the default; the reads of the former said release_skip_reason {:?}",
        reasons(&v)
    );
}

/// MEMTRIM_BUSY_BUDGET=0.0001: five rounds of phase A (40 MiB held, then freed, every 3 s) get
/// at most 2 busy-time releases (what the window allows at first), the page says `budget`, and
/// most of the freed memory stays resident.
#[test]
fn a_tiny_budget_holds_busy_releases_back() {
    let _one = serial();
    let Some(mut h) = start("budget", &[("MEMTRIM_BUSY_BUDGET", "0.0001")]) else { return };
    let t0 = Instant::now();
    let settle = watch(&h, Duration::from_secs(3), |_| false);
    let first = settle.last().unwrap();
    let (before, base) = (first.busy(), first.n("heap_resident_bytes"));
    let mut v = Vec::new();
    for _ in 0..5 {
        h.ask("hold 40 32768");
        v.extend(watch(&h, Duration::from_millis(500), |_| false));
        h.ask("free");
        v.extend(watch(&h, Duration::from_millis(2500), |_| false));
    }
    let log = timeline(&v, t0);
    eprintln!("{log}");
    let last = v.last().unwrap();
    let n = last.busy() - before;
    let kept = last.n("heap_resident_bytes").saturating_sub(base);
    eprintln!("{n} busy-time releases in 5 rounds; heap resident {:.1} MiB over the settled {:.1} MiB at the end", mib(kept), mib(base));
    assert!(v.iter().any(|s| s.skip() == "budget"), "release_skip_reason never read budget:\n{log}");
    assert!(n <= 2, "{n} busy-time releases under MEMTRIM_BUSY_BUDGET=0.0001:\n{log}");
    assert!(kept >= 20 * MIB, "heap resident ended only {:.1} MiB over the settled figure: released although over budget?\n{log}", mib(kept));
}
