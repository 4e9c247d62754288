//! `memtrim report PID` against real processes, on the backend under test (TEST_ALLOCATOR):
//!
//! - tests/c/report_layout.c builds a known layout (a fragmented main heap, three threads with
//!   arenas of their own and fragmented too, two large mmapped blocks) and says what it built;
//!   the report's figures must match: per arena (found through an address the program gives)
//!   bytes in use and free, the mmapped blocks by address, and the kernel's view per category.
//!   Tolerances are stated where they are checked.
//! - Prediction against reality: on the same program, the release the report predicts is within
//!   20 % of what `memtrim trim PID` then returns; on glibc, a second report after the release
//!   predicts almost nothing (glibc does not record what it gave back: the report has to).
//! - A Python HTTP server under the library, after serving requests from several threads: the
//!   report puts at least 95 % of the process's RSS (VmRSS) in named categories.
//! - The report file is private (0600, a regular file of ours) and removed once read.
//!
//! The programs run with the release policy's automatic triggers off (MEMTRIM_IDLE_MS=0,
//! MEMTRIM_FRAG_THRESHOLD=off, MEMTRIM_PSI_STALL_MS=0) so that only the test releases.

mod common;

use common::{Driven, Json, JsonExt, Proc, TUNING, TempDir, allocator, compile, memtrim, page_path, preloaded, python, text, wait_for, without_env};
use memtrim_common::futex;
use memtrim_common::page::{FILE_BYTES, Page};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn jemalloc() -> bool {
    allocator() == "jemalloc"
}

fn quiet_env(cmd: &mut Command, dir: &Path) {
    without_env(cmd, TUNING)
        .env("MEMTRIM_SHM_DIR", dir)
        .env("MEMTRIM_INTERVAL_MS", "200ms")
        .env("MEMTRIM_IDLE_MS", "0")
        .env("MEMTRIM_FRAG_THRESHOLD", "off")
        .env("MEMTRIM_PSI_STALL_MS", "0");
}

/// What report_layout says it built.
#[derive(Default, Debug)]
struct Facts {
    main: [u64; 4],
    threads: Vec<[u64; 4]>,
    big: Vec<(u64, u64)>,
}

/// tests/c/report_layout under the library; ended when dropped.
struct Layout {
    io: Driven,
    pid: u32,
    facts: Facts,
    dir: TempDir,
}

impl Layout {
    fn start(tag: &str) -> Layout {
        static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        // Once per test binary: tests run in parallel and would write the same file.
        let bin = BIN.get_or_init(|| compile("report_layout.c", &["-fno-builtin"])).clone();
        let dir = TempDir::new(tag);
        let mut cmd = Command::new(bin);
        quiet_env(&mut cmd, &dir.0);
        let io = Driven::spawn(preloaded(&mut cmd).stderr(Stdio::inherit()));
        let mut facts = Facts::default();
        let pid;
        loop {
            let line = io.line(Duration::from_secs(60), || "report_layout ended (or hung) before `ready`".into());
            let w: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| w[i].parse::<u64>().unwrap();
            match w[0] {
                "main" => facts.main = [n(1), n(2), n(3), n(4)],
                "thread" => facts.threads.push([n(2), n(3), n(4), n(5)]),
                "big" => facts.big.push((n(1), n(2))),
                "ready" => {
                    pid = n(1) as u32;
                    break;
                }
                other => panic!("unexpected line from report_layout: {other}"),
            }
        }
        wait_for_page(&dir.0, pid);
        Layout { io, pid, facts, dir }
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        self.io.end();
    }
}

fn wait_for_page(dir: &Path, pid: u32) -> PathBuf {
    wait_for(&format!("a page for pid {pid}"), Duration::from_secs(10), || page_path(dir, pid).ok_or_else(|| "none yet".to_string()))
}

