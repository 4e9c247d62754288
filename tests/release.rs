//! The release engine against real processes: a fragmented CPython heap falls back near its
//! live size once idle; nothing is released while too little is retained; `memtrim trim` and
//! `memtrim_trim()` are honoured and counted per reason; the PSI trigger is armed where the
//! kernel lets the process arm one; MEMTRIM_LOG=info prints one line per release.
//!
//! The host is tests/py/release_host.py (driven over stdin/stdout), run with the library
//! preloaded and its own MEMTRIM_SHM_DIR. Figures come from the process's stats page, read
//! here with the layout of crates/common (the same code the library writes it with), from
//! `memtrim stat PID --json`, and from /proc/PID/status.
//!
//! What cannot be tested here: actually provoking memory pressure. These machines have no swap
//! and far more memory than a test may take, and the machine is shared, so a stall of 100 ms
//! per second on the memory PSI line cannot be produced on purpose; the PSI test checks that
//! the trigger is armed (the page's psi_armed) and off when disabled.

mod common;

use common::{Json, JsonExt, PyHost, TUNING, TempDir, memtrim, preloaded, python, stat_json, text, wait_for, without_env};
use memtrim_common::page::{Reason, Stats};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// The fragmenting pattern: 20000 buffers of 16000 bytes (≈ 305 MiB, below glibc's mmap
/// threshold, so they live in the arena), one in 16 kept (≈ 19 MiB live, spread over the
/// whole heap). Each kept buffer pins the ≈ 5 pages it touches, so the best any release can do
/// is ≈ 1.28 × the live bytes resident.
const FRAG: &str = "frag 20000 16000 16";
/// Resident growth allowed after the release, as a multiple of the growth in live bytes:
/// the 1.28 floor above plus 25 % for CPython's own objects and glibc's bookkeeping.
const NEAR_LIVE: f64 = 1.6;

/// tests/py/release_host.py under the library.
fn start(tag: &str, env: &[(&str, &str)]) -> Option<PyHost> {
    Some(PyHost::start(python()?, "release_host.py", tag, env))
}

/// What these tests ask of the host besides what common gives.
impl PyHost {
    /// The release log lines once there are at least `n`: stderr comes through a pipe and a
    /// reader thread, so a line may still be on its way when the page already counts its release.
    fn release_lines(&self, n: u64) -> Vec<(String, String)> {
        wait_for(&format!("{n} release log lines"), Duration::from_secs(5), || {
            let lines = release_lines(&self.stderr(), self.pid);
            if lines.len() as u64 >= n { Ok(lines) } else { Err(self.stderr()) }
        })
    }

    /// Waits until `done` holds for the page (polling); the page when it does, or a failure
    /// that shows the last page.
    fn wait_page(&self, what: &str, limit: Duration, done: impl Fn(&Stats) -> bool) -> Stats {
        wait_for(what, limit, || {
            let s = self.page();
            if done(&s) { Ok(s) } else { Err(describe(&s)) }
        })
    }

    /// `memtrim stat PID --json`.
    fn stat_json(&self) -> Json {
        stat_json(&self.dir.0, self.pid).unwrap_or_else(|e| panic!("memtrim stat failed: {e}"))
    }

    fn rss(&self) -> u64 {
        rss_of(self.pid)
    }
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap();
    kib * 1024
}

fn by(s: &Stats, r: Reason) -> u64 {
    s.releases_by_reason[r as usize]
}

