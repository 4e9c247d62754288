//! `memtrim trim PID|--all [--timeout SECS] [--dir DIR]`: asks processes to release retained
//! memory now, through their pages: a request counter the worker waits on (futex), answered by
//! setting the served counter and waking it. No signal is sent (signals belong to the host).
//! Only the page's owner (or root) can ask: the page is 0600, and a page owned by another user
//! is refused even to root-like callers that could open it (unless root).
use crate::args::{Args, Cmd};
use crate::pages;
use crate::request::{Ask, Target};
use crate::{json, view};
use memtrim_common::page::Stats;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: memtrim trim PID|--all [--timeout SECS] [--dir DIR]
  asks the process (every live process of yours with --all) to give retained memory back now,
  waits for it and prints the bytes released and how long the release took
  --timeout SECS  how long to wait for each answer (default 10)
  --dir DIR       the page directory (default: $MEMTRIM_SHM_DIR, else /dev/shm)";

const CMD: Cmd = Cmd { name: "trim", usage: USAGE };

struct Pending {
    target: Target,
    comm: String,
    request: u32,
}

struct Opts {
    all: bool,
    pid: Option<u32>,
    timeout: Duration,
    dir: PathBuf,
}

fn parse(words: &[String]) -> Result<Opts, i32> {
    let mut a = Args::new(&CMD, words).with_pid();
    let (mut all, mut timeout) = (false, Duration::from_secs(10));
    while let Some(w) = a.next() {
        match w {
            "--all" | "-a" => all = true,
            "--timeout" | "-t" => timeout = a.request_timeout()?,
            other => a.common(other)?,
        }
    }
    match (all, a.pid) {
        (true, Some(_)) => Err(a.usage_error("give a PID or --all, not both")),
        (false, None) => Err(a.usage_error("which PID? (or --all)")),
        (all, pid) => Ok(Opts { all, pid, timeout, dir: a.page_dir() }),
    }
}

pub fn main(args: &[String]) -> i32 {
    let Opts { all, pid, timeout, dir } = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let targets: Vec<(PathBuf, u32, u64)> = match pid {
        None => {
            let Some(scan) = pages::scan_saying(&dir, false, "trim") else { return 1 };
            let t: Vec<_> = scan.live().map(|e| (e.path.clone(), e.stats.pid, e.stats.start_ticks)).collect();
            if t.is_empty() {
                eprintln!("memtrim trim: no live process of yours has a page in {}", dir.display());
                return 0;
            }
            t
        }
        Some(pid) => match pages::locate(&dir, pid) {
            Ok((path, start)) => vec![(path, pid, start)],
            Err(why) => {
                eprintln!("memtrim trim: {why}");
                return 1;
            }
        },
    };
    let mut failed = 0;
    let mut pending = Vec::new();
    for (path, pid, start) in targets {
        match request(&path, pid, start) {
            Ok(p) => pending.push(p),
            Err(why) => {
                eprintln!("memtrim trim: pid {pid}: {why}");
                failed += 1;
            }
        }
    }
    let deadline = Instant::now() + timeout;
    let (mut total, mut served) = (0u64, 0usize);
    for p in pending {
        match wait(&p, deadline) {
            Ok(after) => {
                let before = &p.target.stats;
                let released = after.released_bytes.saturating_sub(before.released_bytes);
                let releases = after.trims.saturating_sub(before.trims);
                total += released;
                served += 1;
                let how = if releases == 0 {
                    "a release was already running in the process; nothing more was done".to_string()
                } else {
                    format!("in {} ms", json::ms_from_us(after.last_trim_us))
                };
                println!("pid {} ({}): released {} ({released} B) {how}", p.target.pid, pages::printable(&p.comm), view::size(released));
            }
            Err(why) => {
                eprintln!("memtrim trim: pid {} ({}): {why}", p.target.pid, pages::printable(&p.comm));
                failed += 1;
            }
        }
    }
    if all {
        println!("{served} process{} released {} ({total} B){}", if served == 1 { "" } else { "es" }, view::size(total), if failed > 0 { format!("; {failed} failed") } else { String::new() });
    }
    if failed > 0 { 1 } else { 0 }
}

/// Opens the page for writing, checks it, and posts one request.
fn request(path: &std::path::Path, pid: u32, start: u64) -> Result<Pending, String> {
    let target = Target::open(path, pid, start, Ask::Release, Instant::now())?;
    let request = target.post()?;
    Ok(Pending { comm: target.stats.comm_str(), target, request })
}

/// Waits until the worker has served the request; the page it then published.
fn wait(p: &Pending, deadline: Instant) -> Result<Stats, String> {
    let t = &p.target;
    t.wait(p.request, deadline)?;
    // The worker publishes before it marks the request served.
    pages::snapshot(&t.map, t.pid, t.start_ticks).map_err(|s| s.describe())
}
