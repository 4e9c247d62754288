//! `memtrim stat PID [--json] [--watch [SECS]] [--dir DIR]`: every field of one process's page,
//! with its unit and meaning.
use crate::cli::{self, PageDir};
use crate::output::print_or_quiet;
use crate::pages::{self, Entry};
use crate::{json, view};
use memtrim_common::fields::{Field, Kind, Type, Unit};
use memtrim_common::page::{FIELDS, Stats};
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
    // given elsewhere. A value attached to it (`--watch=2`, `-w2`) is always SECS.
    let (pid, watch) = match (o.pid, o.watch) {
        (None, Some(Some(p))) if !watch_value_attached(std::env::args_os().map(|a| a.to_string_lossy().into_owned())) => {
            (p.parse().ok().filter(|&p| p > 0).unwrap_or_else(|| cli::usage_error("stat", format!("{p:?} is not a pid"))), Some(None))
        }
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
    // SAFETY: isatty only looks the descriptor up.
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

/// Whether the command line attaches a value to --watch (`--watch=SECS`, `-wSECS`, `-w=SECS`),
/// which clap does not tell apart from `--watch SECS`.
fn watch_value_attached(args: impl Iterator<Item = String>) -> bool {
    args.skip(1).take_while(|a| a != "--").any(|a| a.starts_with("--watch=") || (a.starts_with("-w") && a.len() > 2))
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
    if v < 1000 { format!("{v} µs") } else { format!("{} ms", json::ms_from_us(v)) }
}

fn bytes(v: u64) -> String {
    if v < 1024 { format!("{v} B") } else { format!("{} ({v} B)", view::size(v)) }
}

fn ago(now: u64, at: u64) -> String {
    if at == 0 { "never".into() } else { format!("{} ago", human_ms(now.saturating_sub(at))) }
}

/// A field's value as `stat` shows it, by its kind and unit: `-` where it does not apply.
fn value(f: &Field, s: &Stats, now: u64) -> String {
    let n = f.number(s);
    match (f.kind, f.ty, f.unit) {
        (_, Type::Text(_), _) => pages::printable(&f.text(s)),
        (Kind::Counters(_, names), ..) => {
            let parts: Vec<String> = names.iter().zip(f.numbers(s)).filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            if parts.is_empty() { "-".into() } else { parts.join(", ") }
        }
        _ if !f.applies(s) => "-".into(),
        (Kind::State(_), ..) => f.state(s).unwrap_or("?").into(),
        (Kind::Flag, ..) => (if n != 0 { "yes" } else { "no" }).into(),
        (_, _, Unit::Bytes) => bytes(n),
        (_, _, Unit::Us) => us(n),
        (_, _, Unit::Ms) => format!("{n} ms"),
        (_, _, Unit::UnixMs) => ago(now, n),
        (_, _, Unit::PerSec) => format!("{n}/s"),
        (_, _, Unit::Permille) => format!("{:.1} %", n as f64 / 10.0),
        _ => n.to_string(),
    }
}

type Row = (&'static str, String, &'static str);

/// What `stat` adds to the page's fields: (section, name, value, meaning).
fn derived(e: &Entry) -> Vec<(&'static str, Row)> {
    let s = &e.stats;
    let running = uptime_ms().map(|up| up.saturating_sub(s.start_ticks * 1000 / clock_ticks()));
    let cpu_share = match running {
        Some(r) if r > 0 => format!("{:.4} % of a core", s.worker_cpu_us as f64 / 10.0 / r as f64),
        _ => "-".into(),
    };
    vec![
        ("process", ("running", running.map_or("?".into(), human_ms), "Time since the process started.")),
        ("memory", ("fragmentation", if s.heap_bytes == 0 { "-".into() } else { format!("{:.1} %", s.frag_ratio() * 100.0) }, "retained / heap.")),
        ("allocations", ("live_blocks", s.allocs.saturating_sub(s.frees).to_string(), "allocs - frees.")),
        ("worker", ("worker_cpu_share", cpu_share, "The worker thread's CPU time over the process's running time.")),
        ("worker", ("page", e.path.display().to_string(), "This process's stats page.")),
    ]
}

/// The page as text: a title line, then every field of the page's table by section, one line
/// each: its JSON name, value and meaning; then what `stat` adds.
pub fn describe(e: &Entry) -> String {
    let s: &Stats = &e.stats;
    let now = pages::now_ms();
    let mut sections: Vec<(&str, Vec<Row>)> = Vec::new();
    let fields = FIELDS.iter().filter(|f| !matches!(f.kind, Kind::Check)).map(|f| (f.section, (f.json, value(f, s, now), f.help)));
    for (section, row) in fields.chain(derived(e)) {
        match sections.iter_mut().find(|(t, _)| *t == section) {
            Some((_, rows)) => rows.push(row),
            None => sections.push((section, vec![row])),
        }
    }
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
