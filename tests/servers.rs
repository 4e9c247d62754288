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

use common::servers::{Server, Tally, WORKERS, get, puma_command, python_with_django};
use common::{by, free_port, read_page, serial};
use memtrim_common::page::{Reason, Stats};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const BURSTS: usize = 4;
const PER_BURST: usize = 24;
const CONCURRENCY: usize = 4;
const PAUSE: Duration = Duration::from_millis(900);

/// The library's settings for every server: releases in the pauses between bursts.
const TUNED: [(&str, &str); 3] = [("MEMTRIM_IDLE_MS", "100ms"), ("MEMTRIM_MIN_RETAINED", "256KiB"), ("MEMTRIM_INTERVAL_MS", "100ms")];

fn describe(s: &Stats) -> String {
    format!(
        "trims {} {:?}, released {:.1} MiB, longest {:.1} ms, live {:.1} MiB, retained {:.1} MiB, floor {:.1} MiB, skipped_small {}, skipped_backoff {}, alloc_rate {}",
        s.trims,
        Reason::ALL.iter().map(|r| (r.name(), by(s, *r))).filter(|x| x.1 > 0).collect::<Vec<_>>(),
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

/// One burst: PER_BURST requests from CONCURRENCY threads, each for 300..1500 rows.
fn burst(port: u16, seed: usize, tally: &Mutex<Tally>) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..CONCURRENCY {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= PER_BURST {
                        return;
                    }
                    let k = (seed * PER_BURST + i) as u64;
                    let limit = 300 + (k * 7919 % 1201);
                    let offset = k * 104_729 % (3000 - limit);
                    let path = format!("/rows?offset={offset}&limit={limit}");
                    let r = get(port, &path);
                    tally.lock().unwrap().count(&path, limit, r);
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
    assert!(
        t.failed.is_empty(),
        "{} of {} requests failed, first: {:?}\n{}",
        t.failed.len(),
        BURSTS * PER_BURST,
        &t.failed[..t.failed.len().min(5)],
        server.logs()
    );
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
    let server = Server::start(&format!("gunicorn-{worker_class}-{preload}"), cmd, port, &TUNED);
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
    let port = free_port();
    let Some(cmd) = puma_command(port, preload) else { return };
    let server = Server::start(&format!("puma-{preload}"), cmd, port, &TUNED);
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
