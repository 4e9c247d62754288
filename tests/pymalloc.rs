//! CPython's empty pymalloc pools given back (src/pymalloc*.rs) in real interpreters under the
//! library: what a release gives back against what CPython itself says is empty
//! (sys._debugmallocstats) and against the resident set; objects that stay intact while pools
//! are given back every 10 ms under threads and fork; every CPython version on the machine with
//! the state the layout table gives it; PYTHONMALLOC=malloc; MEMTRIM_PYMALLOC=0.
//!
//! The hosts are tests/py/pymalloc_host.py (driven over stdin/stdout; its main thread runs
//! Python code while it waits, as the library's steps need) and tests/py/pymalloc_stress.py.
//! Figures come from the process's page, read with the layout of crates/common.
//!
//! Tests of this file run one at a time: each uses a core or two and measures the resident set.

mod common;

use common::{JsonExt, PyHost, TUNING, TempDir, memtrim, now_ms, on_ci, page_files, preloaded, python, read_page, root, stat_json, wait_for, without_env};
use memtrim_common::page::Stats;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: f64 = (1 << 20) as f64;
/// py_state values (crates/common page.rs).
const ACTIVE: u64 = 1;
const UNKNOWN_LAYOUT: u64 = 2;
const OFF: u64 = 4;

/// Releases only when the test asks (`memtrim trim`), and a measuring walk of the arenas every
/// 200 ms (MEMTRIM_SMAPS_INTERVAL_MS, the library's least).
const QUIET: &[(&str, &str)] = &[
    ("MEMTRIM_IDLE_MS", "0"),
    ("MEMTRIM_FRAG_THRESHOLD", "off"),
    ("MEMTRIM_PSI_STALL_MS", "0"),
    ("MEMTRIM_SMAPS_INTERVAL_MS", "200"),
    ("MEMTRIM_INTERVAL_MS", "100"),
];

fn py(script: &str) -> PathBuf {
    root().join("tests/py").join(script)
}

/// What sys._debugmallocstats says, and VmRSS (the host's `pools`).
#[derive(Debug)]
struct Pools {
    /// Unused pools × pool size: the empty carved pools, and the pools never carved of the
    /// newest arena (CPython takes a new arena only when every other one is full, so at most
    /// one arena has any).
    unused: u64,
    pool_bytes: u64,
    arenas: u64,
    rss: u64,
}

/// tests/py/pymalloc_host.py under the library.
fn start(python: &str, tag: &str, env: &[(&str, &str)]) -> PyHost {
    let env: Vec<(&str, &str)> = QUIET.iter().copied().chain(env.iter().copied()).collect();
    PyHost::start(python, "pymalloc_host.py", tag, &env)
}

/// What these tests ask of the host besides what common gives.
impl PyHost {
    fn pools(&mut self) -> Pools {
        let a = self.ask("pools");
        let w: Vec<&str> = a.split_whitespace().collect();
        let field = |name: &str| -> u64 {
            let i = w.iter().position(|x| *x == name).unwrap_or_else(|| panic!("no {name} in {a:?}"));
            w[i + 1].parse().unwrap_or_else(|_| panic!("bad {name} in {a:?}"))
        };
        Pools { unused: field("unused_bytes"), pool_bytes: field("pool_bytes"), arenas: field("arenas"), rss: field("rss") }
    }

    /// The page once a walk of the arenas that started after `after_ms` is on it.
    fn walk_after(&self, after_ms: u64) -> Stats {
        wait_for(&format!("a walk of pid {}'s arenas after {after_ms}", self.pid), Duration::from_secs(30), || {
            let s = self.page();
            if s.py_measured_at_ms > after_ms { Ok(s) } else { Err(describe(&s)) }
        })
    }

