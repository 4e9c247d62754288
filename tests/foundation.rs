//! Integration tests of the foundation: the exports of the malloc family, exact accounting, the
//! POSIX edge cases, fork, dlopen with TLS, C++ thread_local, exit paths and configuration.
//! Each test compiles a C or C++ program from tests/c/ and runs it as a real process with
//! libmemtrim.so preloaded (`cargo build --release` first), on the backend TEST_ALLOCATOR names
//! (glibc by default; `TEST_ALLOCATOR=jemalloc` runs the same tests on the jemalloc backend).
mod common;

use common::*;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

/// Compiles tests/c/NAME once per test binary (tests run in parallel and may share a program).
fn program(name: &str, extra: &[&str]) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    // -fno-builtin: GCC's knowledge of malloc, calloc and posix_memalign would otherwise fold
    // away some of the checks the programs make on their results.
    let mut args = vec!["-fno-builtin"];
    args.extend_from_slice(extra);
    let p = compile(name, &args);
    map.insert(name.to_string(), p.clone());
    p
}

fn assert_success(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed\n{}", show(o));
}

fn have_gcc() -> bool {
    require_tool("gcc")
}

/// The programs print "allocator: NAME", the allocator they saw serve their mallocs
/// (tests/c/backend.h): it must be the one the run asked for, so that a run on the jemalloc
/// backend does not pass by testing glibc.
fn assert_allocator(printed: &[u8], want: &str, o: &Output) {
    let line = format!("allocator: {want}");
    assert!(text(printed).lines().any(|l| l == line), "expected {line:?}\n{}", show(o));
}

/// Requirement 1: live bytes and allocs - frees follow the program's own sum of
/// malloc_usable_size() exactly, through every export, from 4 threads x 10^6 operations; every
/// block has the alignment glibc gives it (also the smallest ones).
#[test]
fn accounting_is_exact_through_every_export() {
    if !have_gcc() {
        return;
    }
    let bin = program("accounting.c", &[]);
    for seed in ["0x9e3779b97f4a7c15", "12345"] {
        let o = run_for(preloaded(Command::new(&bin).args(["4", "1000000", seed])), Duration::from_secs(60));
        let out = text(&o.stdout);
        assert_success(&o, "accounting");
        assert_allocator(&o.stdout, &allocator(), &o);
        assert!(!out.contains("FAIL"), "{}", show(&o));
        assert!(out.contains("accounting: all checks hold (0 failed checks)"), "{}", show(&o));
        // 4 checkpoints with threads parked, after join, after the cross-thread frees
        assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 6, "{}", show(&o));
        assert!(out.contains("ok after every block was freed on another thread: live_bytes delta 0, live blocks delta 0"), "{}", show(&o));
    }
    // The same while the worker samples every 10 ms and releases whenever anything is retained.
    let o = run_for(
        preloaded(
            Command::new(&bin)
                .args(["4", "1000000", "7"])
                .env("MEMTRIM_INTERVAL_MS", "10ms")
                .env("MEMTRIM_MIN_RETAINED", "0")
                .env("MEMTRIM_FRAG_THRESHOLD", "0.01"),
        ),
        Duration::from_secs(60),
    );
    assert_success(&o, "accounting with a busy worker");
    assert_allocator(&o.stdout, &allocator(), &o);
    assert!(text(&o.stdout).contains("accounting: all checks hold (0 failed checks)"), "{}", show(&o));
    assert!(!text(&o.stderr).contains("memtrim:"), "the configuration above is valid\n{}", show(&o));
}

/// More threads alive at once than the library has counter slots: still exact.
#[test]
fn accounting_is_exact_beyond_the_thread_slots() {
    if !have_gcc() {
        return;
    }
    let o = run_for(preloaded(&mut Command::new(program("many_threads.c", &[]))), Duration::from_secs(30));
    let out = text(&o.stdout);
    assert_success(&o, "many_threads");
    assert_allocator(&o.stdout, &allocator(), &o);
    assert!(out.contains("ok 1100 threads parked, each holding a block"), "{}", show(&o));
    assert!(out.contains("ok after join, every block freed by another thread: live_bytes delta 0 expected 0, live blocks delta 0 expected 0"), "{}", show(&o));
}

