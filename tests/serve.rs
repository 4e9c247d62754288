//! `memtrim serve`: the Prometheus exposition of real processes under libmemtrim.so, checked by
//! `promtool check metrics`, scraped by a real Prometheus and read back through PromQL; skipped
//! pages counted by reason; silent, slow and vanishing clients; processes exiting mid-scrape;
//! the deploy/ files (scrape config, rules, Grafana dashboard queries). Each test has its own
//! MEMTRIM_SHM_DIR.
//!
//! Build first: `cargo build --release && cargo test --release --test serve`.
//! Tools: python3, promtool and prometheus (Debian's `prometheus` package); each test that needs
//! one is skipped with a message when it is missing, and fails on CI (CI=true).

mod common;

use common::{
    JsonExt, Proc, TempDir, free_port, memtrim, now_ms, plant_page, python, require_tool, root, show, sleeper, start_ticks, stat_json, text, under_library,
    wait_for,
};
use memtrim_common::page::Stats;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: f64 = (1u64 << 20) as f64;

// ---------------------------------------------------------------------------------------------
// Directories, processes, pages.

/// `c` under the library, writing its page into `dir`, sampling every 100 ms, on the backend
/// under test, with no other MEMTRIM_ setting of the test's environment.
fn on_backend<'a>(c: &'a mut Command, dir: &Path) -> &'a mut Command {
    under_library(c, dir, 100).env("MEMTRIM_ALLOCATOR", common::allocator())
}

