//! Prefork servers under libmemtrim.so serve a load with zero failed requests while releases
//! run in their workers: gunicorn (sync and gthread workers, with and without --preload) with
//! the Django app of tests/apps/djangoapp.py, and puma in cluster mode with tests/apps/rackapp.ru.
//!
//! The load comes in bursts with pauses between them; with MEMTRIM_IDLE_MS=100ms,
//! MEMTRIM_MIN_RETAINED=256KiB and MEMTRIM_INTERVAL_MS=100ms each worker releases in the pauses
//! (and, over MEMTRIM_FRAG_THRESHOLD, while busy), so later bursts are served by workers that
//! have released. (With 1MiB a single-threaded sync worker can retain too little for any
//! release: glibc's free() trims the top of its heap itself, and 0.5 MiB retained was seen.) Each test asserts: every request answered 200 with a whole JSON page; every
//! worker that served requests shows releases on its own stats page; releases had happened
//! before the last burst; no worker died or was replaced.
//!
//! Servers listen on free ports of 127.0.0.1 only, run in their own process group, and are
//! killed when the test ends, passing or not. Tests run one at a time (a lock): they time
//! pauses against the library's idle detection and share two cores.

mod common;

use common::{free_port, on_ci, preloaded, read_page, require_tool, root, serial, text, without_env, TempDir, TUNING};
use memtrim_common::page::{Reason, Stats};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const WORKERS: usize = 3;
const BURSTS: usize = 4;
const PER_BURST: usize = 24;
const CONCURRENCY: usize = 4;
const PAUSE: Duration = Duration::from_millis(900);

/// The real python3 (not a pyenv shim, whose subshells would each get the library) if it has
/// gunicorn and django; on CI their absence fails.
fn python_with_django() -> Option<String> {
    if !require_tool("python3") || !require_tool("gunicorn") {
        return None;
    }
    static PY: OnceLock<Result<String, String>> = OnceLock::new();
    let r = PY.get_or_init(|| {
        let o = Command::new("python3")
            .args(["-c", "import os, sys, gunicorn, django; print(os.path.realpath(sys.executable))"])
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() { Ok(text(&o.stdout).trim().to_string()) } else { Err(text(&o.stderr)) }
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(e) => {
            assert!(!on_ci(), "python3 with gunicorn and django is required on CI: {e}");
            eprintln!("SKIP: python3 cannot import gunicorn and django: {e}");
            None
        }
    }
}

/// APP_DATA with the rows (`djangoapp.py init`), made once in the target directory
/// and reused.
fn app_data() -> Option<PathBuf> {
    static DATA: OnceLock<Option<PathBuf>> = OnceLock::new();
    DATA.get_or_init(|| {
        let python = python_with_django()?;
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
        let dir = target.join("servers-app-data");
        if dir.join("rows.tsv").exists() {
            return Some(dir);
        }
        let tmp = target.join(format!("servers-app-data.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let o = Command::new(python)
            .arg(root().join("tests/apps/djangoapp.py"))
            .arg("init")
            .arg(&tmp)
            .arg("3000")
            .env("APP_DATA", &tmp)
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap();
        assert!(o.status.success(), "djangoapp.py init failed: {}", text(&o.stderr));
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp); // another run made it first
        }
        Some(dir)
    })
    .clone()
}

/// A server in its own process group, killed (the whole group) when dropped.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    shm: PathBuf,
    _dir: TempDir,
}

