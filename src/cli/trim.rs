//! `memtrim trim PID|--all [--timeout SECS] [--dir DIR]`: asks processes to release retained
//! memory now, through their pages: a request counter the worker waits on (futex), answered by
//! setting the served counter and waking it. No signal is sent (signals belong to the host).
//! Only the page's owner (or root) can ask: the page is 0600, and a page owned by another user
//! is refused even to root-like callers that could open it (unless root).
use crate::pages::{self, Mapped, Skip};
use crate::{json, view};
use core::sync::atomic::Ordering::*;
use memtrim_common::futex;
use memtrim_common::page::Stats;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: memtrim trim PID|--all [--timeout SECS] [--dir DIR]
  asks the process (every live process of yours with --all) to give retained memory back now,
  waits for it and prints the bytes released and how long the release took
  --timeout SECS  how long to wait for each answer (default 10)
  --dir DIR       the page directory (default: $MEMTRIM_SHM_DIR, else /dev/shm)";

struct Pending {
    pid: u32,
    start_ticks: u64,
    comm: String,
    map: Mapped,
    before: Stats,
    request: u32,
}

pub fn main(args: &[String]) -> i32 {
    let mut all = false;
    let mut pid: Option<u32> = None;
    let mut timeout = Duration::from_secs(10);
    let mut dir: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all" | "-a" => all = true,
            "--timeout" | "-t" => match it.next().and_then(|s| s.parse::<f64>().ok()).filter(|s| s.is_finite() && *s > 0.0 && *s < 86400.0) {
                Some(s) => timeout = Duration::from_secs_f64(s),
                None => return usage("--timeout takes seconds (> 0)"),
            },
            "--dir" => match it.next() {
                Some(d) => dir = Some(d.clone()),
                None => return usage("--dir takes a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            p if pid.is_none() && !p.starts_with('-') => match p.parse::<u32>() {
                Ok(n) if n > 0 => pid = Some(n),
                _ => return usage(&format!("{p:?} is not a pid")),
            },
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let dir = pages::dir(dir.as_deref());
    let targets: Vec<(PathBuf, u32, u64)> = match (all, pid) {
        (true, Some(_)) => return usage("give a PID or --all, not both"),
        (false, None) => return usage("which PID? (or --all)"),
        (true, None) => {
            let scan = match pages::scan(&dir, false) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("memtrim trim: cannot read {}: {e}", dir.display());
                    return 1;
                }
            };
            if let Some(line) = scan.skipped_summary("trim") {
                eprintln!("{line}");
            }
            let t: Vec<_> = scan.live().map(|e| (e.path.clone(), e.stats.pid, e.stats.start_ticks)).collect();
            if t.is_empty() {
                eprintln!("memtrim trim: no live process of yours has a page in {}", dir.display());
                return 0;
            }
            t
        }
        (false, Some(pid)) => match pages::locate(&dir, pid) {
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
                let released = after.released_bytes.saturating_sub(p.before.released_bytes);
                let releases = after.trims.saturating_sub(p.before.trims);
                total += released;
                served += 1;
                let how = if releases == 0 {
                    "a release was already running in the process; nothing more was done".to_string()
                } else {
                    format!("in {} ms", json::ms_from_us(after.last_trim_us))
                };
                println!("pid {} ({}): released {} ({released} B) {how}", p.pid, pages::printable(&p.comm), view::size(released));
            }
            Err(why) => {
                eprintln!("memtrim trim: pid {} ({}): {why}", p.pid, pages::printable(&p.comm));
                failed += 1;
            }
        }
    }
    if all {
        println!("{served} process{} released {} ({total} B){}", if served == 1 { "" } else { "es" }, view::size(total), if failed > 0 { format!("; {failed} failed") } else { String::new() });
    }
    if failed > 0 { 1 } else { 0 }
}

fn usage(why: &str) -> i32 {
    eprintln!("memtrim trim: {why}\n{USAGE}");
    2
}

/// Opens the page for writing, checks it, and posts one request.
fn request(path: &std::path::Path, pid: u32, start: u64) -> Result<Pending, String> {
    let me = pages::euid();
    let map = pages::map(path, true).map_err(|s| match s {
        Skip::OtherUser(uid) => format!(
            "permission denied: the page {} belongs to uid {uid} and you are uid {me}; only its owner or root can request a release",
            path.display()
        ),
        Skip::PermissionDenied => format!("permission denied opening {}: only the page's owner or root can request a release", path.display()),
        other => format!("{}: {}", path.display(), other.describe()),
    })?;
    if me != 0 && map.uid != me {
        return Err(format!("permission denied: the page belongs to uid {}; only its owner or root can request a release", map.uid));
    }
    let before = pages::snapshot(&map, pid, start).map_err(|s| format!("{}: {}", path.display(), s.describe()))?;
    if !pages::is_live(pid, start) {
        return Err("the process is gone (stale page; `memtrim clean` removes it)".into());
    }
    let control = &map.page().control;
    let request = control.trim_requested.fetch_add(1, AcqRel).wrapping_add(1);
    futex::wake_all(&control.trim_requested);
    Ok(Pending { pid, start_ticks: start, comm: before.comm_str(), map, before, request })
}

/// Waits until the worker has served the request (and published what it did), the deadline
/// passes, or the process exits.
fn wait(p: &Pending, deadline: Instant) -> Result<Stats, String> {
    let control = &p.map.page().control;
    loop {
        let served = control.trim_served.load(Acquire);
        if served.wrapping_sub(p.request) as i32 >= 0 {
            // The worker publishes before it marks the request served.
            return pages::snapshot(&p.map, p.pid, p.start_ticks).map_err(|s| s.describe());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "timed out: the request was not served within the timeout (its memtrim worker is stuck or not running; page last updated {} ago)",
                crate::stat::human_ms(pages::now_ms().saturating_sub(p.before.updated_at_ms))
            ));
        }
        if !pages::is_live(p.pid, p.start_ticks) {
            return Err("the process exited before serving the request".into());
        }
        futex::wait(&control.trim_served, served, (deadline - now).min(Duration::from_millis(200)));
    }
}
