//! The Prometheus text exposition (format 0.0.4) of every live page in a directory, for
//! `memtrim serve`: one family per field of the page's table (crates/common/src/stats.rs; HELP
//! and TYPE, then every process's sample), names and units after Prometheus conventions (base
//! units, `_bytes`, `_seconds`, `_total` on counters), labels `pid, ppid, comm, allocator` on
//! every per-process series, then the exporter's own figures (`memtrim_exporter_*`). Metric and
//! label names are a contract as the JSON field names are: add freely, never rename.
//!
//! Reading is done here rather than with `pages::scan` so that a page that vanishes between
//! the directory listing and its reading (its process exited mid-scrape) counts as gone, not as
//! an I/O error, and so that every skip is counted by reason.
use crate::pages::{self, Entry, Skip, State};
use memtrim_common::fields::{Field, Kind, Metric as Family, Unit};
use memtrim_common::limit::Metric;
use memtrim_common::page::{FIELDS, LAYOUT_VERSION, Stats};
use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// The `reason` label of `memtrim_exporter_pages_skipped_total`, indexed by [`skip_index`].
pub const SKIP_REASONS: [&str; 9] = [
    "gone",         // the process exited (or exits during the scrape) without removing its page
    "abandoned",    // the process exec'd a program without the library
    "other_user",   // another user's page (only root reads everyone's)
    "not_regular",  // a symlink or other non-regular file with a page's name
    "other_layout", // written by a memtrim with another page layout version
    "starting",     // created, not yet published
    "torn",         // no consistent snapshot (seqlock never settled, or check word wrong)
    "corrupt",      // wrong size, magic, or a pid/start that disagrees with the name
    "io",           // any other error reading it
];

pub fn skip_index(s: &Skip) -> usize {
    match s {
        Skip::Gone => 0,
        Skip::Abandoned => 1,
        Skip::OtherUser(_) | Skip::PermissionDenied => 2,
        Skip::NotRegular => 3,
        Skip::OtherLayout(_) => 4,
        Skip::Starting => 5,
        Skip::Torn => 6,
        Skip::Corrupt(_) | Skip::BadDir(_) => 7,
        Skip::Io(_) => 8,
    }
}

/// One reading of the page directory.
pub struct Scan {
    /// Live processes, one per pid.
    pub entries: Vec<Entry>,
    /// Page-named files looked at.
    pub scanned: u64,
    /// Skipped pages by [`SKIP_REASONS`] index.
    pub skipped: [u64; SKIP_REASONS.len()],
    /// Why the directory could not be listed.
    pub dir_error: Option<String>,
}

/// Reads every page in `dir`. Never fails: an unreadable directory is reported in `dir_error`.
pub fn scan(dir: &Path) -> Scan {
    let mut scan = Scan { entries: Vec::new(), scanned: 0, skipped: [0; SKIP_REASONS.len()], dir_error: None };
    let cands = match pages::candidates(dir) {
        Ok(c) => c,
        Err(e) => {
            scan.dir_error = Some(format!("cannot read {}: {e}", dir.display()));
            return scan;
        }
    };
    for (path, pid, start) in cands {
        scan.scanned += 1;
        match pages::load(&path, pid, start, false) {
            Ok(e) if e.state == State::Live => {
                // A pid has at most one live page (start ticks tell reuses apart); keep one
                // series per pid whatever happens.
                match scan.entries.last() {
                    Some(last) if last.stats.pid == e.stats.pid => scan.skipped[7] += 1,
                    _ => scan.entries.push(e),
                }
            }
            Ok(_) => scan.skipped[0] += 1,
            // The page went away between the listing and the reading: its process exited.
            Err(Skip::Io(_)) if !pages::is_live(pid, start) || std::fs::symlink_metadata(&path).is_err() => scan.skipped[0] += 1,
            Err(s) => scan.skipped[skip_index(&s)] += 1,
        }
    }
    scan
}