fn describe(s: &Stats) -> String {
    format!(
        "trims {} by reason {:?}, released {} B, live {}, heap {}, retained {}, floor {}, rss {}, checks {}, skipped_small {}, skipped_backoff {}, alloc_rate {}, idle {}, psi_armed {}",
        s.trims,
        Reason::ALL.iter().map(|r| (r.name(), s.releases_by_reason[*r as usize])).filter(|x| x.1 > 0).collect::<Vec<_>>(),
        s.released_bytes,
        s.live_bytes,
        s.heap_bytes,
        s.retained_bytes,
        s.new_retained,
        s.rss_bytes,
        s.policy_checks,
        s.skipped_small,
        s.skipped_backoff,
        s.alloc_rate,
        s.idle,
        s.psi_armed
    )
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

/// The info log lines of releases: `memtrim: pid N release (REASON): rss A -> B (C released)
/// in T ms`, as (reason, line).
fn release_lines(stderr: &str, pid: u32) -> Vec<(String, String)> {
    let prefix = format!("memtrim: pid {pid} release (");
    stderr.lines().filter_map(|l| l.strip_prefix(&prefix).map(|rest| (rest.split(')').next().unwrap_or("").to_string(), l.to_string()))).collect()
}

/// Checks the shape of one log line: `rss A -> B (C released) in T ms` with B <= A and T a
/// number.
fn check_log_line(line: &str) {
    let after = line.split("): rss ").nth(1).unwrap_or_else(|| panic!("no `): rss ` in {line:?}"));
    let (before, rest) = after.split_once(" -> ").unwrap_or_else(|| panic!("no ` -> ` in {line:?}"));
    let (after_rss, rest) = rest.split_once(" (").unwrap_or_else(|| panic!("no ` (` after the second size in {line:?}"));
    let (_released, rest) = rest.split_once(" released) in ").unwrap_or_else(|| panic!("no `released) in` in {line:?}"));
    let ms = rest.strip_suffix(" ms").unwrap_or_else(|| panic!("no duration in ms at the end of {line:?}"));
    assert!(ms.parse::<f64>().is_ok_and(|v| v >= 0.0), "duration {ms:?} in {line:?}");
    let size = |s: &str| -> f64 {
        let (v, unit) = s.trim().split_once(' ').unwrap_or_else(|| panic!("size {s:?} in {line:?}"));
        let v: f64 = v.parse().unwrap_or_else(|_| panic!("size {s:?} in {line:?}"));
        v * match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => MIB as f64,
            "GiB" => (MIB * 1024) as f64,
            _ => panic!("unit {unit:?} in {line:?}"),
        }
    };
    // A release that finds nothing to return may still fault a few pages in (glibc's trim
    // consolidates free chunks, writing headers into pages an earlier release dropped; the
    // worker's own allocations): a release never grows RSS by more than that.
    assert!(size(after_rss) <= size(before) + 1024.0 * 1024.0, "rss grew in {line:?}");
}

/// The fragmented heap, which plain glibc keeps resident, falls to near its live size; returns
/// the page of the release.
fn fragmented_heap_ends_near_live(tag: &str, env: &[(&str, &str)]) -> Option<Stats> {
    let mut env = env.to_vec();
    env.push(("MEMTRIM_LOG", "info"));
    let mut h = start(tag, &env)?;
    let base = h.page();
    let (live0, rss0) = (base.live_bytes, h.rss());
    h.ask(FRAG);
    let rss_freed = h.rss();
    let held = rss_freed.saturating_sub(rss0);
    // On the jemalloc backend a busy-time release returns only the pages past their decay time,
    // so the first release need not be the one that returns most.
    let s = h.wait_page("releases after the fragmenting pattern", Duration::from_secs(20), |s| s.trims >= 1 && s.released_bytes >= held / 2);
    // the page of the release is published before the worker sleeps again; one more interval
    // so that the JSON below sees the same release
    std::thread::sleep(Duration::from_millis(1200));
    let json = h.stat_json();
    let (live1, rss1, trims) = (json.int("live_bytes") as u64, h.rss(), json.int("trims") as u64);
    let live_growth = live1.saturating_sub(live0);
    let kept = rss1.saturating_sub(rss0);
    let ratio = kept as f64 / live_growth.max(1) as f64;
    eprintln!(
        "{tag}: live +{:.1} MiB; resident after the frees +{:.1} MiB; after the release +{:.1} MiB = {ratio:.2} x live (limit {NEAR_LIVE}); {}",
        mib(live_growth),
        mib(held),
        mib(kept),
        describe(&s)
    );
    assert!(live_growth > 15 * MIB && live_growth < 25 * MIB, "live grew by {:.1} MiB, expected ≈ 19", mib(live_growth));
    assert!(held > 8 * live_growth, "the pattern did not fragment: +{:.1} MiB resident right after the frees", mib(held));
    assert!(json.int("released_bytes") as u64 >= held / 2, "released {} B of {} held: {json:?}", json.int("released_bytes"), held);
    assert!(ratio <= NEAR_LIVE, "resident +{:.1} MiB = {ratio:.2} x the live +{:.1} MiB (limit {NEAR_LIVE}); {}", mib(kept), mib(live_growth), describe(&s));
    let lines = h.release_lines(trims);
    assert_eq!(lines.len() as u64, trims, "one info line per release; stderr:\n{}", h.stderr());
    Some(s)
}