/// A Python process under the library holding `mib` MiB (zeroed bytearray), idle after it says
/// `ready`. `env` adds variables.
fn python_holding(dir: &Path, mib: u32, env: &[(&str, &str)]) -> Option<Proc> {
    let py = python()?;
    let mut c = Command::new(py);
    c.args(["-c", &format!("import sys, time\nb = bytearray({mib} << 20)\nprint('ready', flush=True)\ntime.sleep(600)\n")]);
    on_backend(&mut c, dir);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python3 starts");
    let out = child.stdout.take().unwrap();
    let p = Proc(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the python host did not start");
    Some(p)
}

/// `sleep 600` under the library.
fn sleeper_under_library(dir: &Path) -> Proc {
    let mut c = Command::new(common::idle_sleep());
    c.arg("600");
    on_backend(&mut c, dir);
    Proc(c.stdin(Stdio::null()).spawn().expect("sleep starts"))
}

/// Page files in `dir` for these pids.
fn count_pages(dir: &Path, pids: &HashSet<u32>) -> usize {
    common::page_files(dir).iter().filter(|(_, pid, _)| pids.contains(pid)).count()
}

/// live_bytes of `pid` as `memtrim stat --json` shows it.
fn page_live_bytes(dir: &Path, pid: u32) -> u64 {
    stat_json(dir, pid).unwrap_or_else(|e| panic!("{e}")).int("live_bytes") as u64
}

// ---------------------------------------------------------------------------------------------
// memtrim serve and a small HTTP client.

/// `memtrim serve` on a free loopback port; killed at the end.
struct Serve {
    proc: Proc,
    port: u16,
}

impl Serve {
    fn start(dir: &Path, extra: &[&str]) -> Serve {
        let mut c = Command::new(common::cli());
        c.args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(extra)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("memtrim serve starts");
        let err = child.stderr.take().unwrap();
        let proc = Proc(child);
        let mut lines = BufReader::new(err).lines();
        let first = loop {
            let l = lines.next().expect("memtrim serve says where it listens").unwrap();
            if l.contains("listening on") {
                break l;
            }
            eprintln!("[memtrim serve] {l}");
        };
        // keep draining its stderr (to ours) so that it never blocks on a full pipe
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("[memtrim serve] {l}");
            }
        });
        let port = first
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        Serve { proc, port }
    }

    fn get(&self, path: &str) -> Response {
        http(self.port, "GET", path, Duration::from_secs(10)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn metrics(&self) -> Exposition {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")), "{:?}", r.headers);
        Exposition::parse(&r.body).unwrap_or_else(|e| panic!("bad exposition ({e}):\n{}", r.body))
    }

    fn alive(&mut self) -> bool {
        self.proc.0.try_wait().unwrap().is_none()
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` on a fresh connection and reads the response to its end.
fn exchange(port: u16, raw: &[u8], timeout: Duration) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.write_all(raw).map_err(|e| e.to_string())?;
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> Result<Response, String> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("reading the response: {e}"))?;
    let t = String::from_utf8(buf).map_err(|e| e.to_string())?;
    let (head, body) = t.split_once("\r\n\r\n").ok_or_else(|| format!("no end of head in {t:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let r = Response { status, headers, body: body.to_string() };
    // (a response to HEAD has the length of the body it does not send)
    if let Some(len) = r.header("content-length").filter(|_| !r.body.is_empty() || r.status != 200) {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        if len != r.body.len() {
            return Err(format!("content-length {len}, body {} bytes", r.body.len()));
        }
    }
    Ok(r)
}

fn http(port: u16, method: &str, path: &str, timeout: Duration) -> Result<Response, String> {
    exchange(port, format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: memtrim-test\r\nConnection: close\r\n\r\n").as_bytes(), timeout)
}

// ---------------------------------------------------------------------------------------------
// The text exposition format, read strictly.

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Exposition {
    samples: Vec<Sample>,
    /// family name -> (type, help)
    families: BTreeMap<String, (String, String)>,
}

impl Exposition {
    /// Checks what Prometheus's parser and conventions need: HELP and TYPE before a family's
    /// samples, each family in one block, no series twice, counters named *_total, label values
    /// properly escaped.
    fn parse(t: &str) -> Result<Exposition, String> {
        let mut samples = Vec::new();
        let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut help: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut closed: HashSet<String> = HashSet::new();
        let mut series: HashSet<String> = HashSet::new();
        if !t.ends_with('\n') {
            return Err("no final newline".into());
        }
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, h) = rest.split_once(' ').ok_or("HELP without text")?;
                help.insert(name.to_string(), h.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').ok_or("TYPE without type")?;
                if !matches!(ty, "counter" | "gauge" | "summary" | "histogram" | "untyped") {
                    return Err(format!("type {ty}"));
                }
                if families.contains_key(name) {
                    return Err(format!("family {name} declared twice"));
                }
                if ty == "counter" && !name.ends_with("_total") {
                    return Err(format!("counter {name} not named *_total"));
                }
                let h = help.get(name).ok_or_else(|| format!("no HELP before TYPE of {name}"))?;
                families.insert(name.to_string(), (ty.to_string(), h.clone()));
                if let Some(c) = current.replace(name.to_string()) {
                    closed.insert(c);
                }
            } else if line.starts_with('#') || line.is_empty() {
                return Err(format!("unexpected line {line:?}"));
            } else {
                let s = sample_line(line)?;
                if current.as_deref() != Some(s.name.as_str()) {
                    return Err(format!("sample {line:?} outside its family's block (TYPE {:?})", current));
                }
                if closed.contains(&s.name) {
                    return Err(format!("family {} split", s.name));
                }
                let key = format!("{}{:?}", s.name, s.labels);
                if !series.insert(key) {
                    return Err(format!("series twice: {line:?}"));
                }
                samples.push(s);
            }
        }
        Ok(Exposition { samples, families })
    }

    fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name && want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))).collect()
    }

    /// The one sample of `name` with these labels.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let v = self.find(name, want);
        assert_eq!(v.len(), 1, "{name}{want:?}: {} samples", v.len());
        v[0].value
    }

    fn pids(&self) -> HashSet<u32> {
        self.find("memtrim_live_bytes", &[]).iter().map(|s| s.labels["pid"].parse().unwrap()).collect()
    }
}

fn sample_line(line: &str) -> Result<Sample, String> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    let name = line[..i].to_string();
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("bad metric name in {line:?}"));
    }
    let mut labels = BTreeMap::new();
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let key = line[start..i].to_string();
            if key.is_empty() || b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"') {
                return Err(format!("bad label at byte {i} of {line:?}"));
            }
            i += 2;
            let mut val = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        match b.get(i + 1) {
                            Some(b'\\') => val.push(b'\\'),
                            Some(b'"') => val.push(b'"'),
                            Some(b'n') => val.push(b'\n'),
                            _ => return Err(format!("bad escape in {line:?}")),
                        }
                        i += 2;
                    }
                    Some(&c) => {
                        val.push(c);
                        i += 1;
                    }
                }
            }
            i += 1;
            if labels.insert(key.clone(), String::from_utf8(val).map_err(|e| e.to_string())?).is_some() {
                return Err(format!("label {key} twice in {line:?}"));
            }
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected , or }} at byte {i} of {line:?}")),
            }
        }
    }
    let rest = line[i..].strip_prefix(' ').ok_or_else(|| format!("no value in {line:?}"))?;
    let value = match rest {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?} in {line:?}"))?,
    };
    Ok(Sample { name, labels, value })
}

/// `promtool check metrics` on `t`: it must pass with nothing to say.
fn promtool_check_metrics(t: &str) {
    let mut c =
        Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("promtool runs");
    c.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(), "promtool check metrics:\n{}\n--- input\n{t}", show(&o));
}

const PER_PROCESS: &[&str] = &[
    "memtrim_info",
    "memtrim_live_bytes",
    "memtrim_peak_live_bytes",
    "memtrim_heap_bytes",
    "memtrim_retained_bytes",
    "memtrim_rss_bytes",
    "memtrim_allocations_total",
    "memtrim_frees_total",
    "memtrim_releases_total",
    "memtrim_released_bytes_total",
    "memtrim_limit_violations_total",
    "memtrim_limit_signals_total",
    "memtrim_refused_allocations_total",
    "memtrim_last_update_timestamp_seconds",
];

// ---------------------------------------------------------------------------------------------
// Tests.

/// Two real processes and a crafted page with a hostile name: `promtool check metrics` passes
/// on the text, every per-process series carries pid, ppid, comm and allocator, the name
/// survives escaping exactly, the figures are the page's. `--once FILE` writes the same text
/// atomically (0644, no temporary file left, an unwritable target leaves the old file alone).
#[test]
fn exposition_passes_promtool_and_carries_the_pages() {
    if !require_tool("promtool") {
        return;
    }
    let dir = TempDir::new("promtool");
    let Some(py) = python_holding(dir.path(), 50, &[("MEMTRIM_LIMIT", "rss:1GiB"), ("MEMTRIM_HARD_LIMIT", "4GiB")]) else { return };
    let sl = sleeper_under_library(dir.path());
    // The comm in the labels is the kernel's: the process runs under the hostile name.
    let hostile: &[u8] = "q\"b\\c\nd é}{=,".as_bytes();
    let odd = common::sleeper_named(hostile);
    plant_page(dir.path(), odd.pid(), start_ticks(odd.pid()), b"claimed", |_| {});
    let want: HashSet<u32> = [py.pid(), sl.pid(), odd.pid()].into();
    let ex = wait_for("the three processes and python's 50 MiB in the output", Duration::from_secs(20), || {
        let o = memtrim(dir.path(), &["serve", "--once", "-"]);
        if !o.status.success() {
            return Err(show(&o));
        }
        let t = text(&o.stdout);
        let ex = Exposition::parse(&t).map_err(|e| format!("{e}\n{t}"))?;
        let live = ex.find("memtrim_live_bytes", &[("pid", &py.pid().to_string())]).first().map_or(0.0, |s| s.value);
        if ex.pids() == want && live >= 50.0 * MIB && !ex.find("memtrim_pss_bytes", &[("pid", &py.pid().to_string())]).is_empty() {
            Ok((t, ex))
        } else {
            Err(format!("pids {:?}, python live {live}", ex.pids()))
        }
    });
    let (t, ex) = ex;
    promtool_check_metrics(&t);

    for name in PER_PROCESS {
        assert!(ex.families.contains_key(*name), "family {name} missing");
        for pid in &want {
            assert!(!ex.find(name, &[("pid", &pid.to_string())]).is_empty(), "{name} has no sample for pid {pid}");
        }
    }
    for s in ex.samples.iter().filter(|s| !s.name.starts_with("memtrim_exporter_")) {
        for l in ["pid", "ppid", "comm", "allocator"] {
            assert!(s.labels.contains_key(l), "{} {:?} lacks label {l}", s.name, s.labels);
        }
    }
    for s in ex.samples.iter().filter(|s| s.name.starts_with("memtrim_exporter_")) {
        assert!(!s.labels.contains_key("pid"), "{s:?}");
    }
    let hostile_s = std::str::from_utf8(hostile).unwrap();
    let odd_pid = odd.pid().to_string();
    assert_eq!(ex.find("memtrim_live_bytes", &[("comm", hostile_s)]).len(), 1, "the hostile comm did not round-trip:\n{t}");
    assert_eq!(ex.value("memtrim_live_bytes", &[("pid", &odd_pid)]), 12345.0);
    assert_eq!(ex.value("memtrim_retained_bytes", &[("pid", &odd_pid)]), 7655.0);
    assert!(ex.find("memtrim_pss_bytes", &[("pid", &odd_pid)]).is_empty(), "no PSS before a smaps read");

    let pid = py.pid().to_string();
    let alloc = common::allocator();
    let info = ex.find("memtrim_info", &[("pid", &pid)]);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].value, 1.0);
    assert_eq!(info[0].labels["ppid"], std::process::id().to_string());
    assert!(info[0].labels["comm"].starts_with("python"), "{:?}", info[0].labels);
    assert_eq!(info[0].labels["allocator"], alloc);
    assert_eq!(info[0].labels["limit_metric"], "rss");
    assert_eq!(ex.value("memtrim_limit_bytes", &[("pid", &pid), ("metric", "rss")]), 1073741824.0);
    assert_eq!(ex.value("memtrim_hard_limit_bytes", &[("pid", &pid)]), 4.0 * 1073741824.0);
    let reasons: HashSet<&str> = ex.find("memtrim_releases_total", &[("pid", &pid)]).iter().map(|s| s.labels["reason"].as_str()).collect();
    assert_eq!(reasons, ["request", "api", "retained", "idle", "pressure", "limit"].into());
    let rss = ex.value("memtrim_rss_bytes", &[("pid", &pid)]);
    assert!(rss >= 50.0 * MIB, "rss {rss}");
    assert!(ex.value("memtrim_allocations_total", &[("pid", &pid)]) > 0.0);
    let start = ex.value("memtrim_process_start_time_seconds", &[("pid", &pid)]);
    let now = now_ms() as f64 / 1000.0;
    assert!(start > now - 120.0 && start <= now + 1.0, "start time {start}, now {now}");
    let upd = ex.value("memtrim_last_update_timestamp_seconds", &[("pid", &pid)]);
    assert!(upd > now - 10.0 && upd <= now + 1.0, "updated {upd}, now {now}");
    assert_eq!(ex.value("memtrim_exporter_pages", &[("result", "exported")]), 3.0);
    assert_eq!(ex.value("memtrim_exporter_pages_scanned_total", &[]), 3.0);
    assert!(ex.find("memtrim_exporter_http_responses_total", &[]).is_empty(), "no HTTP figures in --once output");

    // --once FILE: atomically, 0644 whatever the umask, replacing the old file.
    let out_dir = TempDir::new("textfile");
    let prom = out_dir.join("memtrim.prom");
    std::fs::write(&prom, "old\n").unwrap();
    let o = memtrim(dir.path(), &["serve", "--once", prom.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    let written = std::fs::read_to_string(&prom).unwrap();
    promtool_check_metrics(&written);
    assert_eq!(Exposition::parse(&written).unwrap().pids(), want);
    assert_eq!(std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777, 0o644);
    let left: Vec<String> = std::fs::read_dir(out_dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(left, vec!["memtrim.prom".to_string()], "a temporary file was left behind");
    // A target in a directory that does not exist: exit 1 and a message, nothing written.
    let o = memtrim(dir.path(), &["serve", "--once", out_dir.join("nope/memtrim.prom").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("nope"), "{}", show(&o));
    // A directory we cannot write into (as root, a read-only bind is not available: use a file
    // in place of the directory): the old file stays.
    let o = memtrim(dir.path(), &["serve", "--once", prom.join("x.prom").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(&prom).unwrap(), written);
    // Bad arguments.
    for args in [
        &["serve", "--bogus"][..],
        &["serve", "--listen"],
        &["serve", "--listen", "not-an-address"],
        &["serve", "--timeout", "0"],
        &["serve", "--max-connections", "0"],
    ] {
        let o = memtrim(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
    }
}

/// `--once FILE` as root writes nothing through what another user may have planted at FILE: a
/// symlink (to a root-only file) is refused and the file it points at stays as it was; a FIFO
/// (with a reader waiting) and a device are refused too. Each refusal is exit 1 and a message,
/// and leaves no temporary file.
#[test]
fn once_refuses_symlinks_fifos_and_devices() {
    let dir = TempDir::new("once-refuse");
    let out = TempDir::new("once-refuse-out");
    let secret = out.join("secret");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = out.join("memtrim.prom");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let o = memtrim(dir.path(), &["serve", "--once", link.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "a symlink at the target was not refused:\n{}", show(&o));
    assert!(text(&o.stderr).contains("symbolic link"), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only\n", "the file the symlink points at was written");
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600, "the file the symlink points at changed mode");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");

    let fifo = out.join("fifo.prom");
    let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    // a reader is there, so that a write into the FIFO would not block but go through
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let o = memtrim(dir.path(), &["serve", "--once", fifo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "a FIFO at the target was not refused:\n{}", show(&o));
    assert!(text(&o.stderr).contains("not a regular file"), "{}", show(&o));
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");

    let o = memtrim(dir.path(), &["serve", "--once", "/dev/null"]);
    assert_eq!(o.status.code(), Some(1), "a device at the target was not refused:\n{}", show(&o));
    assert!(text(&o.stderr).contains("not a regular file"), "{}", show(&o));
    assert!(std::fs::symlink_metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null was replaced");

    let mut left: Vec<String> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["fifo.prom", "memtrim.prom", "secret"], "a temporary file was left behind");
}

/// `--once FILE` over a regular file replaces it by rename (the old file, still reachable by a
/// hard link, keeps its text and mode); a missing FILE is created; both end 0644 and leave no
/// temporary file.
#[test]
fn once_replaces_a_regular_file_by_rename() {
    let dir = TempDir::new("once-replace");
    let out = TempDir::new("once-replace-out");
    let prom = out.join("memtrim.prom");
    let old = out.join("old");
    std::fs::write(&prom, "old\n").unwrap();
    std::fs::set_permissions(&prom, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&prom, &old).unwrap();
    let o = memtrim(dir.path(), &["serve", "--once", prom.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "old\n", "the old file was written in place");
    assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o600);
    Exposition::parse(&std::fs::read_to_string(&prom).unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777, 0o644);
    let new = out.join("new.prom");
    let o = memtrim(dir.path(), &["serve", "--once", new.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    Exposition::parse(&std::fs::read_to_string(&new).unwrap()).unwrap();
    let mut left: Vec<String> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["memtrim.prom", "new.prom", "old"], "a temporary file was left behind");
}

/// `--once FILE` with a name as long as a file name can be (255 bytes) is written, and leaves no
/// temporary file: the temporary name is no longer than the target's.
#[test]
fn once_writes_a_file_with_the_longest_name() {
    let dir = TempDir::new("once-long");
    let out = TempDir::new("once-long-out");
    let name = format!("{}.prom", "m".repeat(250));
    let prom = out.join(&name);
    let o = memtrim(dir.path(), &["serve", "--once", prom.to_str().unwrap()]);
    assert!(o.status.success(), "a 255-byte file name was not written:\n{}", show(&o));
    Exposition::parse(&std::fs::read_to_string(&prom).unwrap()).unwrap();
    let left: Vec<String> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(left, [name], "a temporary file was left behind");
}

/// A real Prometheus (Debian's binary, storage in a temp dir, loopback only) scrapes
/// `memtrim serve` every second; a Python process under the library holds 50 MiB; its live bytes
/// come back through a PromQL query to Prometheus's HTTP API and agree with its page. A release
/// requested with `memtrim trim` shows in memtrim_releases_total{reason="request"}. Every query
/// of deploy/grafana-memtrim.json then runs against this Prometheus and returns data.
#[test]
fn prometheus_scrapes_serve_and_promql_returns_live_bytes() {
    if !require_tool("prometheus") {
        return;
    }
    let dir = TempDir::new("prometheus");
    let Some(py) = python_holding(dir.path(), 50, &[("MEMTRIM_LIMIT", "pss:2GiB"), ("MEMTRIM_SMAPS_INTERVAL_MS", "500")]) else { return };
    let pid = py.pid();
    // a second process with an RSS limit (the dashboard compares each limit with its figure)
    let mut c = Command::new(common::idle_sleep());
    c.arg("600");
    on_backend(&mut c, dir.path()).env("MEMTRIM_LIMIT", "rss:1GiB");
    let _rss_limited = Proc(c.stdin(Stdio::null()).spawn().expect("sleep starts"));
    let serve = Serve::start(dir.path(), &[]);
    let prom = Prometheus::start(serve.port);

    let q = format!("memtrim_live_bytes{{pid=\"{pid}\"}}");
    let (value, metric) = wait_for("Prometheus to have scraped the python process", Duration::from_secs(60), || {
        let r = prom.query(&q)?;
        r.into_iter().next().ok_or_else(|| "empty result".to_string())
    });
    let page = page_live_bytes(dir.path(), pid) as f64;
    eprintln!("PromQL {q} = {value}; the page says {page}");
    assert!(value >= 50.0 * MIB, "live bytes through Prometheus {value}, the process holds 50 MiB");
    assert!((value - page).abs() <= 1.0 * MIB, "Prometheus says {value}, the page {page}");
    assert!(
        metric.contains(&format!("\"pid\":\"{pid}\""))
            && metric.contains("\"comm\":\"python")
            && metric.contains(&format!("\"allocator\":\"{}\"", common::allocator())),
        "{metric}"
    );
    assert!(metric.contains("\"job\":\"memtrim\""), "{metric}");
    let up = prom.query("up{job=\"memtrim\"}").unwrap();
    assert_eq!(up.first().map(|r| r.0), Some(1.0), "scrape not healthy: {up:?}");

    // A release requested from outside, seen through Prometheus.
    let o = memtrim(dir.path(), &["trim", &pid.to_string()]);
    assert!(o.status.success(), "{}", show(&o));
    let q = format!("memtrim_releases_total{{pid=\"{pid}\",reason=\"request\"}}");
    wait_for("the request release in Prometheus", Duration::from_secs(20), || match prom.query(&q)?.first() {
        Some((v, _)) if *v >= 1.0 => Ok(()),
        other => Err(format!("{other:?}")),
    });

    // The dashboard's queries: valid PromQL, and each returns data for this process.
    let dash = std::fs::read_to_string(root().join("deploy/grafana-memtrim.json")).unwrap();
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 8, "only {} queries in the dashboard", exprs.len());
    std::thread::sleep(Duration::from_secs(3)); // a few scrapes for rate()
    for e in &exprs {
        let q = e.replace("$__rate_interval", "30s").replace("$__range", "5m").replace("$instance", ".*").replace("$comm", ".*").replace("$job", ".*");
        wait_for(&format!("dashboard query {e} to return data"), Duration::from_secs(20), || {
            let r = prom.query(&q)?;
            if r.is_empty() { Err("empty".into()) } else { Ok(()) }
        });
    }
}

/// The "expr" strings of a Grafana dashboard JSON (a tolerant scan of the text: the file is also
/// checked by python's json module in deploy_files_are_valid).
fn dashboard_exprs(dash: &str) -> Vec<String> {
    let mut v = Vec::new();
    for part in dash.split("\"expr\":").skip(1) {
        let s = part.trim_start();
        let s = s.strip_prefix('"').expect("expr is a string");
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(c) => out.push(c),
                    None => break,
                },
                c => out.push(c),
            }
        }
        v.push(out);
    }
    v
}

struct Prometheus {
    proc: Proc,
    port: u16,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = TempDir::new("prometheus-data");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: memtrim\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .env_remove("LD_PRELOAD")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus starts");
            let mut p = Prometheus { proc: Proc(child), port, _dir: TempDir(PathBuf::new()) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if p.proc.0.try_wait().unwrap().is_some() {
                    break;
                }
                if http(port, "GET", "/-/ready", Duration::from_secs(2)).is_ok_and(|r| r.status == 200) {
                    p._dir = dir;
                    return p;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("prometheus attempt {attempt} on port {port} failed:\n{}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default());
            drop(p);
        }
        panic!("prometheus did not start");
    }

    /// An instant query: (value, metric JSON) per result.
    fn query(&self, q: &str) -> Result<Vec<(f64, String)>, String> {
        let r = http(self.port, "GET", &format!("/api/v1/query?query={}", urlencode(q)), Duration::from_secs(10))?;
        if r.status != 200 || !r.body.contains("\"status\":\"success\"") {
            return Err(format!("query {q}: {} {}", r.status, r.body));
        }
        let mut out = Vec::new();
        for part in r.body.split("{\"metric\":").skip(1) {
            let metric = part.split("},\"value\":").next().unwrap_or("").to_string() + "}";
            let value = part.split("\"value\":[").nth(1).and_then(|v| v.split('"').nth(1)).ok_or_else(|| format!("no value in {}", r.body))?;
            out.push((value.parse::<f64>().map_err(|e| format!("{value}: {e}"))?, metric));
        }
        Ok(out)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Pages that cannot be exported are skipped and counted by reason, per scrape (a gauge) and
/// over the server's life (a counter): another layout version, a torn page, a gone process, a
/// starting (never published) page; the real process next to them is exported.
#[test]
fn skipped_pages_are_counted_by_reason() {
    let dir = TempDir::new("skipped");
    let real = sleeper_under_library(dir.path());
    let (a, b, c) = (sleeper(), sleeper(), sleeper());
    let st = |p: &Proc| start_ticks(p.pid());
    plant_page(dir.path(), a.pid(), st(&a), b"newer", |p| p.layout_version = memtrim_common::page::LAYOUT_VERSION + 1);
    plant_page(dir.path(), b.pid(), st(&b), b"torn", |p| {
        p.stats[core::mem::offset_of!(Stats, live_bytes) / 8].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    plant_page(dir.path(), c.pid(), st(&c), b"starting", |p| {
        p.seq = Default::default();
        p.stats.iter().for_each(|w| w.store(0, std::sync::atomic::Ordering::Relaxed));
    });
    // a process that has exited
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let gone_start = start_ticks(gone_pid);
    gone.wait().unwrap();
    plant_page(dir.path(), gone_pid, gone_start, b"gone", |_| {});

    let serve = Serve::start(dir.path(), &[]);
    let ex = wait_for("the real process's page", Duration::from_secs(10), || {
        let ex = serve.metrics();
        if ex.pids().contains(&real.pid()) { Ok(ex) } else { Err(format!("{:?}", ex.pids())) }
    });
    let n0 = ex.value("memtrim_exporter_scrapes_total", &[]);
    assert_eq!(ex.pids(), [real.pid()].into(), "only the real process is exported");
    for (reason, n) in [("other_layout", 1.0), ("torn", 1.0), ("starting", 1.0), ("gone", 1.0), ("corrupt", 0.0), ("exported", 1.0)] {
        assert_eq!(ex.value("memtrim_exporter_pages", &[("result", reason)]), n, "pages {reason}");
    }
    let before = ex.value("memtrim_exporter_pages_skipped_total", &[("reason", "other_layout")]);
    assert!(before >= 1.0);
    let ex2 = serve.metrics();
    assert_eq!(ex2.value("memtrim_exporter_scrapes_total", &[]), n0 + 1.0);
    assert_eq!(ex2.value("memtrim_exporter_pages_skipped_total", &[("reason", "other_layout")]), before + 1.0, "the counter counts every scrape's skip");
    assert_eq!(
        ex2.value("memtrim_exporter_pages_skipped_total", &[("reason", "torn")]),
        ex.value("memtrim_exporter_pages_skipped_total", &[("reason", "torn")]) + 1.0
    );
    assert_eq!(ex2.value("memtrim_exporter_pages_scanned_total", &[]), ex.value("memtrim_exporter_pages_scanned_total", &[]) + 5.0);
    let b = ex2.find("memtrim_exporter_build_info", &[]);
    assert_eq!(b[0].labels["layout_version"], memtrim_common::page::LAYOUT_VERSION.to_string());
    // an unreadable directory is a figure, not an error
    let missing = Serve::start(&dir.join("does-not-exist"), &[]);
    let ex3 = missing.metrics();
    assert_eq!(ex3.value("memtrim_exporter_directory_readable", &[]), 0.0);
    assert_eq!(ex2.value("memtrim_exporter_directory_readable", &[]), 1.0);
}

/// Silent clients, a client trickling its request byte by byte, one that sends a request and
/// vanishes, one that never reads the response, garbage, oversized heads, other methods and
/// paths: none holds up a normal scrape (answered within a second), each gets its status, and
/// the server lives on. Past --timeout the silent ones are answered 408 and closed.
#[test]
fn silent_slow_and_vanishing_clients_do_not_block_scrapes() {
    let dir = TempDir::new("clients");
    let real = sleeper_under_library(dir.path());
    let mut serve = Serve::start(dir.path(), &["--timeout", "2"]);
    let port = serve.port;
    wait_for("the page", Duration::from_secs(10), || if serve.metrics().pids().contains(&real.pid()) { Ok(()) } else { Err("not yet".into()) });

    let silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let mut trickle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    trickle.write_all(b"GET /met").unwrap();
    // sends a request and goes away without reading
    for _ in 0..5 {
        let mut v = TcpStream::connect(("127.0.0.1", port)).unwrap();
        v.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        drop(v);
    }
    // sends a request and never reads (the response sits in the socket buffers)
    let mut never_reads = TcpStream::connect(("127.0.0.1", port)).unwrap();
    never_reads.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    for _ in 0..3 {
        let t = Instant::now();
        let r = http(port, "GET", "/metrics", Duration::from_secs(5)).expect("a scrape while others hang");
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(1), "a scrape took {:?} with silent clients connected", t.elapsed());
        trickle.write_all(b"r").ok();
    }

    let t = Duration::from_secs(5);
    assert_eq!(http(port, "GET", "/", t).unwrap().status, 200);
    assert_eq!(http(port, "GET", "/nope", t).unwrap().status, 404);
    assert_eq!(http(port, "GET", "/metrics?x=1&y=%22", t).unwrap().status, 200);
    let post = http(port, "POST", "/metrics", t).unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = http(port, "HEAD", "/metrics", t).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", t).unwrap().status, 400, "TLS-ish garbage");
    assert_eq!(exchange(port, b"GET /metrics\r\n\r\n", t).unwrap().status, 400, "HTTP/0.9 form");
    assert_eq!(exchange(port, b"GET /metrics HTTP/1.1\n\n", t).unwrap().status, 200, "bare LF line ends");
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 1000).flatten());
    huge.extend(b"\r\n");
    let r = exchange(port, &huge, t);
    // 431, or a reset if the server closed while we were still writing: both refuse it
    assert!(r.as_ref().map_or(true, |r| r.status == 431), "{:?}", r.as_ref().map(|r| r.status));
    // the rest of the request of a client that half-closes
    let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    half.set_read_timeout(Some(t)).unwrap();
    assert_eq!(read_response(&mut half).unwrap().status, 400, "a head cut short");

    // Past the timeout the silent clients get a 408 and an end of stream.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = read_response(&mut s).expect("the silent client is answered and closed");
        assert_eq!(r.status, 408);
    }
    let r = read_response(&mut trickle).expect("the trickling client is answered and closed");
    assert_eq!(r.status, 408);
    drop(never_reads);
    let ex = serve.metrics();
    assert!(ex.value("memtrim_exporter_request_timeouts_total", &[]) >= 11.0);
    assert!(ex.value("memtrim_exporter_http_responses_total", &[("code", "408")]) >= 11.0);
    assert!(ex.value("memtrim_exporter_http_responses_total", &[("code", "400")]) >= 3.0);
    assert!(serve.alive(), "memtrim serve died");
}

/// Slowloris: 64 clients on 127.0.0.1 each trickle one byte of a never-ending request head a
/// second, and open a new connection whenever theirs is closed. Meanwhile 14 scrapes from the
/// same address, one about every 0.7 s: at least 13 are answered 200 within 3 s.
#[test]
fn trickling_clients_do_not_starve_scrapes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new("slowloris");
    let serve = Serve::start(dir.path(), &[]);
    let port = serve.port;
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let connect = || {
                let s = TcpStream::connect_timeout(&(std::net::Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).ok()?;
                s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
                Some((s, 0usize))
            };
            let mut conns: Vec<Option<(TcpStream, usize)>> = (0..64).map(|_| connect()).collect();
            let started = Instant::now();
            // bounded: the scrapes take about 10 s; never more than 40 s
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(40) {
                for c in conns.iter_mut() {
                    let sent = c.as_mut().is_some_and(|(s, i)| {
                        let ok = s.write_all(&head[*i % head.len()..][..1]).is_ok();
                        *i += 1;
                        ok
                    });
                    if !sent {
                        *c = connect();
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let (answered, failures) = scrapes(port, Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    assert!(answered >= 13, "{answered} of 14 scrapes answered while 64 clients trickled; the others: {failures:?}");
}

/// At --max-connections, a new connection is served at once: the oldest connection still
/// sending its request (of the address holding most of them) is answered 503 and closed to make
/// room, and the younger one keeps waiting.
#[test]
fn connection_limit_makes_room_for_a_complete_request() {
    let dir = TempDir::new("limit");
    let mut serve = Serve::start(dir.path(), &["--timeout", "5", "--max-connections", "2"]);
    let port = serve.port;
    let mut oldest = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut younger = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let r = http(port, "GET", "/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(t.elapsed() < Duration::from_millis(500), "the scrape took {:?}", t.elapsed());
    oldest.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(read_response(&mut oldest).expect("the oldest waiting connection is answered and closed").status, 503);
    younger.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut byte = [0u8; 1];
    let e = loop {
        match younger.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.expect_err("the younger waiting connection was answered too"),
        }
    };
    assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}");
    let ex = serve.metrics();
    assert!(ex.value("memtrim_exporter_connections_rejected_total", &[]) >= 1.0);
    assert!(serve.alive());
}

/// Clients that send a complete request and then keep sending a byte every 200 ms (reconnecting
/// whenever closed) hold every connection of --max-connections 4 past their answers. Meanwhile
/// 14 scrapes, one about every 0.5 s: at least 13 are answered 200 within 3 s, since a
/// connection already answered gives way to a new one.
#[test]
fn clients_trickling_after_their_request_do_not_starve_scrapes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new("trickle-after");
    let mut serve = Serve::start(dir.path(), &["--max-connections", "4"]);
    let port = serve.port;
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let connect = || {
                let mut s = TcpStream::connect_timeout(&(std::net::Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1)).ok()?;
                s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
                s.write_all(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
                Some(s)
            };
            let mut conns: Vec<Option<TcpStream>> = (0..4).map(|_| connect()).collect();
            let started = Instant::now();
            // bounded: the scrapes take about 8 s; never more than 30 s
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                for c in conns.iter_mut() {
                    if c.as_mut().is_none_or(|s| s.write_all(b"x").is_err()) {
                        *c = connect();
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1000));
    let (answered, failures) = scrapes(port, Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    assert!(answered >= 13, "{answered} of 14 scrapes answered while 4 answered clients kept sending; the others: {failures:?}");
    assert!(serve.alive(), "memtrim serve died");
}

/// Many processes, exiting (killed, pages left behind) and starting while Prometheus-like
/// scrapes run back to back: every scrape is a 200 with a well-formed, duplicate-free text,
/// whose processes are all ours, and at the end every page is counted as gone.
#[test]
fn processes_exiting_mid_scrape_are_skipped() {
    let dir = TempDir::new("churn");
    let mut procs: Vec<Proc> = (0..40).map(|_| sleeper_under_library(dir.path())).collect();
    let mut ours: HashSet<u32> = procs.iter().map(|p| p.pid()).collect();
    wait_for("40 pages", Duration::from_secs(20), || {
        let n = count_pages(dir.path(), &ours);
        if n >= 40 { Ok(()) } else { Err(format!("{n} pages")) }
    });
    let serve = Serve::start(dir.path(), &[]);
    wait_for("40 processes exported", Duration::from_secs(10), || {
        let n = serve.metrics().pids().len();
        if n == 40 { Ok(()) } else { Err(format!("{n}")) }
    });
    let port = serve.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<HashSet<u32>> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http(port, "GET", "/metrics", Duration::from_secs(10)).expect("scrape");
                assert_eq!(r.status, 200);
                let ex = Exposition::parse(&r.body).unwrap_or_else(|e| panic!("bad exposition mid-churn ({e}):\n{}", r.body));
                seen.push(ex.pids());
            }
            seen
        })
    };
    // kill them one by one (SIGKILL: the page stays behind), starting a few new ones meanwhile
    let mut fresh = Vec::new();
    while let Some(mut p) = procs.pop() {
        let _ = p.0.kill();
        let _ = p.0.wait();
        if procs.len().is_multiple_of(10) {
            let n = sleeper_under_library(dir.path());
            ours.insert(n.pid());
            fresh.push(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(fresh); // and those too
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = scraper.join().expect("the scraper saw only good scrapes");
    assert!(seen.len() >= 5, "only {} scrapes during the churn", seen.len());
    for s in &seen {
        assert!(s.is_subset(&ours), "a process not ours: {:?}", s.difference(&ours));
    }
    let ex = serve.metrics();
    assert!(ex.pids().is_empty(), "dead processes still exported: {:?}", ex.pids());
    assert_eq!(ex.value("memtrim_exporter_pages", &[("result", "gone")]), count_pages(dir.path(), &ours) as f64);
    assert_eq!(ex.value("memtrim_exporter_pages", &[("result", "io")]), 0.0);
}

/// The files in deploy/: the Prometheus configuration and rules pass promtool; the Grafana
/// dashboard is JSON whose queries name only metrics that `memtrim serve` exposes (they are run
/// against a real Prometheus in prometheus_scrapes_serve_and_promql_returns_live_bytes); the
/// systemd units pass `systemd-analyze verify` when it is available.
#[test]
fn deploy_files_are_valid() {
    let deploy = root().join("deploy");
    if require_tool("promtool") {
        for (what, file) in [("config", "prometheus/prometheus.yml"), ("rules", "prometheus/memtrim-rules.yml")] {
            let o = Command::new("promtool").args(["check", what]).arg(deploy.join(file)).output().unwrap();
            assert!(o.status.success(), "promtool check {what} {file}:\n{}", show(&o));
        }
        // Debian's promtool has no Kubernetes service discovery: check the rest of the
        // Kubernetes scrape job (relabelling) with static targets in its place.
        let k8s = std::fs::read_to_string(deploy.join("kubernetes/prometheus-scrape.yml")).unwrap();
        assert!(k8s.contains("kubernetes_sd_configs:\n      - role: pod\n"), "{k8s}");
        let tmp = TempDir::new("k8s-scrape");
        let f = tmp.join("prometheus.yml");
        std::fs::write(&f, k8s.replace("kubernetes_sd_configs:\n      - role: pod\n", "static_configs:\n      - targets: ['10.0.0.1:8000']\n")).unwrap();
        let o = Command::new("promtool").args(["check", "config"]).arg(&f).output().unwrap();
        assert!(o.status.success(), "promtool check config (Kubernetes job):\n{}", show(&o));
    }
    let dash = std::fs::read_to_string(deploy.join("grafana-memtrim.json")).unwrap();
    if let Some(py) = python() {
        let o = Command::new(py)
            .args(["-c", "import json, sys; d = json.load(open(sys.argv[1])); assert d['panels'] and d['title'], d"])
            .arg(deploy.join("grafana-memtrim.json"))
            .output()
            .unwrap();
        assert!(o.status.success(), "the dashboard is not valid JSON:\n{}", show(&o));
    }
    // every memtrim_* name in a query is one the exporter writes
    let dir = TempDir::new("deploy");
    let o = memtrim(dir.path(), &["serve", "--once", "-"]);
    let families: HashSet<String> =
        text(&o.stdout).lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().to_string()).collect();
    let rules = std::fs::read_to_string(deploy.join("prometheus/memtrim-rules.yml")).unwrap();
    for e in dashboard_exprs(&dash).iter().chain([rules].iter()) {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("memtrim_") {
                assert!(families.contains(word), "{word} in deploy/ is not a metric of memtrim serve");
            }
        }
    }
    if Command::new("sh").arg("-c").arg("command -v systemd-analyze").output().is_ok_and(|o| o.status.success()) {
        // verify wants the ExecStart binaries: point the units at the built CLI in a copy
        let units = TempDir::new("units");
        for f in std::fs::read_dir(deploy.join("systemd")).unwrap() {
            let f = f.unwrap().path();
            let t = std::fs::read_to_string(&f).unwrap().replace("/usr/local/bin/memtrim", common::cli().to_str().unwrap());
            std::fs::write(units.join(f.file_name().unwrap().to_str().unwrap()), t).unwrap();
        }
        let files: Vec<PathBuf> = std::fs::read_dir(units.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "service" || e == "timer"))
            .collect();
        assert!(files.len() >= 3, "{files:?}");
        let o = Command::new("systemd-analyze").arg("verify").args(&files).output().unwrap();
        // an unknown key is only a warning on stderr: nothing at all is expected
        assert!(o.status.success() && o.stderr.is_empty(), "systemd-analyze verify:\n{}", show(&o));
    } else {
        eprintln!("SKIP: systemd-analyze not installed; the units are not verified");
    }
}

/// 14 scrapes, `pause` apart, each given 3 s: how many were answered 200, and what the others got.
fn scrapes(port: u16, pause: Duration) -> (usize, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    for _ in 0..14 {
        match http(port, "GET", "/metrics", Duration::from_secs(3)) {
            Ok(r) if r.status == 200 => answered += 1,
            Ok(r) => failures.push(format!("status {}", r.status)),
            Err(e) => failures.push(e),
        }
        std::thread::sleep(pause);
    }
    (answered, failures)
}
