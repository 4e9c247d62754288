//! When the shared stats page cannot be created (MEMTRIM_SHM_DIR missing, unwritable, or a name
//! planted by another user), the worker still runs: its policy, limits and releases work on a
//! private in-memory page, and it says so once on stderr.

mod common;

use common::{Driven, TUNING, TempDir, gathered, preloaded, python, root, rss_of, wait_for, without_env};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn idle_release_runs_without_a_shared_page() {
    let Some(python) = python() else { return };
    let dir = TempDir::new("no-page");
    // no such directory: the page cannot be created there
    let missing = dir.join("missing");
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/py/release_host.py"));
    without_env(&mut cmd, TUNING)
        .env("MEMTRIM_SHM_DIR", &missing)
        .env("MEMTRIM_LOG", "info")
        .env("MEMTRIM_INTERVAL_MS", "100ms")
        .env("MEMTRIM_IDLE_MS", "300ms")
        .env("MEMTRIM_FRAG_THRESHOLD", "off")
        .env("MEMTRIM_PSI_STALL_MS", "0");
    let mut io = Driven::spawn(preloaded(&mut cmd).stderr(Stdio::piped()));
    let stderr = gathered(io.proc.0.stderr.take().unwrap());
    let said = || format!("stderr:\n{}", stderr.lock().unwrap());
    let ready = io.line(Duration::from_secs(30), said);
    let pid: u32 = ready.strip_prefix("ready ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("expected `ready PID`, got {ready:?}"));
    io.ask("frag 20000 16000 16", said);
    let held = rss_of(pid).unwrap_or(0);
    let prefix = format!("memtrim: pid {pid} release (idle)");
    let line = wait_for("an idle release although no shared page could be created", Duration::from_secs(20), || {
        let all = stderr.lock().unwrap().clone();
        all.lines().find(|l| l.starts_with(&prefix)).map(str::to_string).ok_or(all)
    });
    let now = rss_of(pid).unwrap_or(u64::MAX);
    eprintln!("{line}; RSS {} -> {} MiB", held >> 20, now >> 20);
    assert!(now + (100 << 20) < held, "RSS fell only from {held} to {now} B: {line}");
    let all = said();
    assert_eq!(all.matches("no stats page").count(), 1, "one line about the missing page; {all}");
    assert!(!missing.exists(), "the library created {}", missing.display());
    io.end();
}