/// What the exporter counts over its life (one scrape for `--once`).
#[derive(Default)]
pub struct Counters {
    pub scrapes: AtomicU64,
    pub scanned: AtomicU64,
    pub skipped: [AtomicU64; SKIP_REASONS.len()],
    /// Connections refused because --max-connections were open.
    pub rejected: AtomicU64,
    /// Connections closed because the request did not arrive within --timeout.
    pub timeouts: AtomicU64,
    /// Requests answered, by [`HTTP_CODES`] index.
    pub http: [AtomicU64; HTTP_CODES.len()],
}

/// The status codes `memtrim serve` answers with.
pub const HTTP_CODES: [u16; 7] = [200, 400, 404, 405, 408, 431, 503];

impl Counters {
    pub fn count_http(&self, code: u16) {
        if let Some(i) = HTTP_CODES.iter().position(|&c| c == code) {
            self.http[i].fetch_add(1, Relaxed);
        }
    }
}

/// A sample's value.
enum V {
    U(u64),
    /// Microseconds, shown as seconds.
    Us(u64),
    /// Milliseconds, shown as seconds.
    Ms(u64),
    F(f64),
}

impl V {
    fn write(&self, out: &mut String) {
        let _ = match *self {
            V::U(n) => write!(out, "{n}"),
            V::Us(us) => write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000),
            V::Ms(ms) => write!(out, "{}.{:03}", ms / 1000, ms % 1000),
            V::F(f) if f.is_nan() => write!(out, "NaN"),
            V::F(f) if f.is_infinite() => write!(out, "{}Inf", if f > 0.0 { "+" } else { "-" }),
            V::F(f) => write!(out, "{f}"),
        };
    }
}