    /// A measuring walk after now (the prediction), then `memtrim trim PID` and the page once
    /// the release's walk is over: (before, after). The trim is answered once the worker has
    /// asked for the release walk, so the first walk that starts after that answer is the
    /// release walk or comes after it.
    fn trim(&self) -> (Stats, Stats) {
        let before = self.walk_after(now_ms());
        let o = memtrim(&self.dir.0, &["trim", &self.pid.to_string()]);
        assert!(o.status.success(), "memtrim trim failed: {}", common::show(&o));
        let after = self.walk_after(now_ms());
        (before, after)
    }
}

fn describe(s: &Stats) -> String {
    format!(
        "py_state {} arenas {} ({} B resident), pools used {} empty {} ({} B) returned {}, allocated {} B, free {} B, measured at {}, released {} B in {} pools, {} steps, hold last {} us max {} us",
        s.py_state,
        s.py_arenas,
        s.py_arena_bytes,
        s.py_used_pools,
        s.py_empty_pools,
        s.py_empty_bytes,
        s.py_returned_pools,
        s.py_allocated_bytes,
        s.py_free_bytes,
        s.py_measured_at_ms,
        s.py_released_bytes,
        s.py_released_pools,
        s.py_steps,
        s.py_last_hold_us,
        s.py_max_hold_us
    )
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

/// A fragmenting workload (tests/py/pymalloc_host.py `pyfrag`), the pools CPython then says
/// are unused, a release asked for, and what was given back: (pools before, pools after, page
/// before, page after).
fn fragment_and_trim(host: &mut PyHost, objects: u32) -> (Pools, Pools, Stats, Stats) {
    host.ask(&format!("pyfrag {objects} 1500"));
    let p0 = host.pools();
    let (s0, s1) = host.trim();
    let p1 = host.pools();
    (p0, p1, s0, s1)
}

/// What a release after `fragment_and_trim` must have done with 16 KiB pools (3.10+): given
/// back at least 70 % of the unused pools' bytes (75 % is all there is: each pool keeps its
/// header page; the never-carved pools of the newest arena, at most 1 MiB, count as unused
/// too), as predicted by the walk before within 20 %, with the resident set falling by at
/// least 80 % of it and no empty pool left resident; the walk saw CPython's arenas (within 2);
/// CPython still counts the pools as unused (it may use them again).
fn check_given_back(which: &str, p0: &Pools, p1: &Pools, s0: &Stats, s1: &Stats) {
    let released = s1.py_released_bytes - s0.py_released_bytes;
    let fell = p0.rss.saturating_sub(p1.rss);
    eprintln!(
        "{which}: unused pools {} ({} pools of {} B, {} arenas; the walk saw {}); predicted {} ({} pools); released {} ({} pools) = {:.3} of unused; RSS {} -> {} (fell {} = {:.3} of released); steps {}, lock held up to {} us",
        mib(p0.unused),
        p0.unused / p0.pool_bytes,
        p0.pool_bytes,
        p0.arenas,
        s0.py_arenas,
        mib(s0.py_empty_bytes),
        s0.py_empty_pools,
        mib(released),
        s1.py_released_pools - s0.py_released_pools,
        released as f64 / p0.unused as f64,
        mib(p0.rss),
        mib(p1.rss),
        mib(fell),
        fell as f64 / released.max(1) as f64,
        s1.py_steps,
        s1.py_max_hold_us
    );
    eprintln!("{which}: before: {}\n{which}: after:  {}", describe(s0), describe(s1));
    assert_eq!(s1.py_state, ACTIVE, "{which}: {}", describe(s1));
    assert_eq!(p0.pool_bytes, 16 << 10, "{which}: expected CPython 3.10+'s 16 KiB pools");
    assert!(s0.py_arenas.abs_diff(p0.arenas) <= 2, "{which}: the walk saw {} arenas, CPython has {}", s0.py_arenas, p0.arenas);
    assert!(p0.unused > 16 << 20, "{which}: the workload left only {} in unused pools", mib(p0.unused));
    assert_eq!(s0.py_released_bytes, 0, "{which}: released before the trim: {}", describe(s0));
    assert!(released as f64 >= 0.70 * p0.unused as f64, "{which}: released {} of {} in unused pools (< 70 %)", mib(released), mib(p0.unused));
    assert!(fell as f64 >= 0.8 * released as f64, "{which}: RSS fell by {} only, released {}", mib(fell), mib(released));
    let predicted = s0.py_empty_bytes as f64;
    assert!(
        (released as f64 - predicted).abs() <= 0.2 * released as f64,
        "{which}: predicted {} (py_empty_bytes), released {}",
        mib(s0.py_empty_bytes),
        mib(released)
    );
    assert!(s1.py_empty_bytes <= released / 10, "{which}: the release left {} in empty pools: {}", mib(s1.py_empty_bytes), describe(s1));
    assert!(p1.unused >= p0.unused * 9 / 10, "{which}: CPython lost its empty pools: unused {} -> {}", mib(p0.unused), mib(p1.unused));
    // a step stops at 1.5 ms between two pools, so a release of 2000+ pools (one madvise each)
    // takes several steps;
    // the hold is wall time, and a busy CI machine preempting the main thread mid-step has
    // stretched one to 5.1 ms, so the bound is a loose 20 ms (a walk without its budget would
    // hold it for the whole release, in one step)
    let release_steps = s1.py_steps - s0.py_steps;
    assert!(released < 32 << 20 || release_steps >= 2, "{which}: a release of {} ran in {release_steps} step(s)", mib(released));
    assert!(s1.py_max_hold_us < 20_000, "{which}: steps {} held the lock up to {} us", s1.py_steps, s1.py_max_hold_us);
}

/// A release gives back the pages of CPython's empty pools past their first 4 KiB: at least
/// 70 % of the bytes sys._debugmallocstats counts in unused pools (75 % is all there is: each
/// 16 KiB pool keeps its header page), the resident set falls by most of it, and the
/// measuring walk before the release predicted it within 20 % (check_given_back). The arena
/// allocator is the library's wrapper; `memtrim stat --json` and the memtrim_python_* metrics
/// show the page's figures; the pools given back serve the same workload again.
#[test]
fn empty_pools_are_given_back() {
    let _g = common::serial();
    let Some(python) = python() else { return };
    let mut host = start(python, "given", &[]);
    let alloc = host.ask("arena_allocator");
    assert!(alloc.ends_with("libmemtrim.so"), "the arena allocator is not the library's wrapper but in {alloc}");
    let (p0, p1, s0, s1) = fragment_and_trim(&mut host, 300_000);
    assert!(p0.unused > 40 << 20, "the workload left only {} in unused pools", mib(p0.unused));
    check_given_back("python3", &p0, &p1, &s0, &s1);
    let j = stat_json(&host.dir.0, host.pid).unwrap_or_else(|e| panic!("memtrim stat: {e}"));
    assert_eq!(j.str("py_state"), "active");
    assert!(
        j.int("py_released_bytes") as u64 >= s1.py_released_bytes,
        "stat --json py_released_bytes {} < page {}",
        j.int("py_released_bytes"),
        s1.py_released_bytes
    );
    assert!(j.int("py_arenas") > 0 && j.int("py_steps") > 0, "stat --json: {j:?}");
    let m = memtrim(&host.dir.0, &["serve", "--once", "-", "--dir", host.dir.0.to_str().unwrap()]);
    let metric = |name: &str| -> u64 {
        let t = common::text(&m.stdout);
        let line =
            t.lines().find(|l| l.starts_with(&format!("{name}{{pid=\"{}\"", host.pid))).unwrap_or_else(|| panic!("no {name} for pid {} in:\n{t}", host.pid));
        line.rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("bad sample {line}"))
    };
    assert!(metric("memtrim_python_released_bytes_total") >= s1.py_released_bytes && metric("memtrim_python_released_pools_total") >= s1.py_released_pools);
    assert!(metric("memtrim_python_arena_bytes") > 0, "memtrim_python_arena_bytes is 0");
    // the pools given back are used again: the same workload once more, checked
    host.ask("drop");
    host.ask("pyfrag 300000 1500");
    assert!(!host.stderr().contains("memtrim:"), "the library complained:\n{}", host.stderr());
}