/// The idle trigger alone (MEMTRIM_FRAG_THRESHOLD=off; idle after the default 1 s, sampled
/// every second): the release comes once the process has gone quiet.
#[test]
fn fragmented_python_heap_ends_near_live_size_after_idle() {
    if let Some(s) = fragmented_heap_ends_near_live("idle", &[("MEMTRIM_FRAG_THRESHOLD", "off")]) {
        assert!(by(&s, Reason::Idle) >= 1 && by(&s, Reason::Idle) == s.trims, "releases not (all) by the idle trigger: {}", describe(&s));
    }
}

/// Default settings: the automatic triggers (here usually fragmentation over 0.5 on the first
/// sample after the frees, else idle) bring the heap near its live size.
#[test]
fn fragmented_python_heap_ends_near_live_size_with_defaults() {
    if let Some(s) = fragmented_heap_ends_near_live("defaults", &[]) {
        assert!(by(&s, Reason::Idle) + by(&s, Reason::Retained) >= 1, "the release was not automatic: {}", describe(&s));
    }
}

/// MEMTRIM_MIN_RETAINED above anything the process retains: the triggers hold (idle, and
/// fragmentation while busy) but every one is skipped as too small, and nothing is released.
#[test]
fn no_release_while_retained_is_under_the_threshold() {
    // PSI off: memory pressure releases whatever the floor says, and the machine may be under it
    let env = [("MEMTRIM_MIN_RETAINED", "1GiB"), ("MEMTRIM_INTERVAL_MS", "100ms"), ("MEMTRIM_IDLE_MS", "200ms"), ("MEMTRIM_PSI_STALL_MS", "0")];
    let Some(mut h) = start("small", &env) else { return };
    h.page();
    h.ask(FRAG);
    let rss_freed = h.rss();
    let first = h.wait_page("triggers skipped as too small", Duration::from_secs(10), |s| s.skipped_small >= 3);
    std::thread::sleep(Duration::from_millis(1500));
    let later = h.page();
    eprintln!("{}", describe(&later));
    assert_eq!(later.trims, 0, "released although retained < MEMTRIM_MIN_RETAINED: {}", describe(&later));
    assert_eq!(later.min_retained, 1 << 30, "the page does not show MEMTRIM_MIN_RETAINED=1GiB");
    assert!(later.skipped_small > first.skipped_small, "skipped_small stopped growing: {} then {}", first.skipped_small, later.skipped_small);
    assert!(later.retained_bytes > 200 * MIB, "the pattern retains {:.1} MiB, expected > 200", mib(later.retained_bytes));
    assert!(h.rss() + 20 * MIB >= rss_freed, "RSS fell from {:.1} to {:.1} MiB without a release", mib(rss_freed), mib(h.rss()));
}

/// Automatic triggers off: only requests release.
const NO_AUTO: [(&str, &str); 4] = [("MEMTRIM_IDLE_MS", "0"), ("MEMTRIM_FRAG_THRESHOLD", "off"), ("MEMTRIM_PSI_STALL_MS", "0"), ("MEMTRIM_LOG", "info")];

