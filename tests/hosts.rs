//! Real interpreters as hosts of libmemtrim.so: CPython (its own allocator and
//! PYTHONMALLOC=malloc), a subset of CPython's regression suite, and Ruby with threads and fork.
//!
//! The scripts live in tests/py/ and tests/rb/; each says at its top what it checks. Tests of
//! this file run one at a time (a lock), because the regression suite uses both cores and its
//! timing tests must not compete with the others.
//!
//! On CI (CI=true) a missing interpreter or test package fails the test; elsewhere it is skipped
//! with a message.

mod common;

use common::{allocator, lib, on_ci, preloaded, require_tool, root, run_for, serial, show, text};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

fn py(script: &str) -> PathBuf {
    root().join("tests/py").join(script)
}

fn rb(script: &str) -> PathBuf {
    root().join("tests/rb").join(script)
}

/// For commands whose stdout the test has already printed.
fn show_rest(o: &Output) -> String {
    format!("status {} (stdout above)\n--- stderr\n{}", o.status, text(&o.stderr))
}

/// The distinct CPython interpreters to host: `python3` on PATH and Debian's /usr/bin/python3
/// (the one that has the regression suite on CI), each once.
fn pythons() -> Vec<String> {
    if !require_tool("python3") {
        return Vec::new();
    }
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for p in ["python3", "/usr/bin/python3"] {
        let Ok(o) = Command::new(p).args(["-c", "import sys, os; print(os.path.realpath(sys.executable))"]).output() else {
            continue;
        };
        if !o.status.success() {
            continue;
        }
        let exe = text(&o.stdout).trim().to_string();
        if !seen.contains(&exe) {
            seen.push(exe);
            out.push(p.to_string());
        }
    }
    out
}

fn python_cmd(python: &str, script: &str, pythonmalloc: Option<&str>) -> Command {
    let mut c = Command::new(python);
    c.arg(py(script));
    c.env_remove("PYTHONMALLOC").env_remove("PYTHONDEVMODE");
    if let Some(m) = pythonmalloc {
        c.env("PYTHONMALLOC", m);
    }
    c
}

/// Runs tests/py/SCRIPT under the library with each interpreter (one test at a time), prints its
/// stdout, and checks that it succeeded and printed the line `pass`; with `quiet`, also that it
/// wrote nothing on stderr.
fn run_script(script: &str, pythonmalloc: Option<&str>, limit: Duration, pass: &str, quiet: bool) {
    let _g = serial();
    let mode = pythonmalloc.unwrap_or("default");
    for python in pythons() {
        let mut c = python_cmd(&python, script, pythonmalloc);
        let o = run_for(preloaded(&mut c), limit);
        eprintln!("{}", text(&o.stdout));
        assert!(o.status.success(), "{python} {script} ({mode}) failed under the library:\n{}", show_rest(&o));
        assert!(text(&o.stdout).lines().any(|l| l == pass), "no {pass} line:\n{}", show_rest(&o));
        if quiet {
            assert!(text(&o.stderr).trim().is_empty(), "{python} ({mode}) wrote on stderr under the library:\n{}", show_rest(&o));
        }
    }
}

fn python_live_bytes(pythonmalloc: Option<&str>) {
    run_script("live_bytes.py", pythonmalloc, Duration::from_secs(120), &format!("PASS [{}]", pythonmalloc.unwrap_or("default")), true);
}

/// ~100 MiB of bytes/str objects with pymalloc in front: live_bytes rises >= 90 MiB and falls
/// back within 2 MiB; threads; trim (tests/py/live_bytes.py).
#[test]
fn python_live_bytes_default_allocator() {
    python_live_bytes(None);
}

/// The same with every Python allocation going to malloc.
#[test]
fn python_live_bytes_pythonmalloc_malloc() {
    python_live_bytes(Some("malloc"));
}

fn python_thread_imports(pythonmalloc: Option<&str>) {
    run_script("thread_imports.py", pythonmalloc, Duration::from_secs(300), "PASS", true);
}

/// C extension modules and TLS libraries dlopen'ed from several threads at once while other
/// threads allocate, then fork (tests/py/thread_imports.py).
#[test]
fn python_extension_imports_from_threads() {
    python_thread_imports(None);
}

