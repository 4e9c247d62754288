//! Which processes get a worker thread and a page: MEMTRIM_ONLY and MEMTRIM_STATS=0. Every other
//! process that inherits LD_PRELOAD must stay a plain pass-through that leaves no file behind.
mod common;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sleep` under the library with its own page directory and a short interval.
fn sleeper(dir: &Path, env: &[(&str, &str)]) -> Sleeper {
    let mut c = Command::new("sleep");
    c.arg("30").env("MEMTRIM_SHM_DIR", dir).env("MEMTRIM_INTERVAL_MS", "50").envs(env.iter().copied()).stdin(Stdio::null());
    Sleeper(common::preloaded(&mut c).spawn().expect("sleep starts"))
}

fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "memtrim")).count())
        .unwrap_or(0)
}

fn pages(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("memtrim.")).count()).unwrap_or(0)
}

/// Waits up to 3 s for a page; returns how many there are then.
fn settle(dir: &Path) -> usize {
    let t0 = Instant::now();
    while pages(dir) == 0 && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    pages(dir)
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("memtrim-selection-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn only_selects_by_process_name() {
    let picked = tempdir("picked");
    let other = tempdir("other");
    let a = sleeper(&picked, &[("MEMTRIM_ONLY", "gunicorn,sleep")]);
    let b = sleeper(&other, &[("MEMTRIM_ONLY", "gunicorn,puma")]);
    assert_eq!(settle(&picked), 1, "a selected process has a page");
    assert_eq!(worker_threads(a.0.id()), 1, "and one worker thread");
    assert_eq!(settle(&other), 0, "a process MEMTRIM_ONLY does not name leaves no file");
    assert_eq!(worker_threads(b.0.id()), 0, "and has no worker thread");
    drop((a, b));
    std::fs::remove_dir_all(picked).ok();
    std::fs::remove_dir_all(other).ok();
}

#[test]
fn stats_off_means_no_thread_and_no_page() {
    let dir = tempdir("off");
    let s = sleeper(&dir, &[("MEMTRIM_STATS", "0")]);
    assert_eq!(settle(&dir), 0);
    assert_eq!(worker_threads(s.0.id()), 0);
    drop(s);
    std::fs::remove_dir_all(dir).ok();
}