/// `memtrim trim PID`: the worker answers with a release counted under `request`.
#[test]
fn cli_request_is_honoured() {
    let Some(mut h) = start("cli", &NO_AUTO) else { return };
    h.page();
    h.ask(FRAG);
    let rss_freed = h.rss();
    std::thread::sleep(Duration::from_millis(1500));
    let before = h.page();
    assert_eq!(before.trims, 0, "a release ran with every automatic trigger off: {}", describe(&before));
    let o = memtrim(&h.dir.0, &["trim", &h.pid.to_string(), "--timeout", "20"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "memtrim trim failed: {}\n{}", out, text(&o.stderr));
    assert!(out.contains("released"), "memtrim trim printed {out:?}");
    let s = h.wait_page("the request's release on the page", Duration::from_secs(5), |s| s.trims >= 1);
    eprintln!("memtrim trim: {}; {}", out.trim(), describe(&s));
    assert_eq!((s.trims, by(&s, Reason::Request)), (1, 1), "{}", describe(&s));
    let dropped = rss_freed.saturating_sub(h.rss());
    assert!(dropped > 100 * MIB, "RSS fell by only {:.1} MiB (from {:.1})", mib(dropped), mib(rss_freed));
    // The policy's figure of new retained memory (jemalloc: its purgeable pages; glibc before
    // the first release: its retained bytes) is what the release returned.
    let (said, got) = (before.new_retained as f64, s.released_bytes as f64);
    assert!(
        got >= 0.8 * said && got <= 1.1 * said + 4.0 * MIB as f64,
        "the page said {:.1} MiB new retained, the release returned {:.1}",
        said / MIB as f64,
        got / MIB as f64
    );
    let lines = h.release_lines(1);
    assert_eq!(lines.len(), 1, "stderr:\n{}", h.stderr());
    assert_eq!(lines[0].0, "request");
    check_log_line(&lines[0].1);
}

/// `memtrim_trim()` from the process (ctypes): returns what it released, counted under `api`.
#[test]
fn c_api_request_is_honoured() {
    let Some(mut h) = start("api", &NO_AUTO) else { return };
    h.page();
    h.ask(FRAG);
    let rss_freed = h.rss();
    let answer = h.ask("apitrim");
    let released: u64 = answer.strip_prefix("released ").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("apitrim answered {answer:?}"));
    let dropped = rss_freed.saturating_sub(h.rss());
    let s = h.wait_page("the API release on the page", Duration::from_secs(5), |s| s.trims >= 1);
    eprintln!("memtrim_trim() = {:.1} MiB; RSS -{:.1} MiB; {}", mib(released), mib(dropped), describe(&s));
    assert!(released > 100 * MIB, "memtrim_trim() returned {released}");
    assert!(dropped > 100 * MIB, "RSS fell by only {:.1} MiB", mib(dropped));
    assert_eq!((s.trims, by(&s, Reason::Api), by(&s, Reason::Request)), (1, 1, 0), "{}", describe(&s));
    assert!(s.released_bytes >= released, "page released_bytes {} < {released}", s.released_bytes);
    // a second call with nothing left to give: still counted, returns little
    let again: u64 = h.ask("apitrim").strip_prefix("released ").and_then(|v| v.parse().ok()).unwrap();
    assert!(again < 20 * MIB, "a second memtrim_trim() released {again} B");
    let s = h.wait_page("the second API release", Duration::from_secs(5), |s| s.trims >= 2);
    assert_eq!(by(&s, Reason::Api), 2, "{}", describe(&s));
    let lines = h.release_lines(2);
    assert_eq!(lines.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["api", "api"], "stderr:\n{}", h.stderr());
    lines.iter().for_each(|l| check_log_line(&l.1));
}

/// One log line per release at MEMTRIM_LOG=info, none at the default level.
#[test]
fn info_log_prints_one_line_per_release() {
    let Some(mut h) = start("log", &NO_AUTO) else { return };
    h.page();
    h.ask(FRAG);
    h.ask("apitrim");
    let o = memtrim(&h.dir.0, &["trim", &h.pid.to_string(), "--timeout", "20"]);
    assert!(o.status.success(), "memtrim trim failed: {}", text(&o.stderr));
    let s = h.wait_page("two releases", Duration::from_secs(5), |s| s.trims >= 2);
    let lines = h.release_lines(s.trims);
    eprintln!("{}", h.stderr());
    assert_eq!(lines.len() as u64, s.trims, "stderr:\n{}", h.stderr());
    assert_eq!(lines.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(), ["api", "request"]);
    lines.iter().for_each(|l| check_log_line(&l.1));
    drop(h);

    let quiet: Vec<(&str, &str)> = NO_AUTO.iter().copied().filter(|(k, _)| *k != "MEMTRIM_LOG").collect();
    let Some(mut h) = start("nolog", &quiet) else { return };
    h.page();
    h.ask(FRAG);
    h.ask("apitrim");
    h.wait_page("the release", Duration::from_secs(5), |s| s.trims >= 1);
    assert!(release_lines(&h.stderr(), h.pid).is_empty(), "release lines at the default level:\n{}", h.stderr());
}

