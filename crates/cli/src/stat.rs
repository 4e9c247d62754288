//! `memtrim stat PID [--json] [--watch [SECS]] [--dir DIR]`: every field of one process's page,
//! with its unit and meaning.
use crate::cli::{self, PageDir};
use crate::pages::{self, Entry};
use crate::{json, ls::print_or_quiet, view};
use memtrim_common::limit::Metric;
use memtrim_common::page::{Reason, Stats};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Opts {
    /// The process (required; `stat --watch 1234` watches pid 1234)
    #[arg(value_name = "PID", value_parser = cli::pid())]
    pid: Option<u32>,
    /// One JSON object (the same as a row of `memtrim ls --json`)
    #[arg(long)]
    json: bool,
    /// Print again every SECS seconds (default 1, from 0.05 to 86400) until interrupted (with
    /// --json: one object per line); a number after --watch is SECS only if the PID is given
    /// elsewhere
    #[arg(short, long, value_name = "SECS", num_args = 0..=1)]
    watch: Option<Option<String>>,
    #[command(flatten)]
    dir: PageDir,
}

pub fn main(o: Opts) -> i32 {
    let (as_json, dir) = (o.json, o.dir.path());
    // `stat --watch 1234` means pid 1234: a number after --watch is SECS only if the pid is
    // given elsewhere.
    let (pid, watch) = match (o.pid, o.watch) {
        (None, Some(Some(p))) => (p.parse().ok().filter(|&p| p > 0).unwrap_or_else(|| cli::usage_error("stat", format!("{p:?} is not a pid"))), Some(None)),
        (pid, watch) => (pid.unwrap_or_else(|| cli::usage_error("stat", "which PID?")), watch),
    };
    let watch = match watch {
        None => None,
        Some(None) => Some(1.0),
        Some(Some(s)) => match cli::seconds(&s, |s| (0.05..=86400.0).contains(&s), "from 0.05 to 86400") {
            Ok(d) => Some(d.as_secs_f64()),
            Err(e) => cli::usage_error("stat", format!("--watch {e}")),
        },
    };
    let Some(every) = watch else {
        return match pages::find(&dir, pid) {
            Ok(e) => print_or_quiet(&if as_json { json::object(&e, pages::now_ms()) } else { describe(&e) }),
            Err(why) => {
                eprintln!("memtrim stat: {why}");
                1
            }
        };
    };
    let tty = unsafe { libc::isatty(1) } == 1;
    loop {
        match pages::find(&dir, pid) {
            Ok(e) => {
                let text = if as_json {
                    json::object(&e, pages::now_ms())
                } else if tty {
                    format!("\x1b[H\x1b[2J{}\n\n(every {every} s; Ctrl-C stops)", describe(&e))
                } else {
                    format!("{}\n", describe(&e))
                };
                if print_or_quiet(&text) != 0 {
                    return 1;
                }
            }
            Err(why) => {
                if pages::proc_info(pid).is_none() {
                    eprintln!("memtrim stat: process {pid} has exited");
                    return 0;
                }
                eprintln!("memtrim stat: {why}");
                return 1;
            }
        }
        std::thread::sleep(Duration::from_secs_f64(every));
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn uptime_ms() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// `3.2 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else if s < 86400 {
        format!("{} h {} min", s / 3600, s % 3600 / 60)
    } else {
        format!("{} d {} h", s / 86400, s % 86400 / 3600)
    }
}

fn us(v: u64) -> String {
    if v < 1000 {
        format!("{v} µs")
    } else {
        format!("{} ms", json::ms_from_us(v))
    }
}

fn bytes(v: u64) -> String {
    if v < 1024 {
        format!("{v} B")
    } else {
        format!("{} ({v} B)", view::size(v))
    }
}

fn ago(now: u64, at: u64) -> String {
    if at == 0 { "never".into() } else { format!("{} ago", human_ms(now.saturating_sub(at))) }
}