/// MEMTRIM_PYMALLOC=0: the arena allocator is CPython's own, the page says "off", a release
/// gives nothing back from the pools and no step ever runs.
#[test]
fn switch_off_leaves_the_interpreter_alone() {
    let _g = common::serial();
    let Some(python) = python() else { return };
    let mut host = start(python, "off", &[("MEMTRIM_PYMALLOC", "0")]);
    let alloc = host.ask("arena_allocator");
    assert!(!alloc.ends_with("libmemtrim.so"), "MEMTRIM_PYMALLOC=0 and the arena allocator is the library's ({alloc})");
    host.ask("pyfrag 200000 1500");
    let p0 = host.pools();
    let before = host.page();
    let t = now_ms();
    let o = memtrim(&host.dir.0, &["trim", &host.pid.to_string()]);
    assert!(o.status.success(), "memtrim trim failed: {}", common::show(&o));
    // a walk would have come within a few hundred ms
    std::thread::sleep(Duration::from_secs(2));
    let s = host.page();
    let p1 = host.pools();
    eprintln!("unused pools {} -> {}, RSS {} -> {}; {}", mib(p0.unused), mib(p1.unused), mib(p0.rss), mib(p1.rss), describe(&s));
    assert!(s.trims > before.trims && s.updated_at_ms > t, "the trim was not served: trims {} -> {}", before.trims, s.trims);
    assert_eq!(s.py_state, OFF, "{}", describe(&s));
    assert_eq!((s.py_released_bytes, s.py_released_pools, s.py_steps, s.py_measured_at_ms, s.py_arenas), (0, 0, 0, 0, 0), "{}", describe(&s));
    assert!(p1.rss + p0.unused / 4 > p0.rss, "RSS fell from {} to {} with {} in unused pools", mib(p0.rss), mib(p1.rss), mib(p0.unused));
    assert_eq!(stat_json(&host.dir.0, host.pid).unwrap().str("py_state"), "off");
}

