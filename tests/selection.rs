//! Which processes get a worker thread and a page: MEMTRIM_ONLY and MEMTRIM_STATS=0. Every other
//! process that inherits LD_PRELOAD must stay a plain pass-through that leaves no file behind.
mod common;
use common::{Proc, TempDir, preloaded};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `sleep` under the library with its own page directory and a short interval.
fn sleeper(dir: &Path, env: &[(&str, &str)]) -> Proc {
    let mut c = Command::new(common::idle_sleep());
    c.arg("30").env("MEMTRIM_SHM_DIR", dir).env("MEMTRIM_INTERVAL_MS", "50").envs(env.iter().copied()).stdin(Stdio::null());
    Proc(preloaded(&mut c).spawn().expect("sleep starts"))
}

fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "memtrim")).count())
        .unwrap_or(0)
}

fn pages(dir: &Path) -> usize {
    common::page_files(dir).len()
}

/// Waits up to 3 s for a page; returns how many there are then.
fn settle(dir: &Path) -> usize {
    let t0 = Instant::now();
    while pages(dir) == 0 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    pages(dir)
}

#[test]
fn only_selects_by_process_name() {
    let picked = TempDir::new("picked");
    let other = TempDir::new("other");
    let a = sleeper(picked.path(), &[("MEMTRIM_ONLY", "gunicorn,sleep")]);
    let b = sleeper(other.path(), &[("MEMTRIM_ONLY", "gunicorn,puma")]);
    assert_eq!(settle(picked.path()), 1, "a selected process has a page");
    assert_eq!(worker_threads(a.pid()), 1, "and one worker thread");
    assert_eq!(settle(other.path()), 0, "a process MEMTRIM_ONLY does not name leaves no file");
    assert_eq!(worker_threads(b.pid()), 0, "and has no worker thread");
}

#[test]
fn stats_off_means_no_thread_and_no_page() {
    let dir = TempDir::new("off");
    let s = sleeper(dir.path(), &[("MEMTRIM_STATS", "0")]);
    assert_eq!(settle(dir.path()), 0);
    assert_eq!(worker_threads(s.pid()), 0);
}