/// `memtrim report PID --json`, parsed.
fn report(dir: &Path, pid: u32) -> Json {
    let o = memtrim(dir, &["report", &pid.to_string(), "--json"]);
    assert!(o.status.success(), "memtrim report failed: {}{}", text(&o.stderr), text(&o.stdout));
    Json::parse(&text(&o.stdout)).unwrap_or_else(|e| panic!("memtrim report --json is not JSON ({e}): {}", text(&o.stdout)))
}

/// `memtrim trim PID`: the bytes it says were released.
fn trim(dir: &Path, pid: u32) -> u64 {
    let o = memtrim(dir, &["trim", &pid.to_string()]);
    assert!(o.status.success(), "memtrim trim failed: {}", text(&o.stderr));
    let out = text(&o.stdout);
    // `pid N (comm): released 55.4 MiB (58118144 B) in 17.7 ms`
    let at = out.find(" MiB (").or_else(|| out.find(" KiB (")).or_else(|| out.find("B (")).unwrap_or_else(|| panic!("no byte count in {out:?}"));
    let rest = &out[at..];
    let open = rest.find('(').unwrap() + 1;
    rest[open..].split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no byte count in {out:?}"))
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

fn within(got: u64, want: u64, abs: u64, rel: f64) -> bool {
    got.abs_diff(want) as f64 <= abs as f64 + rel * want as f64
}

fn cat(r: &Json, key: &str) -> u64 {
    r["categories"][key]["rss_bytes"].u64()
}

#[test]
fn report_matches_the_layout_the_program_built() {
    let l = Layout::start("layout");
    let f = &l.facts;
    let r = report(&l.dir.0, l.pid);
    let view = &r["allocator_view"];
    let summary = format!(
        "categories {:?}\nverdict {:?}",
        r["categories"],
        r["verdict"].arr().iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()
    );
    assert_eq!(view["allocator"].as_str(), Some(allocator().as_str()));
    assert_eq!(view["pid"].u64(), l.pid as u64);

    // What the program built, in chunk bytes on glibc (usable + the 8-byte header).
    let main_live = f.main[1];
    let main_freed = f.main[2];
    let threads_live: u64 = f.threads.iter().map(|t| t[1]).sum();
    let threads_freed: u64 = f.threads.iter().map(|t| t[2]).sum();
    let big: u64 = f.big.iter().map(|b| b.1).sum();

    if !jemalloc() {
        let g = &view["glibc"];
        let arenas = g["arenas"].arr();
        let arena = |nr: u64| arenas.iter().find(|a| a["nr"].u64() == nr).unwrap_or_else(|| panic!("no arena {nr}"));
        // Main arena. In use: the live blocks, their headers, and the process's other small
        // allocations (stdio, memtrim's early ones): within 512 KiB. Free (bins and top): the
        // freed blocks with their headers, and the top's slack: within 512 KiB.
        let main = arena(0);
        let in_use = main["in_use_bytes"].u64();
        let chunks = |usable: u64, n: u64| usable + 8 * n;
        let main_live_c = chunks(main_live, f.main[0]);
        assert!(in_use >= main_live_c && in_use <= main_live_c + 512 * 1024, "main arena in use {in_use} B, the program holds {main_live_c} B");
        let main_free = main["free_bin_bytes"].u64() + main["top_bytes"].u64() + main["free_fast_bytes"].u64();
        let freed_n = f.main[0] * 7; // one kept in 8
        assert!(
            within(main_free, chunks(main_freed, freed_n), 512 * 1024, 0.0),
            "main arena free {main_free} B, the program freed {} B",
            chunks(main_freed, freed_n)
        );
        // Every thread's arena, found through a live block of it: its own (no two threads
        // share one), its heaps matched exactly; in use within 64 KiB (the arena's header,
        // the thread's tcache) and free within 64 KiB + 1 % of what the thread holds and freed.
        let heaps = g["heaps"].arr();
        let mut seen = Vec::new();
        for (i, t) in f.threads.iter().enumerate() {
            let addr = t[3];
            let h = heaps
                .iter()
                .find(|h| addr >= h.at(0).u64() && addr < h.at(0).u64() + h.at(1).u64())
                .unwrap_or_else(|| panic!("thread {i}'s block {addr:#x} is in no thread heap of the report: {:?}", heaps));
            let nr = h.at(4).i64();
            assert!(nr > 0, "thread {i}'s heap is not matched to an arena");
            assert!(!seen.contains(&nr), "threads share arena {nr}");
            seen.push(nr);
            let a = arena(nr as u64);
            assert_eq!(a["match"].as_str(), Some("exact"), "arena {nr}");
            let live_c = chunks(t[1], t[0]);
            let in_use = a["in_use_bytes"].u64();
            assert!(in_use >= live_c && in_use <= live_c + 64 * 1024, "thread {i} (arena {nr}): in use {in_use} B, the thread holds {live_c} B");
            let free = a["free_bin_bytes"].u64() + a["top_bytes"].u64() + a["free_fast_bytes"].u64();
            let freed_c = chunks(t[2], t[0] * 3);
            assert!(within(free, freed_c, 64 * 1024, 0.01), "thread {i} (arena {nr}): free {free} B, the thread freed {freed_c} B");
            // Resident: everything the thread wrote is still resident (nothing was released).
            assert!(a["resident_bytes"].u64() >= live_c + freed_c - 128 * 1024, "thread {i}: resident {} B", a["resident_bytes"].u64());
        }
        // The large blocks, by address: each chunk starts 16 bytes before the block, is the
        // usable size + 16 long, and is resident (the program wrote it).
        let blocks = g["mmapped_blocks"].arr();
        for &(addr, usable) in &f.big {
            let b = blocks.iter().find(|b| b.at(0).u64() == addr - 16).unwrap_or_else(|| panic!("block {addr:#x} not among the mmapped blocks {blocks:?}"));
            assert_eq!(b.at(1).u64(), usable + 16, "length of block {addr:#x}");
            assert!(b.at(2).u64() >= usable, "block {addr:#x} resident {} B", b.at(2).u64());
        }
        assert!(g["mmapped_count"].u64() >= 2 && g["mmapped_bytes"].u64() >= big + 32);
        // The kernel's view: the mmapped blocks within 1 %; the main heap holds what the program
        // wrote there within 1 MiB; the thread arenas at least what the threads wrote, and
        // at most 2 MiB more (memtrim's own arena, headers).
        let mm = cat(&r, "mmapped_blocks");
        assert!(within(mm, big, 0, 0.01), "mmapped blocks RSS {} MiB, the program wrote {} MiB\n{summary}", mib(mm), mib(big));
        let heap = cat(&r, "main_heap");
        assert!(
            within(heap, main_live + main_freed, MIB, 0.0),
            "main heap RSS {} MiB, the program wrote {} MiB\n{summary}",
            mib(heap),
            mib(main_live + main_freed)
        );
        let ta = cat(&r, "thread_arenas");
        assert!(
            ta + 256 * 1024 >= threads_live + threads_freed && ta <= threads_live + threads_freed + 2 * MIB,
            "thread arenas RSS {} MiB, the threads wrote {} MiB\n{summary}",
            mib(ta),
            mib(threads_live + threads_freed)
        );
        // What the report itself cost: bounded, and reported.
        let cost = &view["cost"];
        assert!(cost["total_us"].u64() > 0 && cost["total_us"].u64() < 1_000_000, "cost {:?}", cost);
        assert!(cost["max_lock_us"].u64() < 100_000, "an arena lock held {} µs", cost["max_lock_us"].u64());
    } else {
        let je = &view["jemalloc"];
        let arenas = je["arenas"].arr();
        let page = je["page"].u64();
        // Allocated over every arena: what the program holds, within 1 MiB + 1 % (stdio and
        // the like).
        let allocated: u64 = arenas.iter().map(|a| a["small_allocated"].u64() + a["large_allocated"].u64()).sum();
        let held = main_live + threads_live + big;
        assert!(allocated >= held && within(allocated, held, MIB, 0.01), "jemalloc allocated {} MiB, the program holds {} MiB", mib(allocated), mib(held));
        // The two big blocks (above jemalloc's oversize threshold) are in its huge arena.
        let huge: u64 = arenas.iter().filter(|a| a["huge"].bool()).map(|a| a["large_allocated"].u64()).sum();
        assert!(huge >= big, "huge arena holds {huge} B, the big blocks are {big} B");
        // Dirty pages: what the program freed (less what thread caches keep, 4 MiB at most),
        // and at most 35 % more (jemalloc's cache-oblivious page added to each large block).
        let dirty: u64 = arenas.iter().map(|a| a["pdirty"].u64() * page).sum();
        let freed = main_freed + threads_freed;
        assert!(dirty + 4 * MIB >= freed && dirty as f64 <= freed as f64 * 1.35, "jemalloc dirty {} MiB, the program freed {} MiB", mib(dirty), mib(freed));
        // The threads have arenas of their own.
        assert!(arenas.iter().filter(|a| a["nthreads"].u64() > 0).count() >= 3, "{:?}", arenas);
        // The kernel's view: jemalloc's resident figure (an upper bound: it counts dirty pages
        // never touched) moves out of "other anonymous", of which the program has next to none
        // left; what it holds is all resident.
        let ja = cat(&r, "jemalloc_arenas");
        assert!(
            ja >= held && ja <= je["resident"].u64() + MIB,
            "jemalloc arenas RSS {} MiB, held {} MiB, jemalloc resident {} MiB\n{summary}",
            mib(ja),
            mib(held),
            mib(je["resident"].u64())
        );
        assert!(cat(&r, "other_anonymous") < 2 * MIB, "{summary}");
    }
    let named = r["named_rss_bytes"].u64();
    let rss = r["rss_bytes"].u64();
    assert!(named as f64 >= 0.95 * rss as f64, "named categories hold {} of {} MiB\n{summary}", mib(named), mib(rss));
}

#[test]
fn prediction_is_within_20_percent_of_what_a_release_returns() {
    let l = Layout::start("predict");
    let before = report(&l.dir.0, l.pid);
    let predicted = before["release_bytes"].u64();
    let released = trim(&l.dir.0, l.pid);
    eprintln!("{}: predicted {:.1} MiB, released {:.1} MiB", allocator(), mib(predicted), mib(released));
    assert!(released > 40 * MIB, "the release returned only {} MiB", mib(released));
    assert!(
        predicted.abs_diff(released) as f64 <= 0.2 * released as f64,
        "predicted {:.1} MiB, the release returned {:.1} MiB; verdict {:?}",
        mib(predicted),
        mib(released),
        before["verdict"]
    );
    // After the release the free pages are gone from RSS but not from the allocator's books:
    // the next prediction must know it.
    let after = report(&l.dir.0, l.pid);
    let again = after["release_bytes"].u64();
    assert!(again <= predicted / 20, "after a release the report still predicts {:.1} MiB (before: {:.1} MiB)", mib(again), mib(predicted));
}

/// A threaded Python HTTP server: prints its port, serves JSON pages of random rows.
const PY_SERVER: &str = r#"
import json, random, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(self.path.strip('/') or 100)
        rows = [{"id": i, "name": "row%d" % i, "v": random.random(), "tags": ["a"] * (i % 7)} for i in range(n)]
        body = json.dumps(rows).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[test]
fn python_server_rss_is_in_named_categories() {
    let Some(python) = python() else { return };
    let dir = TempDir::new("python");
    let mut cmd = Command::new(python);
    cmd.args(["-c", PY_SERVER]);
    quiet_env(&mut cmd, &dir.0);
    let mut child = preloaded(&mut cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python3 starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let child = Proc(child);
    let mut port = String::new();
    out.read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().unwrap_or_else(|_| panic!("no port from the server: {port:?}"));
    let pid = child.pid();
    // Requests from four client threads at once (the server answers each on a thread of its own).
    let clients: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..15 {
                    let rows = 500 + 100 * ((c + i) % 15);
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    write!(s, "GET /{rows} HTTP/1.0\r\n\r\n").unwrap();
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut s, &mut body).unwrap();
                    assert!(body.starts_with(b"HTTP/1.0 200"), "{}", String::from_utf8_lossy(&body[..body.len().min(200)]));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    wait_for_page(&dir.0, pid);
    let r = report(&dir.0, pid);
    let rss = r["rss_bytes"].u64();
    let named = r["named_rss_bytes"].u64();
    let cats: Vec<(String, u64)> = match &r["categories"] {
        Json::Object(v) => v.iter().map(|(k, c)| (k.clone(), c["rss_bytes"].u64())).collect(),
        _ => panic!("no categories"),
    };
    eprintln!(
        "{}: RSS {:.1} MiB, named {:.1} MiB: {:?}",
        allocator(),
        mib(rss),
        mib(named),
        cats.iter().map(|(k, b)| (k.as_str(), mib(*b))).collect::<Vec<_>>()
    );
    assert!(rss > 0 && named as f64 >= 0.95 * rss as f64, "named categories hold {:.1} of {:.1} MiB: {cats:?}", mib(named), mib(rss));
    // The kernel's view is all there: the mappings' RSS adds up to VmRSS within 5 %.
    let smaps = r["smaps_rss_bytes"].u64();
    assert!(within(smaps, rss, 0, 0.05), "smaps says {smaps} B, VmRSS {rss} B");
    // CPython's own: code, its object arenas (a category of their own, by address), the heap of
    // its backend.
    assert!(cat(&r, "code") > MIB, "{cats:?}");
    assert!(cat(&r, "python_arenas") > MIB, "{cats:?}");
    if jemalloc() {
        assert!(cat(&r, "jemalloc_arenas") > MIB, "{cats:?}");
    } else {
        assert!(cat(&r, "main_heap") > MIB, "{cats:?}");
        assert!(r["allocator_view"]["glibc"]["arenas"].arr().len() >= 2, "the server's threads have arenas");
    }
    assert!(!r["verdict"].arr().is_empty());
    drop(child);
}

#[test]
fn report_file_is_private_and_removed_once_read() {
    let l = Layout::start("private");
    let page = wait_for_page(&l.dir.0, l.pid);
    let report_path = PathBuf::from(format!("{}.report", page.display()));
    // Ask through the page as the CLI does, without the CLI (so that nothing removes the file).
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&page).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a FILE_BYTES-long shared mapping of the page, unmapped below.
    let map = unsafe { libc::mmap(core::ptr::null_mut(), FILE_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(map, libc::MAP_FAILED);
    let p = unsafe { &*(map as *const Page) };
    let want = p.control.report_requested.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
    futex::wake_all(&p.control.trim_requested);
    let start = Instant::now();
    while p.control.report_served.load(Ordering::Acquire) != want {
        assert!(start.elapsed() < Duration::from_secs(10), "the report was not served");
        futex::wait(&p.control.report_served, p.control.report_served.load(Ordering::Acquire), Duration::from_millis(100));
    }
    unsafe { libc::munmap(map, FILE_BYTES) };
    let md = std::fs::symlink_metadata(&report_path).unwrap_or_else(|e| panic!("{}: {e}", report_path.display()));
    assert!(md.file_type().is_file());
    assert_eq!(md.mode() & 0o777, 0o600, "report file mode {:o}", md.mode() & 0o777);
    // SAFETY: no preconditions.
    assert_eq!(md.uid(), unsafe { libc::geteuid() });
    let j = Json::parse(&std::fs::read_to_string(&report_path).unwrap()).expect("the report file is JSON");
    assert_eq!(j["request"].u64() as u32, want);
    assert!(
        !std::fs::read_dir(page.parent().unwrap()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")),
        "a temporary file was left"
    );
    // The CLI reads it (a newer one) and removes it.
    let r = report(&l.dir.0, l.pid);
    assert!(r["release_bytes"].u64() > 0);
    assert!(!report_path.exists(), "the CLI left {}", report_path.display());
}