/// The accounting program itself must notice when it runs without the library.
#[test]
fn accounting_program_needs_the_library() {
    if !have_gcc() {
        return;
    }
    let o = run_for(Command::new(program("accounting.c", &[])).args(["1", "1000"]).env_remove("LD_PRELOAD"), Duration::from_secs(20));
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("not found (is libmemtrim.so preloaded?)"), "{}", show(&o));
}

fn glibc_version(transcript: &str) -> (u32, u32) {
    let v = transcript.lines().next().and_then(|l| l.strip_prefix("glibc ")).expect("first line names glibc");
    let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Requirement 2: the same return values and errno on every edge and error path as glibc alone,
/// on either backend, and accounting that follows each step (failed calls change nothing). Usable
/// sizes differ between allocators: the transcript shows only properties that must not.
#[test]
fn error_paths_match_glibc() {
    if !have_gcc() {
        return;
    }
    let bin = program("errors.c", &[]);
    let base = run_for(&mut Command::new(&bin), Duration::from_secs(20));
    assert_success(&base, "errors without the library");
    let with = run_for(preloaded(&mut Command::new(&bin)), Duration::from_secs(20));
    let disabled = run_for(preloaded(Command::new(&bin).env("MEMTRIM_DISABLE", "1")), Duration::from_secs(20));
    let t = text(&base.stdout);
    assert_allocator(&base.stderr, "glibc", &base);

    // What glibc does, so that the comparison below compares the intended cases.
    let (major, minor) = glibc_version(&t);
    let mut expected = vec![
        "malloc(size_max) -> NULL errno=ENOMEM",
        "malloc(ptrdiff_max + 1) -> NULL errno=ENOMEM",
        "malloc_usable_size(NULL) -> 0 errno=unchanged",
        "malloc(0..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "calloc(1, 0..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "realloc(NULL, 0..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "reallocarray(NULL, 0..8, 1) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "realloc(malloc(100), 1..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "memalign(16, 0..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "aligned_alloc(16, 0..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "posix_memalign(&p,16,0..8) x64 -> blocks aligned(16)=yes usable=yes errno=unchanged",
        "calloc(size_max / 2 + 1, 2) -> NULL errno=ENOMEM",
        "calloc(2, size_max / 2 + 1) -> NULL errno=ENOMEM",
        "calloc(10, 100) after a freed dirty block: zeroed=yes",
        "realloc(old, size_max) -> NULL errno=ENOMEM",
        "  old block after failed realloc: contents kept usable>=50=yes",
        "reallocarray(old, size_max / 2 + 1, 2) -> NULL errno=ENOMEM",
        "  old block after failed reallocarray: contents kept",
        "realloc(old, 0) -> NULL errno=unchanged",
        "realloc(p, 0) -> NULL errno=unchanged",
        "realloc(NULL, 0) -> block aligned(16)=yes usable>=0=yes errno=unchanged",
        "reallocarray(old, 0, 10) -> NULL errno=unchanged",
        "memalign(3, 100..844) x32 -> blocks aligned(4)=yes usable=yes errno=unchanged",
        "memalign(24, 100..844) x32 -> blocks aligned(32)=yes usable=yes errno=unchanged",
        "memalign(100, 100..844) x32 -> blocks aligned(128)=yes usable=yes errno=unchanged",
        "memalign(4095, 100..844) x32 -> blocks aligned(4096)=yes usable=yes errno=unchanged",
        "memalign(24, 300 * 1024) -> block aligned(32)=yes usable>=307200=yes errno=unchanged",
        "memalign(size_max / 2 + 2, 10) -> NULL errno=EINVAL",
        "posix_memalign(&p,0,16) -> rc=EINVAL memptr=untouched errno=unchanged",
        "posix_memalign(&p,3,16) -> rc=EINVAL memptr=untouched errno=unchanged",
        "posix_memalign(&p,4,16) -> rc=EINVAL memptr=untouched errno=unchanged",
        "posix_memalign(&p,24,16) -> rc=EINVAL memptr=untouched errno=unchanged",
        "aligned_alloc(64, 100) -> block aligned(64)=yes usable>=100=yes errno=unchanged",
        "pvalloc(size_max) -> NULL errno=ENOMEM",
        "pvalloc(size_max - page + 2) -> NULL errno=ENOMEM",
        "valloc(size_max) -> NULL errno=ENOMEM",
        "free(NULL) -> errno=unchanged",
        "cfree(NULL) -> errno=unchanged",
    ];
    if (major, minor) < (2, 38) {
        // aligned_alloc is memalign: a non-power-of-two alignment rounds up
        expected.push("aligned_alloc(24, 100) -> block aligned(32)=yes usable>=100=yes errno=unchanged");
    } else {
        expected.push("aligned_alloc(24, 100) -> NULL errno=EINVAL");
    }
    for line in &expected {
        assert!(t.lines().any(|l| l == *line), "glibc alone did not print {line:?}\n{t}");
    }
    for prefix in ["posix_memalign(&p,64,SIZE_MAX) -> rc=ENOMEM memptr=untouched", "posix_memalign(&p,SIZE_MAX/2+1,16) -> rc=ENOMEM memptr=untouched"] {
        assert!(t.lines().any(|l| l.starts_with(prefix)), "glibc alone did not print {prefix:?}\n{t}");
    }
    for l in t.lines() {
        if l.starts_with("valloc(") || l.starts_with("pvalloc(") {
            assert!(l.contains("NULL") || l.contains(")=yes usable>="), "{l}");
        }
        if l.starts_with("free(") || l.starts_with("cfree(") {
            assert!(l.ends_with("errno=unchanged"), "free changed errno: {l}");
        }
        if l.contains("contents") {
            assert!(l.contains("contents kept"), "{l}");
        }
        assert!(!l.contains("=no"), "glibc alone: {l}");
    }
    assert!(t.lines().any(|l| l.starts_with("pvalloc(100) -> block aligned(") && l.contains(")=yes usable>=")), "{t}");
    assert!(t.lines().count() >= 148, "transcript too short\n{t}");

    // The library: the same transcript, and its counts follow every step.
    assert_allocator(&with.stderr, &allocator(), &with);
    let w = text(&with.stdout);
    if w != t {
        let diff: Vec<String> = t.lines().zip(w.lines()).filter(|(a, b)| a != b).map(|(a, b)| format!("  glibc:   {a}\n  memtrim: {b}")).take(20).collect();
        panic!("transcripts differ ({} vs {} lines):\n{}\n{}", t.lines().count(), w.lines().count(), diff.join("\n"), show(&with));
    }
    assert_success(&with, "errors with the library");
    let e = text(&with.stderr);
    assert!(e.lines().any(|l| l.starts_with("stats checks: ") && l.ends_with(", failed: 0")), "{}", show(&with));

    // MEMTRIM_DISABLE=1 is a pure pass-through to glibc, whatever the backend asked for: the
    // same transcript, and the exported malloc_usable_size is glibc's.
    assert_success(&disabled, "errors with MEMTRIM_DISABLE=1");
    assert_allocator(&disabled.stderr, "glibc", &disabled);
    assert_eq!(text(&disabled.stdout), t, "transcript under MEMTRIM_DISABLE=1 differs\n{}", show(&disabled));
    assert!(text(&disabled.stderr).contains("stats checks: off"), "{}", show(&disabled));
}

/// Requirement 3: fork from a multi-threaded parent while its threads allocate; children and
/// grandchildren allocate on threads of their own; every process's counts stay exact.
#[test]
fn fork_while_threads_allocate() {
    if !have_gcc() {
        return;
    }
    let o = run_for(preloaded(&mut Command::new(program("fork.c", &[]))), Duration::from_secs(40));
    let out = text(&o.stdout);
    assert_success(&o, "fork");
    assert!(!out.contains("FAIL"), "{}", show(&o));
    let freed = out.lines().filter(|l| l.contains("] ok after join, every block freed on another thread: live_bytes delta 0, live blocks delta 0")).count();
    assert_eq!(freed, 6, "3 children and 3 grandchildren must each report exact counts\n{}", show(&o));
    assert_eq!(out.lines().filter(|l| l.contains("ok threads parked holding blocks")).count(), 6, "{}", show(&o));
    assert!(out.contains("[parent] ok after join, threads holding blocks"), "{}", show(&o));
    assert!(out.contains("[parent] ok after every block was freed: live_bytes delta 0, live blocks delta 0"), "{}", show(&o));
    assert!(out.contains("[parent] all processes ok"), "{}", show(&o));
}

/// Requirement 4: dlopen of modules with (dynamic) TLS while threads allocate, then every thread
/// touches the TLS; more modules than glibc's DTV surplus, so old threads' DTVs grow through
/// malloc from inside __tls_get_addr. No hang, no crash.
#[test]
fn dlopen_tls_while_threads_allocate() {
    if !have_gcc() {
        return;
    }
    let module = program("tls_module.c", &["-shared", "-fPIC"]);
    let bin = program("dlopen_tls.c", &[]);
    let dir = module.parent().unwrap().join("tls-modules");
    std::fs::create_dir_all(&dir).unwrap();
    // Distinct files (not links): the loader loads each copy as a module of its own.
    let copies: Vec<PathBuf> = (0..20)
        .map(|i| {
            let p = dir.join(format!("tls_module_{i}.so"));
            std::fs::copy(&module, &p).unwrap();
            p
        })
        .collect();
    let base = run_for(Command::new(&bin).args(&copies), Duration::from_secs(30));
    assert_success(&base, "dlopen_tls without the library");
    let o = run_for(preloaded(Command::new(&bin).args(&copies)), Duration::from_secs(30));
    let out = text(&o.stdout);
    assert_success(&o, "dlopen_tls with the library");
    assert!(out.contains("round 3: 20 modules loaded, touched and closed"), "{}", show(&o));
    assert!(out.contains(" 0 bad values"), "{}", show(&o));
    assert!(out.contains("stats: live "), "memtrim_get_stats must be found\n{}", show(&o));
}

/// Requirement 5: C++ thread_local objects that allocate in their constructors and destructors,
/// in 8000 short threads; live bytes and blocks return exactly to their start.
#[test]
fn cxx_thread_local_objects() {
    if !require_tool("g++") {
        return;
    }
    let bin = program("thread_local.cpp", &[]);
    let o = run_for(preloaded(Command::new(&bin).arg("2000")), Duration::from_secs(30));
    let out = text(&o.stdout);
    assert_success(&o, "thread_local");
    assert!(
        out.contains("ok: live_bytes delta 0, live blocks delta 0") && out.contains("8000 thread_local objects constructed, 8000 destroyed"),
        "{}",
        show(&o)
    );
}

fn report_lines(o: &Output) -> Vec<String> {
    text(&o.stderr).lines().filter(|l| l.starts_with("memtrim:") && l.contains("live")).map(str::to_owned).collect()
}

/// Requirement 6: every way out of a process, with MEMTRIM_REPORT=1: one report line for return
/// and exit (also while threads allocate, and from a thread), nothing hangs, abort is SIGABRT.
#[test]
fn every_exit_path() {
    if !have_gcc() {
        return;
    }
    let bin = program("exits.c", &[]);
    for mode in ["return", "exit", "_exit", "abort", "exit-busy", "return-busy", "exit-from-thread"] {
        let o = run_for(preloaded(Command::new(&bin).arg(mode).env("MEMTRIM_REPORT", "1")), Duration::from_secs(20));
        assert!(text(&o.stdout).contains(&format!("exits: {mode}")), "{mode}\n{}", show(&o));
        let reports = report_lines(&o);
        assert!(reports.len() <= 1, "{mode}: more than one report\n{}", show(&o));
        match mode {
            "abort" => assert_eq!(o.status.signal(), Some(6), "abort must end in SIGABRT\n{}", show(&o)),
            "_exit" => assert_success(&o, mode),
            _ => {
                assert_success(&o, mode);
                assert_eq!(reports.len(), 1, "{mode}: no report line on stderr\n{}", show(&o));
            }
        }
    }
    // Without MEMTRIM_REPORT the library says nothing.
    let o = run_for(preloaded(Command::new(&bin).arg("return").env_remove("MEMTRIM_REPORT")), Duration::from_secs(20));
    assert_success(&o, "return without report");
    assert_eq!(text(&o.stderr), "", "{}", show(&o));
}

fn stats_line(o: &Output) -> String {
    text(&o.stdout).lines().find(|l| l.starts_with("stats: ")).unwrap_or_else(|| panic!("no stats line\n{}", show(o))).to_owned()
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

const API_CONTRACT: [&str; 6] = [
    "api: NULL -> -1",
    "api: out_size 0 -> -1",
    "api: out_size 7 -> -1, buffer untouched",
    "api: out_size 8 -> 0, size 8, version 1, bytes past 8 untouched",
    "api: out_size 16 -> 0, size 16, bytes past 16 untouched",
    "api: out_size 64 -> 0, size 40, bytes past 40 untouched",
];

/// The C API's argument contract and plausible figures with the library enabled.
#[test]
fn stats_api_contract() {
    if !have_gcc() {
        return;
    }
    let o = run_for(preloaded(&mut Command::new(program("stats_probe.c", &[]))), Duration::from_secs(20));
    assert_success(&o, "stats_probe");
    assert_allocator(&o.stdout, &allocator(), &o);
    let out = text(&o.stdout);
    for l in API_CONTRACT {
        assert!(out.lines().any(|x| x == l), "missing {l:?}\n{}", show(&o));
    }
    let s = stats_line(&o);
    assert_eq!(field(&s, "rc"), 0, "{s}");
    assert_eq!(field(&s, "size"), 40, "{s}");
    assert_eq!(field(&s, "version"), 1, "{s}");
    // 3 threads x 1000 iterations x 10 allocations each
    assert!(field(&s, "allocs") >= 30000 && field(&s, "frees") >= 30000, "{s}");
    assert!(field(&s, "live_during") >= field(&s, "live") + (1 << 20), "{s}");
    assert!(field(&s, "peak") >= field(&s, "live_during"), "{s}");
}

/// Requirement 7: MEMTRIM_DISABLE=1 (or any other spelling of true the configuration accepts):
/// the program runs on glibc whatever MEMTRIM_ALLOCATOR says, memtrim_get_stats answers (0, as for
/// any valid call) and every counter stays zero; no worker thread is started.
#[test]
fn disabled_counts_nothing() {
    if !have_gcc() {
        return;
    }
    for value in ["1", "true"] {
        let o = run_for(preloaded(Command::new(program("stats_probe.c", &[])).env("MEMTRIM_DISABLE", value)), Duration::from_secs(20));
        assert_success(&o, &format!("stats_probe with MEMTRIM_DISABLE={value}"));
        assert_allocator(&o.stdout, "glibc", &o);
        let out = text(&o.stdout);
        for l in API_CONTRACT {
            assert!(out.lines().any(|x| x == l), "missing {l:?}\n{}", show(&o));
        }
        let s = stats_line(&o);
        assert_eq!(s, "stats: rc=0 size=40 version=1 live=0 peak=0 allocs=0 frees=0 live_during=0", "{}", show(&o));
        assert!(out.contains("threads_at_start=1\n"), "MEMTRIM_DISABLE={value} must start no thread\n{}", show(&o));
        assert_eq!(text(&o.stderr), "", "{}", show(&o));
    }
}

/// Requirement 8: a bad value prints exactly one line naming the variable, the value and the
/// default, and the host runs on; an unknown MEMTRIM_ name (a typo) warns once.
#[test]
fn bad_configuration_warns_once() {
    if !have_gcc() {
        return;
    }
    let bin = program("stats_probe.c", &[]);
    let o = run_for(preloaded(Command::new(&bin).env("MEMTRIM_REPORT", "maybe")), Duration::from_secs(20));
    assert_success(&o, "stats_probe with MEMTRIM_REPORT=maybe");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line expected\n{}", show(&o));
    let l = lines[0];
    assert!(l.contains("MEMTRIM_REPORT") && l.contains("maybe"), "{l}");
    let after = l.split_once("default").map(|x| x.1).unwrap_or_else(|| panic!("no default named: {l}"));
    assert!(after.contains('0'), "the default (0) is not named: {l}");
    assert_eq!(field(&stats_line(&o), "rc"), 0);
    assert_allocator(&o.stdout, &allocator(), &o);

    let o = run_for(preloaded(Command::new(&bin).env("MEMTRIM_REPROT", "1")), Duration::from_secs(20));
    assert_success(&o, "stats_probe with MEMTRIM_REPROT=1");
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "exactly one warning expected\n{}", show(&o));
    assert!(err.contains("MEMTRIM_REPROT"), "{}", show(&o));
    assert!(!err.contains("live"), "a typo must not turn the report on\n{}", show(&o));

    // An unknown allocator: one warning, and glibc serves.
    let o = run_for(preloaded(&mut Command::new(&bin)).env("MEMTRIM_ALLOCATOR", "jemaloc"), Duration::from_secs(20));
    assert_success(&o, "stats_probe with MEMTRIM_ALLOCATOR=jemaloc");
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "exactly one warning expected\n{}", show(&o));
    assert!(err.contains("MEMTRIM_ALLOCATOR") && err.contains("jemaloc") && err.contains("glibc"), "{}", show(&o));
    assert_allocator(&o.stdout, "glibc", &o);
}