/// The page as text: a title line, then the fields by section, one line each: name, value,
/// meaning.
pub fn describe(e: &Entry) -> String {
    let s: &Stats = &e.stats;
    let now = pages::now_ms();
    let running = uptime_ms().map(|up| up.saturating_sub(s.start_ticks * 1000 / clock_ticks()));
    let cpu_share = match running {
        Some(r) if r > 0 => format!(" ({:.4} % of a core)", s.worker_cpu_us as f64 / 10.0 / r as f64),
        _ => String::new(),
    };
    let by_reason: Vec<String> = Reason::ALL
        .iter()
        .filter(|r| s.releases_by_reason[**r as usize] > 0)
        .map(|r| format!("{} {}", r.name(), s.releases_by_reason[*r as usize]))
        .collect();
    let limit = match Metric::from_code(s.limit_metric) {
        Some(m) => format!("{} {} (now {})", m.name(), view::size(s.limit_bytes), view::size(s.limit_value)),
        None => "none".into(),
    };
    type Row = (&'static str, String, &'static str);
    let sections: Vec<(&str, Vec<Row>)> = vec![
        ("process", vec![
            ("pid", s.pid.to_string(), "process id"),
            ("ppid", s.ppid.to_string(), "parent process id"),
            ("command", pages::printable(&s.comm_str()), "process name (/proc/PID/comm)"),
            ("uid", s.uid.to_string(), "real user id of the process"),
            ("allocator", json::allocator_name(s.allocator), "backend that serves the host's allocations"),
            ("running", running.map_or("?".into(), human_ms), "time since the process started"),
            ("updated", ago(now, s.updated_at_ms), "last publication by the worker thread"),
        ]),
        ("memory", vec![
            ("live", bytes(s.live_bytes), "bytes in blocks the host holds now (usable sizes)"),
            ("peak live", bytes(s.peak_live_bytes), "highest live seen"),
            ("heap", bytes(s.heap_bytes), "what the allocator holds from the system"),
            ("retained", bytes(s.retained_bytes), "heap - live: held by the allocator, unused"),
            ("fragmentation", if s.heap_bytes == 0 { "-".into() } else { format!("{:.1} %", s.frag_ratio() * 100.0) }, "retained / heap"),
            ("rss", bytes(s.rss_bytes), "resident set size"),
            ("pss", bytes(s.pss_bytes), "proportional set size: shared pages split among users"),
            ("uss", bytes(s.uss_bytes), "private resident bytes: what exiting would free"),
            ("swap", bytes(s.swap_bytes), "bytes swapped out"),
            ("pss measured", ago(now, s.smaps_at_ms), "PSS, USS and swap come from smaps_rollup"),
        ]),
        ("allocations", vec![
            ("allocs", s.allocs.to_string(), "blocks handed out (a moving realloc: free + alloc)"),
            ("frees", s.frees.to_string(), "blocks given back"),
            ("live blocks", s.allocs.saturating_sub(s.frees).to_string(), "allocs - frees"),
            ("alloc rate", format!("{}/s", s.alloc_rate), "allocations + frees per second, last interval"),
        ]),
        ("releases", vec![
            ("releases", s.trims.to_string(), "times retained memory was given back"),
            ("by reason", if by_reason.is_empty() { "-".into() } else { by_reason.join(", ") }, "what asked for them"),
            ("released", bytes(s.released_bytes), "resident bytes given back by all releases"),
            ("last release", if s.last_trim_at_ms == 0 { "never".into() } else { format!("{} ({})", ago(now, s.last_trim_at_ms), json::last_reason(s).unwrap_or("?")) }, "when, and why"),
            ("last duration", us(s.last_trim_us), "how long the last release ran"),
            ("last rss", if s.last_trim_at_ms == 0 { "-".into() } else { format!("{} -> {}", view::size(s.last_rss_before), view::size(s.last_rss_after)) }, "resident set before and after it"),
            ("longest", us(s.max_trim_us), "the longest a release ran"),
        ]),
        ("policy", vec![
            ("idle", if s.idle != 0 { "yes".into() } else { "no".into() }, "whether the policy sees the process as idle"),
            ("new retained", bytes(s.new_retained), "retained since the last release (resident growth live growth does not explain)"),
            ("min retained", bytes(s.min_retained), "retained bytes worth a release (MEMTRIM_MIN_RETAINED)"),
            ("frag threshold", if s.frag_threshold_permille == u64::MAX { "off".into() } else { format!("{:.1} %", s.frag_threshold_permille as f64 / 10.0) }, "fragmentation that triggers a release"),
            ("idle after", format!("{} ms", s.idle_ms), "quiet time that triggers a release (MEMTRIM_IDLE_MS)"),
            ("psi", if s.psi_armed != 0 { format!("armed, {} ms stall", s.psi_stall_ms) } else { "off".into() }, "memory-pressure trigger"),
            ("checks", s.policy_checks.to_string(), "samples the policy looked at"),
            ("held back", format!("{} small, {} back-off", s.skipped_small, s.skipped_backoff), "triggers not acted on, and why"),
        ]),
        ("python", vec![
            ("pymalloc", memtrim_common::page::py_state_name(s.py_state).into(), "CPython's small-object allocator: what memtrim can do with it"),
            ("arenas", if s.py_measured_at_ms == 0 { "-".into() } else { format!("{}, {} resident ({})", s.py_arenas, bytes(s.py_arena_bytes), ago(now, s.py_measured_at_ms)) }, "object arenas at the last walk"),
            ("objects", format!("{} in {} pools, {} free in them", bytes(s.py_allocated_bytes), s.py_used_pools, bytes(s.py_free_bytes)), "allocated blocks, pools in use"),
            ("empty pools", format!("{} resident ({} pools), {} given back", bytes(s.py_empty_bytes), s.py_empty_pools, s.py_returned_pools), "what the next release gives back"),
            ("released", format!("{} ({} pools)", bytes(s.py_released_bytes), s.py_released_pools), "empty pools' pages given back so far"),
            ("lock held", format!("{} last, {} longest, {} steps", us(s.py_last_hold_us), us(s.py_max_hold_us), s.py_steps), "time a step held the interpreter lock"),
        ]),
        ("limits", vec![
            ("soft limit", limit, "MEMTRIM_LIMIT: metric, bound, last value"),
            ("strikes", format!("{} now, {} in all, {} signals", s.limit_strikes, s.limit_violations, s.limit_signals), "samples over the limit"),
            ("cgroup limit", if s.cgroup_limit_bytes == 0 { "none".into() } else { bytes(s.cgroup_limit_bytes) }, "memory limit of the process's cgroup"),
            ("hard limit", if s.hard_limit == 0 { "none".into() } else { format!("{}, {} refused", bytes(s.hard_limit), s.refused_allocs) }, "MEMTRIM_HARD_LIMIT, allocations it failed"),
        ]),
        ("worker", vec![
            ("samples", s.samples.to_string(), "publications so far"),
            ("interval", format!("{} ms", s.interval_ms), "sampling period (MEMTRIM_INTERVAL_MS)"),
            ("smaps interval", format!("{} ms", s.smaps_interval_ms), "PSS/USS/swap period (MEMTRIM_SMAPS_INTERVAL_MS)"),
            ("sample cost", us(s.sample_cost_us), "what the last sample cost the worker"),
            ("worker cpu", format!("{}{cpu_share}", us(s.worker_cpu_us)), "CPU time of the worker thread so far"),
            ("page", e.path.display().to_string(), "this process's stats page"),
        ]),
    ];
    let mut sections = sections;
    sections.retain(|(title, _)| *title != "python" || s.py_state != 0);
    let rows = sections.iter().flat_map(|(_, r)| r.iter());
    let w0 = rows.clone().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.map(|r| r.1.chars().count()).max().unwrap_or(0).min(30);
    let mut out = format!("memtrim stat {} ({})", s.pid, pages::printable(&s.comm_str()));
    for (title, rows) in &sections {
        out.push_str(&format!("\n{title}"));
        for (name, value, meaning) in rows {
            let pad0 = w0 - name.chars().count();
            let pad1 = w1.saturating_sub(value.chars().count());
            out.push_str(&format!("\n  {name}{}  {value}{}  {meaning}", " ".repeat(pad0), " ".repeat(pad1)));
        }
    }
    out
}