impl Server {
    fn start(tag: &str, mut cmd: Command, port: u16) -> Server {
        let dir = TempDir::new(tag);
        let log = dir.join("server.log");
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        without_env(&mut cmd, TUNING)
            .env("MEMTRIM_SHM_DIR", &shm)
            .env("MEMTRIM_IDLE_MS", "100ms")
            .env("MEMTRIM_MIN_RETAINED", "256KiB")
            .env("MEMTRIM_INTERVAL_MS", "100ms")
            .env("APP_DATA", app_data().expect("app data"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(root().join("tests/apps"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.0.join("server.err")).unwrap())
            .process_group(0);
        let child = preloaded(&mut cmd).spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut s = Server { child, port, log, shm, _dir: dir };
        s.wait_ready();
        s
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("server.err");
        format!("{}{}", std::fs::read_to_string(&self.log).unwrap_or_default(), std::fs::read_to_string(err).unwrap_or_default())
    }

    fn workers(&self) -> Vec<u32> {
        children(self.child.id())
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the server exited with {st} before it was ready:\n{}", self.logs());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the server is not ready in 60 s:\n{}", self.logs());
            if self.workers().len() == WORKERS && get(self.port, "/health").is_ok_and(|(st, _)| st == 200) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // every worker has loaded the app (without --preload each imports it after the fork)
        std::thread::sleep(Duration::from_millis(1500));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pg = -(self.child.id() as i32);
        // SAFETY: signals to the server's own process group.
        unsafe { libc::kill(pg, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(8) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; whatever is left of the group goes.
        unsafe { libc::kill(pg, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{n}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next();
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) && state != Some("Z") {
            out.push(n);
        }
    }
    out.sort();
    out
}

/// One HTTP/1.0 GET on a new connection: (status, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let status = text(&all[..head_end]).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, all[head_end + 4..].to_vec()))
}

/// The pid a page of rows names (`"pid": N` or `"pid":N`).
fn pid_in(body: &[u8]) -> Option<u32> {
    let t = text(body);
    let at = t.find("\"pid\":")? + 6;
    t[at..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
}

fn describe(s: &Stats) -> String {
    format!(
        "trims {} {:?}, released {:.1} MiB, longest {:.1} ms, live {:.1} MiB, retained {:.1} MiB, floor {:.1} MiB, skipped_small {}, skipped_backoff {}, alloc_rate {}",
        s.trims,
        Reason::ALL.iter().map(|r| (r.name(), s.releases_by_reason[*r as usize])).filter(|x| x.1 > 0).collect::<Vec<_>>(),
        s.released_bytes as f64 / 1048576.0,
        s.max_trim_us as f64 / 1000.0,
        s.live_bytes as f64 / 1048576.0,
        s.retained_bytes as f64 / 1048576.0,
        s.new_retained as f64 / 1048576.0,
        s.skipped_small,
        s.skipped_backoff,
        s.alloc_rate
    )
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed: Vec<String>,
    per_worker: BTreeMap<u32, usize>,
}

/// One burst: PER_BURST requests from CONCURRENCY threads, each for 300..1500 rows.
fn burst(port: u16, seed: usize, tally: &Mutex<Tally>) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..CONCURRENCY {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PER_BURST {
                    return;
                }
                let k = (seed * PER_BURST + i) as u64;
                let limit = 300 + (k * 7919 % 1201);
                let offset = k * 104_729 % (3000 - limit);
                let path = format!("/rows?offset={offset}&limit={limit}");
                let r = get(port, &path);
                let mut t = tally.lock().unwrap();
                match r {
                    Ok((200, body)) if body.ends_with(b"]}") && body.len() as u64 > limit * 100 => {
                        t.ok += 1;
                        if let Some(pid) = pid_in(&body) {
                            *t.per_worker.entry(pid).or_default() += 1;
                        }
                    }
                    Ok((st, body)) => t.failed.push(format!("{path}: status {st}, {} bytes: {:?}", body.len(), text(&body[..body.len().min(200)]))),
                    Err(e) => t.failed.push(format!("{path}: {e}")),
                }
            });
        }
    });
}