/// Whether this process can arm any memory PSI trigger (the kernel offers PSI and lets us
/// write a trigger). Unprivileged processes (no CAP_SYS_RESOURCE) on Linux >= 6.4 may only use
/// windows that are multiples of 2 s, so that is what is probed.
fn kernel_arms_psi() -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(cg) = std::fs::read_to_string("/proc/self/cgroup")
        && let Some(p) = cg.lines().find_map(|l| l.strip_prefix("0::"))
    {
        candidates.push(format!("/sys/fs/cgroup{}/memory.pressure", p.trim_end_matches('/')));
    }
    candidates.push("/proc/pressure/memory".into());
    candidates.into_iter().find(|p| std::fs::OpenOptions::new().read(true).write(true).open(p).and_then(|mut f| f.write_all(b"some 150000 2000000\0")).is_ok())
}

/// Where the kernel lets the process arm a PSI trigger, the library arms one (psi_armed on the
/// page); with MEMTRIM_PSI_STALL_MS=0 it does not. Provoking real pressure is not attempted
/// (see the top of this file).
#[test]
fn psi_trigger_is_armed_where_the_kernel_offers_it() {
    if !Path::new("/proc/pressure/memory").exists() {
        eprintln!("SKIP: this kernel has no PSI (/proc/pressure/memory)");
        return;
    }
    let Some(file) = kernel_arms_psi() else {
        eprintln!("SKIP: PSI is present but this process cannot arm a trigger on it");
        return;
    };
    let Some(h) = start("psi", &[]) else { return };
    let s = h.page();
    eprintln!("this process arms a trigger on {file}; the library's page: {}", describe(&s));
    assert_eq!(s.psi_stall_ms, 100, "default MEMTRIM_PSI_STALL_MS");
    assert_eq!(
        s.psi_armed, 1,
        "the kernel accepts a memory PSI trigger from this process on {file} (`some 150000 2000000`), but the library armed none (psi_armed=0)"
    );
    drop(h);
    let Some(h) = start("psi-off", &[("MEMTRIM_PSI_STALL_MS", "0")]) else { return };
    let s = h.page();
    assert_eq!((s.psi_armed, s.psi_stall_ms), (0, 0), "MEMTRIM_PSI_STALL_MS=0 still arms: {}", describe(&s));
}

/// Thread arenas' top chunks, which malloc_trim(0) leaves resident, are given back by a release
/// without touching a byte in use (tests/c/arena_tops.c: 4 threads × 6 MiB of freed top, a
/// release and 200 more while two threads allocate and check, then calloc from the tops);
/// MEMTRIM_ARENA_TOPS=0 leaves them, as malloc_trim(0) does.
#[test]
fn thread_arena_tops_are_released() {
    let bin = common::compile("arena_tops.c", &[]);
    let released = |o: &std::process::Output| -> u64 {
        let out = text(&o.stdout);
        assert!(o.status.success() && out.ends_with("ok\n"), "arena_tops: {}\n{}", out, text(&o.stderr));
        out.lines().find_map(|l| l.strip_prefix("released ")?.parse::<i64>().ok()).unwrap_or_else(|| panic!("no figure in {out:?}")).max(0) as u64
    };
    let plain = released(&common::run(without_env(&mut Command::new(&bin), TUNING).env_remove("LD_PRELOAD")));
    let dir = TempDir::new("arena-tops");
    let under = |tops: &str| {
        let mut c = Command::new(&bin);
        released(&common::run(preloaded(without_env(&mut c, TUNING).env("MEMTRIM_SHM_DIR", dir.path()).env("MEMTRIM_ARENA_TOPS", tops))))
    };
    let (with, off) = (under("1"), under("0"));
    eprintln!("malloc_trim(0) alone returned {:.1} MiB; memtrim_trim() {:.1} MiB, {:.1} MiB with MEMTRIM_ARENA_TOPS=0", mib(plain), mib(with), mib(off));
    assert!(with >= plain + 16 * MIB, "memtrim_trim() returned {:.1} MiB, malloc_trim(0) {:.1} MiB of 24 MiB of thread tops", mib(with), mib(plain));
    if common::allocator() == "glibc" {
        assert!(off < plain + 4 * MIB, "with MEMTRIM_ARENA_TOPS=0 memtrim_trim() returned {:.1} MiB", mib(off));
    }
}

