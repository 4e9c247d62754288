//! `memtrim trim PID|--all [--timeout SECS] [--dir DIR]`: asks processes to release retained
//! memory now, through their pages: a request counter the worker waits on (futex), answered by
//! setting the served counter and waking it. No signal is sent (signals belong to the host).
//! Only the page's owner (or root) can ask: the page is 0600, and a page owned by another user
//! is refused even to root-like callers that could open it (unless root).
use crate::cli::{self, PageDir};
use crate::output::print_or_quiet;
use crate::pages;
use crate::request::{Ask, Target};
use crate::{json, view};
use memtrim_common::page::Stats;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["pid", "all"])))]
pub struct Opts {
    /// The process
    #[arg(value_parser = cli::pid())]
    pid: Option<u32>,
    /// Every live process of yours
    #[arg(short, long)]
    all: bool,
    /// How long to wait for each answer
    #[arg(short, long, value_name = "SECS", value_parser = cli::request_timeout, default_value = "10")]
    timeout: Duration,
    #[command(flatten)]
    dir: PageDir,
}

struct Pending {
    target: Target,
    comm: String,
    request: u32,
}

pub fn main(o: Opts) -> i32 {
    let (all, pid, timeout, dir) = (o.all, o.pid, o.timeout, o.dir.path());
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
    let (mut total, mut served, mut shown) = (0u64, 0usize, 0);
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
                shown = shown.max(print_or_quiet(&format!(
                    "pid {} ({}): released {} ({released} B) {how}",
                    p.target.pid,
                    pages::printable(&p.comm),
                    view::size(released)
                )));
            }
            Err(why) => {
                eprintln!("memtrim trim: pid {} ({}): {why}", p.target.pid, pages::printable(&p.comm));
                failed += 1;
            }
        }
    }
    if all {
        shown = shown.max(print_or_quiet(&format!(
            "{served} process{} released {} ({total} B){}",
            if served == 1 { "" } else { "es" },
            view::size(total),
            if failed > 0 { format!("; {failed} failed") } else { String::new() }
        )));
    }
    if failed > 0 { 1 } else { shown }
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