#[test]
fn python_extension_imports_from_threads_pythonmalloc_malloc() {
    python_thread_imports(Some("malloc"));
}

/// A process ends when its last host thread ends (pthread_exit of the main thread; the only
/// thread of a child forked from a non-main thread returns): the library's worker thread must
/// not keep it alive (tests/py/last_thread_exit.py).
#[test]
fn python_process_exits_with_its_last_thread() {
    run_script("last_thread_exit.py", None, Duration::from_secs(120), "PASS", false);
}

const REGRTESTS: &[&str] = &["test_threading", "test_subprocess", "test_json", "test_gc", "test_mmap", "test_os", "test_ctypes", "test_multiprocessing_fork"];

/// With REGRTESTS: the tests of weak references, threads' executors and the event loop, which
/// free and reuse objects from many threads and from finalizers.
const POOL_REGRTESTS: &[&str] = &["test_weakref", "test_concurrent_futures", "test_asyncio"];

/// CPython's own tests, run without and with the library: every test case must end the same
/// way (tests/py/regrtest_compare.py). With the library, CPython's empty pools are given back
/// every 10 ms (MEMTRIM_PYMALLOC_EVERY_MS) besides everything else it does by default.
#[test]
fn cpython_regression_suite_same_with_library() {
    regression_suite_same(&[REGRTESTS, POOL_REGRTESTS].concat(), &["MEMTRIM_PYMALLOC_EVERY_MS=10"]);
}

/// tests/py/regrtest_compare.py on `tests`, the preloaded runs with `preload_env` (NAME=VALUE).
fn regression_suite_same(tests: &[&str], preload_env: &[&str]) {
    let _g = serial();
    if !require_tool("python3") {
        return;
    }
    let mut c = Command::new("python3");
    c.arg(py("regrtest_compare.py")).arg("--lib").arg(lib()).args(["--jobs", "2"]);
    // the backend of this pass (the script's clean environment drops every MEMTRIM_ variable)
    let backend = format!("MEMTRIM_ALLOCATOR={}", allocator());
    for kv in preload_env.iter().copied().chain([backend.as_str()]) {
        c.args(["--preload-env", kv]);
    }
    c.args(tests);
    c.env_remove("LD_PRELOAD");
    let o = run_for(&mut c, Duration::from_secs(40 * 60));
    eprintln!("{}", text(&o.stdout));
    if o.status.code() == Some(3) {
        assert!(!on_ci(), "CPython's test package is required on CI but missing:\n{}", show_rest(&o));
        eprintln!("SKIP: CPython's test package with {tests:?} is not installed (apt-get install libpython3.11-testsuite)");
        return;
    }
    assert!(o.status.success(), "CPython's tests end differently with the library ({preload_env:?}):\n{}", show_rest(&o));
}

/// Ruby with threads, fork (also from a thread while others allocate), a spawned child and
/// GC.compact: the same stdout with and without the library; live_bytes checked via Fiddle.
#[test]
fn ruby_threads_and_fork_same_output() {
    let _g = serial();
    if !require_tool("ruby") {
        return;
    }
    let script = rb("threads_fork.rb");
    let base = run_for(Command::new("ruby").arg(&script).env_remove("LD_PRELOAD"), Duration::from_secs(120));
    assert!(base.status.success(), "ruby threads_fork.rb failed without the library:\n{}", show(&base));
    assert!(text(&base.stderr).trim().is_empty(), "stderr without the library:\n{}", show(&base));
    let mut c = Command::new("ruby");
    c.arg(&script).env("RB_MEMTRIM_CHECK", "1");
    let with = run_for(preloaded(&mut c), Duration::from_secs(120));
    eprintln!("{}{}", text(&with.stdout), text(&with.stderr));
    assert!(with.status.success(), "ruby threads_fork.rb failed under the library:\n{}", show(&with));
    assert_eq!(text(&base.stdout), text(&with.stdout), "stdout differs with the library");
    assert!(text(&with.stdout).ends_with("done\n"), "incomplete output:\n{}", show(&with));
    let err = text(&with.stderr);
    let checks: Vec<&str> = err.lines().collect();
    assert!(
        checks.len() == 2 && checks.iter().all(|l| l.starts_with("check ok")),
        "expected exactly two 'check ok' lines on stderr under the library:\n{}",
        show(&with)
    );
}