/// With huge-page heaps (GLIBC_TUNABLES glibc.malloc.hugetlb=2, glibc 2.35 on) thread heaps are
/// aligned to four huge pages, not to the 64 MiB the release of arena tops reads them at: it
/// turns itself off with one info line, and releases are malloc_trim(0)'s, bytes intact.
#[test]
fn huge_page_heaps_turn_the_arena_top_release_off() {
    if common::allocator() != "glibc" {
        return;
    }
    let bin = common::compile("arena_tops.c", &[]);
    let dir = TempDir::new("arena-tops-hugetlb");
    let mut c = Command::new(&bin);
    let o = common::run(preloaded(
        without_env(&mut c, TUNING).env("MEMTRIM_SHM_DIR", dir.path()).env("MEMTRIM_LOG", "info").env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=2"),
    ));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success() && out.ends_with("ok\n"), "arena_tops: {out}\n{err}");
    let minor: u32 = text(&Command::new("getconf").arg("GNU_LIBC_VERSION").output().unwrap().stdout).trim().rsplit('.').next().unwrap().parse().unwrap();
    if minor >= 35 {
        let line = "makes huge-page heaps (glibc.malloc.hugetlb), not HEAP_MAX-aligned: releases use malloc_trim alone";
        assert_eq!(err.lines().filter(|l| l.contains(line)).count(), 1, "expected one line saying {line:?}:\n{err}");
    }
}

/// The page says why the last sample did not release: no trigger held; a trigger (idle) held
/// but too little new memory was retained; and nothing, once a release ran (until the next
/// sample, a second later).
#[test]
fn the_page_says_what_held_the_last_release_back() {
    let dir = TempDir::new("held-back");
    let start = |interval_ms: u32, env: &[(&str, &str)]| {
        let mut c = Command::new(common::idle_sleep());
        common::under_library(c.arg("600"), dir.path(), interval_ms).env("MEMTRIM_ALLOCATOR", common::allocator()).envs(env.iter().copied());
        common::Proc(c.stdin(std::process::Stdio::null()).spawn().unwrap())
    };
    let reason = |pid: u32, want: &str| {
        wait_for(&format!("release_skip_reason {want}"), Duration::from_secs(15), || {
            let j = stat_json(dir.path(), pid)?;
            let got = j.str("release_skip_reason").to_string();
            if got == want { Ok(()) } else { Err(format!("{got}: {j:?}")) }
        })
    };
    let quiet = start(50, &[("MEMTRIM_IDLE_MS", "0"), ("MEMTRIM_FRAG_THRESHOLD", "off"), ("MEMTRIM_PSI_STALL_MS", "0")]);
    reason(quiet.pid(), "no_trigger");
    let idle = start(1000, &[("MEMTRIM_IDLE_MS", "100"), ("MEMTRIM_MIN_RETAINED", "1GiB"), ("MEMTRIM_PSI_STALL_MS", "0")]);
    reason(idle.pid(), "min_retained");
    let o = memtrim(dir.path(), &["trim", &idle.pid().to_string()]);
    assert!(o.status.success(), "{}", common::show(&o));
    reason(idle.pid(), "none");
}