/// How long each stress run lasts: PYMALLOC_STRESS_SECONDS, 45 by default (the fork variant
/// half of it), so that both backends' runs fit in CI.
fn stress_seconds() -> u64 {
    std::env::var("PYMALLOC_STRESS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(45)
}

/// tests/py/pymalloc_stress.py under the library with empty pools given back every 10 ms; its
/// stdout and stderr, its pid, and the first and last page seen of each process (the script,
/// its children), read every 100 ms while it runs.
fn stress(python: &str, tag: &str, seconds: u64, args: &[&str]) -> (String, String, u32, HashMap<u32, (Stats, Stats)>) {
    let dir = TempDir::new(tag);
    let mut cmd = Command::new(python);
    cmd.arg(py("pymalloc_stress.py")).arg(seconds.to_string()).args(args);
    without_env(&mut cmd, TUNING).env("MEMTRIM_SHM_DIR", &dir.0).env("MEMTRIM_PYMALLOC_EVERY_MS", "10").env("MEMTRIM_INTERVAL_MS", "100");
    let mut child = preloaded(&mut cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("python starts");
    let pid = child.id();
    let (out, err) = (common::gathered(child.stdout.take().unwrap()), common::gathered(child.stderr.take().unwrap()));
    let mut seen: HashMap<u32, (Stats, Stats)> = HashMap::new();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(seconds + 120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pymalloc_stress.py {args:?} did not end in {} s; stdout:\n{}", seconds + 120, out.lock().unwrap());
        }
        for (_, p, _) in page_files(&dir.0) {
            if let Some(s) = read_page(&dir.0, p) {
                seen.entry(p).or_insert((s, s)).1 = s;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // the readers have the pipes to their end once the process and its children are gone
    std::thread::sleep(Duration::from_millis(200));
    let (out, err) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
    eprintln!("pymalloc_stress.py {seconds} {args:?}: {status} in {:.1} s\n{out}{err}", start.elapsed().as_secs_f64());
    assert!(status.success(), "{python} pymalloc_stress.py {args:?} failed under the library ({status}):\n{out}\n--- stderr\n{err}");
    (out, err, pid, seen)
}

/// What a stress run of `seconds` requires of the script's own page: steps ran (10 a second at
/// least) and gave back pools (40 a second; some 200 come free every second), and the script
/// said PASS with nothing from the library on stderr.
fn check_stress(seconds: u64, out: &str, err: &str, page: Option<&Stats>) {
    assert!(out.lines().any(|l| l.starts_with("PASS ")), "no PASS line:\n{out}");
    assert!(!out.contains("FAIL") && !err.contains("memtrim:"), "stdout:\n{out}\n--- stderr\n{err}");
    let s = page.expect("the script's page was never seen");
    eprintln!("page: {}", describe(s));
    assert_eq!(s.py_state, ACTIVE, "{}", describe(s));
    assert!(
        s.py_released_pools >= 40 * seconds && s.py_steps >= 10 * seconds,
        "pools were not given back while the script ran for {seconds} s: {}",
        describe(s)
    );
}

/// Threads make, keep, check and drop objects of every size class while the library gives back
/// empty pools every 10 ms (MEMTRIM_PYMALLOC_EVERY_MS): every object kept stays intact
/// (tests/py/pymalloc_stress.py checks each against a fresh copy and a checksum).
#[test]
fn objects_survive_continuous_pool_release() {
    let _g = common::serial();
    let Some(python) = python() else { return };
    let seconds = stress_seconds();
    let (out, err, pid, seen) = stress(python, "stress", seconds, &[]);
    check_stress(seconds, &out, &err, seen.get(&pid).map(|s| &s.1));
}

/// The same with a child forked every second from the main thread while the other threads run;
/// each child checks what it inherited, runs the threads for a second and checks again. Each
/// child that lived long enough to publish a page gave back pools of its own.
#[test]
fn objects_survive_continuous_pool_release_across_fork() {
    let _g = common::serial();
    let Some(python) = python() else { return };
    let seconds = stress_seconds().div_ceil(2);
    let (out, err, pid, seen) = stress(python, "stress-fork", seconds, &["--fork"]);
    check_stress(seconds, &out, &err, seen.get(&pid).map(|s| &s.1));
    // a child's page starts with the counts it inherited
    let children: Vec<&(Stats, Stats)> = seen.iter().filter(|(p, _)| **p != pid).map(|(_, s)| s).collect();
    for (first, last) in &children {
        eprintln!("child {}: released pools {} -> {}; {}", last.pid, first.py_released_pools, last.py_released_pools, describe(last));
    }
    assert!(!children.is_empty(), "no child's page was seen");
    assert!(children.iter().all(|s| s.1.py_state == ACTIVE), "a child's pools are not active");
    assert!(children.iter().any(|(first, last)| last.py_released_pools > first.py_released_pools), "no child gave back pools of its own");
}

/// The CPython interpreters to try: every pyenv version from 3.8 to 3.13 found under
/// PYENV_ROOT (/root/.pyenv) and Debian's /usr/bin/python3.11, as (label, minor, executable).
/// The pyenv versions other than 3.11 are not on every machine: a missing one is a line in the
/// output. Both 3.11s are (the CI image has them): missing there, they fail the test.
fn interpreters() -> Vec<(String, u8, PathBuf)> {
    let pyenv = PathBuf::from(std::env::var_os("PYENV_ROOT").unwrap_or_else(|| "/root/.pyenv".into())).join("versions");
    let mut found = Vec::new();
    for minor in 8..=13u8 {
        let prefix = format!("3.{minor}.");
        let mut versions: Vec<String> = std::fs::read_dir(&pyenv)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|v| v.starts_with(&prefix) && v[prefix.len()..].chars().all(|c| c.is_ascii_digit()))
            .collect();
        versions.sort();
        match versions.last() {
            Some(v) => found.push((format!("pyenv {v}"), minor, pyenv.join(v).join("bin/python3"))),
            None if minor == 11 => assert!(!on_ci(), "no pyenv CPython 3.11 under {} on CI", pyenv.display()),
            None => eprintln!("SKIP: no pyenv CPython 3.{minor} under {}", pyenv.display()),
        }
    }
    let debian = PathBuf::from("/usr/bin/python3.11");
    if debian.exists() {
        found.push(("Debian python3.11".into(), 11, debian));
    } else {
        assert!(!on_ci(), "{} is missing on CI", debian.display());
        eprintln!("SKIP: {} is missing", debian.display());
    }
    found
}

/// Every CPython version on the machine under the library, with the state pymalloc_layout.rs
/// gives it: 3.10 to 3.13 (16 KiB pools) active and giving back what `empty_pools_are_given_back`
/// requires; 3.9 active (its arenas walked, its empty pools seen) with nothing given back,
/// since its pools are one 4 KiB page, the header's; 3.8 an unknown layout, its arena allocator
/// left alone.
#[test]
fn other_pythons() {
    let _g = common::serial();
    let pythons = interpreters();
    for (label, minor, exe) in &pythons {
        let exe = exe.to_str().unwrap();
        let mut host = start(exe, &format!("py3{minor}"), &[]);
        let wrapped = host.ask("arena_allocator").ends_with("libmemtrim.so");
        match minor {
            8 => {
                host.ask("pyfrag 200000 1500");
                host.page(); // published: the trim finds it
                let o = memtrim(&host.dir.0, &["trim", &host.pid.to_string()]);
                assert!(o.status.success(), "{label}: memtrim trim failed: {}", common::show(&o));
                // a walk would have come within a few hundred ms
                std::thread::sleep(Duration::from_secs(1));
                let s = host.page();
                eprintln!("{label}: {}", describe(&s));
                assert_eq!(s.py_state, UNKNOWN_LAYOUT, "{label}: {}", describe(&s));
                assert!(!wrapped, "{label}: the arena allocator was wrapped");
                assert_eq!((s.py_steps, s.py_measured_at_ms, s.py_released_bytes), (0, 0, 0), "{label}: {}", describe(&s));
            }
            9 => {
                assert!(wrapped, "{label}: the arena allocator is not the library's");
                let (p0, _, s0, s1) = fragment_and_trim(&mut host, 200_000);
                eprintln!(
                    "{label}: unused pools {} ({} B each, {} arenas); before: {}\n{label}: after:  {}",
                    mib(p0.unused),
                    p0.pool_bytes,
                    p0.arenas,
                    describe(&s0),
                    describe(&s1)
                );
                assert_eq!(p0.pool_bytes, 4096, "{label}: CPython 3.9's pools are one page");
                assert_eq!(s1.py_state, ACTIVE, "{label}: {}", describe(&s1));
                assert!(s0.py_arenas.abs_diff(p0.arenas) <= 2, "{label}: the walk saw {} arenas, CPython has {}", s0.py_arenas, p0.arenas);
                assert!(
                    s0.py_empty_pools * 4096 >= p0.unused / 2,
                    "{label}: the walk saw {} empty pools, CPython {} unused",
                    s0.py_empty_pools,
                    p0.unused / 4096
                );
                assert_eq!((s1.py_released_bytes, s1.py_released_pools, s0.py_empty_bytes), (0, 0, 0), "{label}: {}", describe(&s1));
            }
            _ => {
                assert!(wrapped, "{label}: the arena allocator is not the library's");
                let (p0, p1, s0, s1) = fragment_and_trim(&mut host, 200_000);
                check_given_back(label, &p0, &p1, &s0, &s1);
            }
        }
        assert!(!host.stderr().contains("memtrim:"), "{label}: the library complained:\n{}", host.stderr());
    }
}

/// Every CPython version on the machine through a few seconds of the stress with empty pools
/// given back every 10 ms, ending on its own: objects intact, and no hang in finalisation
/// (3.13 runs pending calls until none is left), whatever the version does with its pools.
#[test]
fn other_pythons_survive_continuous_pool_release() {
    let _g = common::serial();
    for (label, minor, exe) in interpreters() {
        let (out, err, pid, seen) = stress(exe.to_str().unwrap(), &format!("stress3{minor}"), 5, &[]);
        let s = seen.get(&pid).map(|s| s.1);
        eprintln!("{label}: {}", s.as_ref().map(describe).unwrap_or_default());
        match minor {
            8 => assert!(out.contains("PASS ") && !err.contains("memtrim:") && s.is_some_and(|s| s.py_state == UNKNOWN_LAYOUT), "{label}: {out}\n{err}"),
            9 => assert!(
                out.contains("PASS ") && !err.contains("memtrim:") && s.is_some_and(|s| s.py_state == ACTIVE && s.py_steps > 0 && s.py_released_pools == 0),
                "{label}: {out}\n{err}"
            ),
            _ => check_stress(5, &out, &err, s.as_ref()),
        }
    }
}

/// PYTHONMALLOC=malloc: pymalloc takes no arena, so the wrapper (installed before the
/// interpreter reads its configuration) lists none; the state stays active, the walks run and
/// find nothing, and nothing is given back.
#[test]
fn pythonmalloc_malloc_has_no_arenas() {
    let _g = common::serial();
    let Some(python) = python() else { return };
    let mut host = start(python, "malloc", &[("PYTHONMALLOC", "malloc")]);
    host.ask("pyfrag 200000 1500");
    let (s0, s1) = host.trim();
    eprintln!("PYTHONMALLOC=malloc: before: {}\nafter: {}", describe(&s0), describe(&s1));
    assert_eq!(s1.py_state, ACTIVE, "{}", describe(&s1));
    assert_eq!((s1.py_arenas, s1.py_arena_bytes, s1.py_used_pools, s1.py_released_bytes), (0, 0, 0, 0), "{}", describe(&s1));
    assert!(s1.py_steps > 0, "no walk ran: {}", describe(&s1));
}

/// A step may come at any bytecode boundary of the main thread, here inside the host's own
/// `__import__` hook, which holds a lock that is not re-entrant: the step must run no Python code
/// (the exit fence imported `atexit` through that hook, and the main thread waited on its own
/// lock for ever).
#[test]
fn a_step_never_runs_the_hosts_import_hook() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("pyimport");
    let mut c = Command::new(py);
    common::under_library(&mut c, dir.path(), 50).env("MEMTRIM_PYMALLOC_EVERY_MS", "10");
    // -S: no site, so `atexit` is not loaded yet and registering an exit function would import it
    c.arg("-S").arg(root().join("tests/py/import_hook_reentry.py")).arg("--thread");
    let o = common::run_for(&mut c, Duration::from_secs(30));
    assert!(o.status.success() && common::text(&o.stdout).starts_with("done"), "{}", common::show(&o));
}

/// 3.11+ take a frame's data stack chunk from the arena allocator: one of a frame with 70,000
/// locals is exactly an arena's size. Its locals read back intact while pools are given back.
#[test]
fn a_frames_data_stack_chunk_of_an_arenas_size_is_left_alone() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("pyframe");
    let mut c = Command::new(py);
    common::under_library(&mut c, dir.path(), 50).env("MEMTRIM_PYMALLOC_EVERY_MS", "10");
    c.arg(root().join("tests/py/huge_frame.py"));
    let o = common::run_for(&mut c, Duration::from_secs(60));
    assert!(o.status.success() && common::text(&o.stdout).starts_with("intact 70000"), "{}", common::show(&o));
}