/// A label value with `\`, `"` and newline escaped, as the text format wants.
pub fn escape_label(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text: `\` and newline escaped.
fn escape_help(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(help, out);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// `name{labels[,extra]} value\n`; `labels` and `extra` are already escaped, either may be empty.
fn sample(out: &mut String, name: &str, labels: &str, extra: &str, v: V) {
    out.push_str(name);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        out.push_str(labels);
        if !labels.is_empty() && !extra.is_empty() {
            out.push(',');
        }
        out.push_str(extra);
        out.push('}');
    }
    out.push(' ');
    v.write(out);
    out.push('\n');
}

/// A field's family name: the one the table gives, else `memtrim_` and the field's name with
/// its unit in base units (`_bytes`, `_seconds`, `_timestamp_seconds`, `_ratio`) and `_total`
/// on counters. None for what is a label rather than a figure.
pub fn family(f: &Field) -> Option<String> {
    let (strip, unit): (&[&str], &str) = match f.unit {
        Unit::Us => (&["_us"], "_seconds"),
        Unit::Ms => (&["_ms"], "_seconds"),
        Unit::UnixMs => (&["_at_ms", "_ms"], "_timestamp_seconds"),
        Unit::Bytes => (&["_bytes"], "_bytes"),
        Unit::Permille => (&["_permille"], "_ratio"),
        Unit::None | Unit::Count | Unit::PerSec => (&[], ""),
    };
    let base = strip.iter().find_map(|x| f.name.strip_suffix(x)).unwrap_or(f.name);
    let total = if matches!(f.kind, Kind::Counter | Kind::Counters(..)) { "_total" } else { "" };
    match (f.metric, f.kind) {
        (Family::None, _) | (_, Kind::Check | Kind::Id) => None,
        (Family::Named(name), _) => Some(name.to_string()),
        (Family::Derived, _) => Some(format!("memtrim_{base}{unit}{total}")),
    }
}

/// A field's samples for one process, by its kind and unit: (extra labels, value); none where
/// the field does not apply (`when`) or its label has no value. A state is one sample of 1
/// labelled with its name; per-label counters one sample per label.
fn samples(f: &Field, s: &Stats) -> Vec<(String, V)> {
    if !f.applies(s) {
        return Vec::new();
    }
    let n = f.number(s);
    let mut extra = String::new();
    if let Some((label, value)) = f.label {
        let Some(v) = value(s) else { return Vec::new() };
        extra = format!("{label}=\"");
        escape_label(v, &mut extra);
        extra.push('"');
    }
    let v = match (f.kind, f.unit) {
        (Kind::Counters(label, names), _) => return names.iter().zip(f.numbers(s)).map(|(k, n)| (format!("{label}=\"{k}\""), V::U(n))).collect(),
        (Kind::State(_), _) => {
            let Some(name) = f.state(s) else { return Vec::new() };
            extra = format!("{}=\"", f.name);
            escape_label(name, &mut extra);
            extra.push('"');
            V::U(1)
        }
        (_, Unit::Us) => V::Us(n),
        (_, Unit::Ms | Unit::UnixMs) => V::Ms(n),
        (_, Unit::Permille) => V::F(n as f64 / 1000.0),
        _ => V::U(n),
    };
    vec![(extra, v)]
}

/// Boot time (unix seconds) and clock ticks per second, to turn start ticks into a time.
fn boot_time() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some((btime, hz as u64))
}

/// The exposition text for `scan`. `started` is when the scrape began (its duration is the last
/// figure); the counters must already include this scrape.
pub fn render(scan: &Scan, counters: &Counters, started: Instant, serving: bool) -> String {
    let mut out = String::with_capacity(4096 + scan.entries.len() * 4096);
    let labels: Vec<String> = scan
        .entries
        .iter()
        .map(|e| {
            let s = &e.stats;
            let mut l = String::with_capacity(96);
            let _ = write!(l, "pid=\"{}\",ppid=\"{}\",comm=\"", s.pid, s.ppid);
            escape_label(&s.comm_str(), &mut l);
            l.push_str("\",allocator=\"");
            escape_label(s.allocator_name(), &mut l);
            l.push('"');
            l
        })
        .collect();
    let each = |out: &mut String, name: &str, f: &dyn Fn(&Stats) -> Option<(String, V)>| {
        for (e, l) in scan.entries.iter().zip(&labels) {
            if let Some((extra, v)) = f(&e.stats) {
                sample(out, name, l, &extra, v);
            }
        }
    };

    header(&mut out, "memtrim_info", "gauge", "1 for every process whose memtrim page is read; labels describe it (join on pid).");
    each(&mut out, "memtrim_info", &|s| {
        let mut extra = format!("uid=\"{}\",limit_metric=\"", s.uid);
        escape_label(Metric::from_code(s.limit_metric).map_or("", |m| m.name()), &mut extra);
        extra.push('"');
        Some((extra, V::U(1)))
    });
    for f in FIELDS {
        let Some(name) = family(f) else { continue };
        header(&mut out, &name, if matches!(f.kind, Kind::Counter | Kind::Counters(..)) { "counter" } else { "gauge" }, f.help);
        for (e, l) in scan.entries.iter().zip(&labels) {
            for (extra, v) in samples(f, &e.stats) {
                sample(&mut out, &name, l, &extra, v);
            }
        }
    }
    let boot = boot_time();
    header(&mut out, "memtrim_process_start_time_seconds", "gauge", "Start time of the process, unix seconds.");
    if let Some((btime, hz)) = boot {
        each(&mut out, "memtrim_process_start_time_seconds", &|s| {
            let cs = s.start_ticks % hz * 100 / hz;
            Some((String::new(), V::F(btime as f64 + (s.start_ticks / hz) as f64 + cs as f64 / 100.0)))
        });
    }

    // The exporter's own figures.
    let c = counters;
    header(&mut out, "memtrim_exporter_build_info", "gauge", "1; the memtrim version and the page layout version it reads.");
    sample(&mut out, "memtrim_exporter_build_info", "", &format!("version=\"{}\",layout_version=\"{LAYOUT_VERSION}\"", env!("CARGO_PKG_VERSION")), V::U(1));
    header(&mut out, "memtrim_exporter_scrapes_total", "counter", "Scans of the page directory (one per /metrics request).");
    sample(&mut out, "memtrim_exporter_scrapes_total", "", "", V::U(c.scrapes.load(Relaxed)));
    header(&mut out, "memtrim_exporter_pages_scanned_total", "counter", "Page files looked at, over all scrapes.");
    sample(&mut out, "memtrim_exporter_pages_scanned_total", "", "", V::U(c.scanned.load(Relaxed)));
    header(
        &mut out,
        "memtrim_exporter_pages_skipped_total",
        "counter",
        "Page files not exported, over all scrapes, by reason (gone, abandoned, other_user, not_regular, other_layout, starting, torn, corrupt, io).",
    );
    for (i, r) in SKIP_REASONS.iter().enumerate() {
        sample(&mut out, "memtrim_exporter_pages_skipped_total", "", &format!("reason=\"{r}\""), V::U(c.skipped[i].load(Relaxed)));
    }
    header(&mut out, "memtrim_exporter_pages", "gauge", "Page files in this scrape, by result: exported or the reason they were skipped.");
    sample(&mut out, "memtrim_exporter_pages", "", "result=\"exported\"", V::U(scan.entries.len() as u64));
    for (i, r) in SKIP_REASONS.iter().enumerate() {
        sample(&mut out, "memtrim_exporter_pages", "", &format!("result=\"{r}\""), V::U(scan.skipped[i]));
    }
    header(&mut out, "memtrim_exporter_directory_readable", "gauge", "1 if the page directory could be listed in this scrape, else 0.");
    sample(&mut out, "memtrim_exporter_directory_readable", "", "", V::U(scan.dir_error.is_none() as u64));
    if serving {
        http_figures(&mut out, c);
    }
    header(&mut out, "memtrim_exporter_scrape_duration_seconds", "gauge", "Time this scrape took to read every page and render this text.");
    sample(&mut out, "memtrim_exporter_scrape_duration_seconds", "", "", V::Us(started.elapsed().as_micros() as u64));
    out
}

/// The HTTP server's figures (not in `--once` output).
fn http_figures(out: &mut String, c: &Counters) {
    header(out, "memtrim_exporter_http_responses_total", "counter", "HTTP responses sent, by status code.");
    for (i, code) in HTTP_CODES.iter().enumerate() {
        sample(out, "memtrim_exporter_http_responses_total", "", &format!("code=\"{code}\""), V::U(c.http[i].load(Relaxed)));
    }
    header(out, "memtrim_exporter_connections_rejected_total", "counter", "Connections refused (503) because --max-connections were open.");
    sample(out, "memtrim_exporter_connections_rejected_total", "", "", V::U(c.rejected.load(Relaxed)));
    header(out, "memtrim_exporter_request_timeouts_total", "counter", "Connections closed because no complete request arrived within --timeout.");
    sample(out, "memtrim_exporter_request_timeouts_total", "", "", V::U(c.timeouts.load(Relaxed)));
}

/// Scans `dir`, adds the scan to `counters` and renders the text.
pub fn scrape(dir: &Path, counters: &Counters, serving: bool) -> (String, Option<String>) {
    let started = Instant::now();
    let s = scan(dir);
    counters.scrapes.fetch_add(1, Relaxed);
    counters.scanned.fetch_add(s.scanned, Relaxed);
    for (i, n) in s.skipped.iter().enumerate() {
        counters.skipped[i].fetch_add(*n, Relaxed);
    }
    let text = render(&s, counters, started, serving);
    (text, s.dir_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrim_common::page::Reason;
    use std::path::PathBuf;

    /// The families of the metrics memtrim has exported so far: a contract.
    const CONTRACT: &[&str] = &[
        "memtrim_info",
        "memtrim_live_bytes",
        "memtrim_peak_live_bytes",
        "memtrim_heap_bytes",
        "memtrim_retained_bytes",
        "memtrim_rss_bytes",
        "memtrim_pss_bytes",
        "memtrim_uss_bytes",
        "memtrim_swap_bytes",
        "memtrim_allocations_total",
        "memtrim_frees_total",
        "memtrim_released_bytes_total",
        "memtrim_release_duration_seconds",
        "memtrim_release_max_duration_seconds",
        "memtrim_last_release_timestamp_seconds",
        "memtrim_limit_violations_total",
        "memtrim_limit_signals_total",
        "memtrim_hard_limit_bytes",
        "memtrim_refused_allocations_total",
        "memtrim_python_arena_bytes",
        "memtrim_python_allocated_bytes",
        "memtrim_python_empty_pool_bytes",
        "memtrim_python_released_bytes_total",
        "memtrim_python_released_pools_total",
        "memtrim_python_lock_hold_max_seconds",
        "memtrim_cgroup_limit_bytes",
        "memtrim_worker_cpu_seconds_total",
        "memtrim_last_update_timestamp_seconds",
        "memtrim_releases_total",
        "memtrim_limit_bytes",
        "memtrim_process_start_time_seconds",
    ];

    #[test]
    fn every_family_of_the_contract_is_there_once() {
        let names: Vec<String> = FIELDS.iter().filter_map(family).collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "two fields make the same family: {names:?}");
        for n in &names {
            assert!(n.starts_with("memtrim_") && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{n}");
        }
        let t = render(&Scan { entries: vec![], scanned: 0, skipped: [0; 9], dir_error: None }, &Counters::default(), Instant::now(), false);
        for c in CONTRACT {
            assert!(t.contains(&format!("# TYPE {c} ")), "{c} is gone");
        }
    }

    #[test]
    fn samples_follow_kind_unit_and_when() {
        let mut s = Stats { limit_metric: Metric::Uss as u64, limit_bytes: 10, py_state: 1, frag_threshold_permille: 250, ..Default::default() };
        let f = |n: &str| FIELDS.iter().find(|f| f.name == n).unwrap();
        let one = |n: &str, s: &Stats| {
            samples(f(n), s)
                .into_iter()
                .map(|(l, v)| {
                    let mut o = l;
                    o.push(' ');
                    v.write(&mut o);
                    o
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(one("limit_bytes", &s), vec!["metric=\"uss\" 10"]);
        assert_eq!(one("py_state", &s), vec!["py_state=\"active\" 1"]);
        assert_eq!(one("frag_threshold_permille", &s), vec![" 0.25"]);
        assert!(one("pss_bytes", &s).is_empty(), "no PSS before the first smaps read");
        s.limit_metric = 0;
        assert!(one("limit_bytes", &s).is_empty(), "no limit, no sample");
    }

    fn entry(pid: u32, comm: &[u8]) -> Entry {
        let mut s = Stats { pid, ppid: 1, live_bytes: 123, trims: 2, last_trim_us: 1_500, max_trim_us: 2_000_001, ..Default::default() };
        s.comm[..comm.len()].copy_from_slice(comm);
        s.releases_by_reason[Reason::Idle as usize] = 2;
        Entry { path: PathBuf::from("/x"), state: State::Live, stats: s }
    }

    #[test]
    fn labels_are_escaped_and_families_grouped() {
        let scan = Scan { entries: vec![entry(7, b"a\"b\\c\nd"), entry(9, b"gunicorn")], scanned: 3, skipped: [1, 0, 0, 0, 0, 0, 0, 0, 0], dir_error: None };
        let t = render(&scan, &Counters::default(), Instant::now(), true);
        assert!(t.contains("memtrim_live_bytes{pid=\"7\",ppid=\"1\",comm=\"a\\\"b\\\\c\\nd\",allocator=\"glibc\"} 123\n"), "{t}");
        assert!(t.contains("memtrim_releases_total{pid=\"9\",ppid=\"1\",comm=\"gunicorn\",allocator=\"glibc\",reason=\"idle\"} 2\n"));
        assert!(t.contains("memtrim_release_duration_seconds{pid=\"9\",ppid=\"1\",comm=\"gunicorn\",allocator=\"glibc\"} 0.001500\n"));
        assert!(t.contains("memtrim_release_max_duration_seconds{pid=\"9\",ppid=\"1\",comm=\"gunicorn\",allocator=\"glibc\"} 2.000001\n"));
        assert!(!t.contains("memtrim_pss_bytes{"), "no PSS before the first smaps read");
        assert!(t.contains("memtrim_exporter_pages{result=\"gone\"} 1\n"));
        // every sample follows its family's TYPE line, and each family appears once
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{l}");
            }
        }
    }
}