/// Serves the bursty load and checks the server and its workers' pages.
fn serve_and_check(server: &Server) {
    let workers = server.workers();
    assert_eq!(workers.len(), WORKERS, "workers: {workers:?}\n{}", server.logs());
    let tally = Mutex::new(Tally::default());
    let mut trims_before_last = 0;
    for b in 0..BURSTS {
        if b == BURSTS - 1 {
            trims_before_last = workers.iter().filter_map(|&w| read_page(&server.shm, w)).map(|s| s.trims).sum::<u64>();
        }
        burst(server.port, b, &tally);
        std::thread::sleep(PAUSE);
    }
    let t = tally.into_inner().unwrap();
    let pages: Vec<(u32, Option<Stats>)> = workers.iter().map(|&w| (w, read_page(&server.shm, w))).collect();
    let report = pages
        .iter()
        .map(|(w, s)| format!("  worker {w}: {} requests; {}", t.per_worker.get(w).copied().unwrap_or(0), s.as_ref().map_or("no page".into(), describe)))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{} ok, {} failed; releases before the last burst: {trims_before_last}\n{report}", t.ok, t.failed.len());
    assert!(t.failed.is_empty(), "{} of {} requests failed, first: {:?}\n{}", t.failed.len(), BURSTS * PER_BURST, &t.failed[..t.failed.len().min(5)], server.logs());
    assert_eq!(t.ok, BURSTS * PER_BURST);
    assert_eq!(server.workers(), workers, "workers died or were replaced during the load:\n{}", server.logs());
    let served: Vec<u32> = t.per_worker.keys().copied().collect();
    assert!(served.iter().all(|p| workers.contains(p)), "pages came from pids {served:?}, workers are {workers:?}");
    assert!(served.len() >= 2, "only {served:?} served requests: the load did not spread over the workers");
    for (w, s) in &pages {
        let s = s.as_ref().unwrap_or_else(|| panic!("worker {w} has no stats page in {}:\n{report}", server.shm.display()));
        assert_eq!(s.pid, *w);
        if t.per_worker.get(w).copied().unwrap_or(0) > 0 {
            assert!(s.trims > 0, "worker {w} served requests but never released:\n{report}");
        }
    }
    assert!(trims_before_last > 0, "no worker had released before the last burst:\n{report}");
}

fn gunicorn(worker_class: &str, preload: bool) {
    let _g = serial();
    let Some(python) = python_with_django() else { return };
    let port = free_port();
    let mut cmd = Command::new(python);
    cmd.args(["-m", "gunicorn", "-w", &WORKERS.to_string(), "-k", worker_class, "-b", &format!("127.0.0.1:{port}"), "--log-level", "warning"]);
    if worker_class == "gthread" {
        cmd.args(["--threads", "4"]);
    }
    if preload {
        cmd.arg("--preload");
    }
    cmd.arg("djangoapp:application");
    let server = Server::start(&format!("gunicorn-{worker_class}-{preload}"), cmd, port);
    serve_and_check(&server);
}

#[test]
fn gunicorn_sync_workers() {
    gunicorn("sync", false);
}

#[test]
fn gunicorn_sync_workers_preload() {
    gunicorn("sync", true);
}

#[test]
fn gunicorn_gthread_workers() {
    gunicorn("gthread", false);
}

#[test]
fn gunicorn_gthread_workers_preload() {
    gunicorn("gthread", true);
}

fn puma(preload: bool) {
    let _g = serial();
    if !require_tool("puma") || !require_tool("ruby") || python_with_django().is_none() {
        return;
    }
    let port = free_port();
    let mut cmd = Command::new("puma");
    cmd.args(["-w", &WORKERS.to_string(), "-t", "4:4", "-e", "production", "-b", &format!("tcp://127.0.0.1:{port}")]);
    if preload {
        cmd.arg("--preload");
    }
    cmd.arg(root().join("tests/apps/rackapp.ru"));
    let server = Server::start(&format!("puma-{preload}"), cmd, port);
    serve_and_check(&server);
}

#[test]
fn puma_cluster_workers() {
    puma(false);
}

#[test]
fn puma_cluster_workers_preload() {
    puma(true);
}
