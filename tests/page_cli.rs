//! The stats page seen from outside: `memtrim ls`, `stat`, `top`, `trim` and `clean` against real
//! processes running under libmemtrim.so (tests/py/page_host.py, gunicorn, sleep), each test in
//! its own MEMTRIM_SHM_DIR so that tests do not see each other's pages.
//!
//! Build first: `cargo build --release && cargo test --release --test page_cli`.
//! Tools: python3 (required on CI), gunicorn, tmux, setpriv (each skipped with a message when
//! missing, failed on CI).

mod common;

use common::{
    Driven, Json, JsonExt, Proc, TempDir, Tmux, crafted_page, lib, memtrim, now_ms, page_file, plant_page, python, require_tool, root, show, sleeper,
    start_ticks, stat_json, text, under_library, wait_for, write_page,
};
use memtrim_common::page::{FILE_BYTES, Page, Stats};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: i64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Processes, directories and the CLI.

/// tests/py/page_host.py under the library, driven over stdin/stdout.
struct Host {
    io: Driven,
}

impl Host {
    fn start(dir: &Path) -> Option<Host> {
        let py = python()?;
        let mut c = Command::new(py);
        c.arg(root().join("tests/py/page_host.py")).env("PYTHONMALLOC", "malloc").env_remove("PYTHONDEVMODE");
        under_library(&mut c, dir, 100);
        let h = Host { io: Driven::spawn(c.stderr(Stdio::inherit())) };
        let ready = h.io.line(Duration::from_secs(60), String::new);
        assert_eq!(ready, format!("ready {}", h.pid()), "page_host.py did not start");
        Some(h)
    }

    fn pid(&self) -> u32 {
        self.io.pid()
    }

    /// Asks the host to exit normally and waits for it.
    fn exit(mut self) {
        self.io.send("exit");
        let start = Instant::now();
        loop {
            if let Some(st) = self.io.proc.0.try_wait().unwrap() {
                assert!(st.success(), "page_host.py exited with {st}");
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "page_host.py did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a command, returns its answer.
    fn cmd(&mut self, c: &str) -> String {
        self.io.ask(c, String::new)
    }
}

fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

fn ls_json(dir: &Path, extra: &[&str]) -> (Vec<Json>, String) {
    let mut args = vec!["ls", "--json"];
    args.extend_from_slice(extra);
    let o = memtrim(dir, &args);
    assert!(o.status.success(), "memtrim ls --json failed:\n{}", show(&o));
    let j = Json::parse(text(&o.stdout).trim()).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", show(&o)));
    (j.array().to_vec(), text(&o.stderr))
}

/// The page of `pid` as `stat --json` shows it, once one has been published after `after_ms`.
fn fresh_stat(dir: &Path, pid: u32, after_ms: u64) -> Json {
    wait_for(&format!("a publication of pid {pid}'s page"), Duration::from_secs(15), || {
        let j = stat_json(dir, pid)?;
        if j.int("updated_at") > after_ms as i64 { Ok(j) } else { Err(format!("updated_at {} <= {after_ms}", j.int("updated_at"))) }
    })
}

fn requests(j: &Json) -> i64 {
    j.field("releases_by_reason").int("request")
}

const CONTRACT: &[&str] = &[
    "pid",
    "ppid",
    "comm",
    "allocator",
    "live_bytes",
    "peak_live_bytes",
    "heap_bytes",
    "retained_bytes",
    "rss_bytes",
    "pss_bytes",
    "uss_bytes",
    "swap_bytes",
    "allocs",
    "frees",
    "trims",
    "released_bytes",
    "last_trim_ms",
    "max_trim_ms",
    "updated_at",
];

fn check_contract(j: &Json) {
    for k in CONTRACT {
        assert!(j.has(k), "field {k} missing from {j:?}");
    }
    // the contract's integers: all but the name, the allocator and the durations in ms
    for k in CONTRACT.iter().filter(|k| !["comm", "allocator", "last_trim_ms", "max_trim_ms"].contains(k)) {
        assert!(j.int(k) >= 0, "{k} is not a non-negative integer");
    }
    j.num("last_trim_ms");
    j.num("max_trim_ms");
    assert!(matches!(j.str("allocator"), "glibc" | "jemalloc"), "allocator {:?}", j.str("allocator"));
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// ~100 MiB allocated then freed by a Python process: `stat --json` follows live_bytes up by
/// at least 90 MiB and back down; the text form shows the same process.
#[test]
fn stat_json_follows_live_bytes_up_and_down() {
    let dir = TempDir::new("stat");
    let Some(mut h) = Host::start(dir.path()) else { return };
    let pid = h.pid();
    // a publication after the host said it is ready (an earlier one may predate its imports)
    let t0 = now_ms();
    let before = fresh_stat(dir.path(), pid, t0);
    check_contract(&before);
    assert_eq!(before.int("pid"), pid as i64);
    assert_eq!(before.int("ppid"), std::process::id() as i64, "ppid of the host is the test process");
    assert!(before.str("comm").starts_with("python"), "comm {:?}", before.str("comm"));
    assert_eq!(before.str("state"), "live");
    let base = before.int("live_bytes");

    h.cmd("alloc 100");
    let up = wait_for("live_bytes to rise by >= 90 MiB", Duration::from_secs(15), || {
        let j = stat_json(dir.path(), pid)?;
        let rise = j.int("live_bytes") - base;
        if rise >= 90 * MIB { Ok(j) } else { Err(format!("rose {rise} bytes")) }
    });
    let rise = up.int("live_bytes") - base;
    eprintln!("live_bytes {base} -> {} (+{} MiB)", up.int("live_bytes"), rise / MIB);
    assert!(rise <= 125 * MIB, "live_bytes rose by {} MiB for ~100 MiB", rise / MIB);
    assert!(up.int("peak_live_bytes") >= up.int("live_bytes"));
    // heap_bytes (mallinfo2) is refreshed on its own, cost-based cadence (src/heap_stats.rs),
    // so it may lag live_bytes for a while.
    let t_up = Instant::now();
    let heap = wait_for("heap_bytes to follow", Duration::from_secs(10), || {
        let j = stat_json(dir.path(), pid)?;
        if j.int("heap_bytes") >= 90 * MIB { Ok(j.int("heap_bytes")) } else { Err(format!("heap_bytes {}", j.int("heap_bytes"))) }
    });
    eprintln!("heap_bytes {heap} reached {:?} after live_bytes did", t_up.elapsed());
    assert!(up.int("rss_bytes") >= 90 * MIB, "rss_bytes {} with 100 MiB live and zeroed", up.int("rss_bytes"));
    assert!(up.int("allocs") > before.int("allocs"));
    assert!(up.int("updated_at") >= t0 as i64);

    let text_stat = memtrim(dir.path(), &["stat", &pid.to_string()]);
    assert!(text_stat.status.success(), "{}", show(&text_stat));
    let t = text(&text_stat.stdout);
    assert!(t.contains(&format!("memtrim stat {pid}")) && t.contains("live") && t.contains("MiB"), "{t}");

    h.cmd("free");
    let down = wait_for("live_bytes to fall back", Duration::from_secs(15), || {
        let j = stat_json(dir.path(), pid)?;
        let diff = j.int("live_bytes") - base;
        if diff <= 4 * MIB { Ok(j) } else { Err(format!("still {diff} bytes above the start")) }
    });
    eprintln!("after free: live_bytes {} (start {base})", down.int("live_bytes"));
    assert!(down.int("peak_live_bytes") >= up.int("live_bytes"), "peak kept");
    assert!(down.int("frees") > up.int("frees"));

    // --watch prints again and again (one JSON object per line with --json)
    let mut w = Command::new(common::cli());
    w.args(["stat", &pid.to_string(), "--json", "--watch", "0.1"]).env("MEMTRIM_SHM_DIR", dir.path()).stdout(Stdio::piped());
    let mut child = Proc(w.spawn().unwrap());
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut samples = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        samples.push(Json::parse(l.trim()).unwrap_or_else(|e| panic!("--watch line {l:?}: {e}")).int("pid"));
    }
    assert_eq!(samples, vec![pid as i64; 3]);
    drop(child);

    // a pid without a page
    let o = memtrim(dir.path(), &["stat", &std::process::id().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("no page"), "{}", show(&o));
    h.exit();
}

/// Forked children get pages of their own; `ls --json` lists them with the parent's pid as ppid
/// and the text form draws them under it. At their normal exit the pages go.
#[test]
fn ls_shows_forked_children_under_their_parent() {
    let dir = TempDir::new("fork");
    let Some(mut h) = Host::start(dir.path()) else { return };
    let parent = h.pid();
    fresh_stat(dir.path(), parent, 0);
    let forked = h.cmd("fork 2");
    let kids: Vec<u32> = forked.strip_prefix("forked ").unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(kids.len(), 2);
    let list = wait_for("parent and both children in `ls --json`", Duration::from_secs(15), || {
        let (v, _) = ls_json(dir.path(), &[]);
        let pids: Vec<i64> = v.iter().map(|j| j.int("pid")).collect();
        if [parent, kids[0], kids[1]].iter().all(|p| pids.contains(&(*p as i64))) { Ok(v) } else { Err(format!("pids {pids:?}")) }
    });
    for j in &list {
        check_contract(j);
        let pid = j.int("pid") as u32;
        if kids.contains(&pid) {
            assert_eq!(j.int("ppid"), parent as i64, "child {pid}'s ppid");
            assert_eq!(j.str("state"), "live");
        }
    }
    for k in &kids {
        let own = dir.pages_of(*k);
        assert_eq!(own.len(), 1, "child {k} has exactly one page of its own: {own:?}");
        assert_ne!(own, dir.pages_of(parent));
    }
    // the parent's page keeps being published after the fork
    let t = now_ms();
    fresh_stat(dir.path(), parent, t);
    // the tree: children right under the parent, drawn with branches
    let o = memtrim(dir.path(), &["ls"]);
    assert!(o.status.success(), "{}", show(&o));
    let t = text(&o.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].contains("PID") && lines[0].contains("PPID") && lines[0].contains("LIVE") && lines[0].contains("RELEASED"), "{t}");
    let row = |pid: u32| lines.iter().position(|l| l.split_whitespace().next() == Some(&pid.to_string())).unwrap_or_else(|| panic!("no row for {pid}:\n{t}"));
    let (p, a, b) = (row(parent), row(kids[0]), row(kids[1]));
    assert!(a > p && b > p && a.max(b) == p + 2, "children not right under the parent:\n{t}");
    assert!(lines[a].contains("─ python") && lines[b].contains("─ python"), "children not drawn as branches:\n{t}");
    assert!(lines[p].contains("MiB") || lines[p].contains("KiB"), "human units:\n{t}");
    // sorted JSON
    let (v, _) = ls_json(dir.path(), &["--sort", "live"]);
    let lives: Vec<i64> = v.iter().map(|j| j.int("live_bytes")).collect();
    assert!(lives.windows(2).all(|w| w[0] >= w[1]), "--sort live: {lives:?}");
    let bad = memtrim(dir.path(), &["ls", "--sort", "colour"]);
    assert_eq!(bad.status.code(), Some(2));

    h.cmd("reap");
    wait_for("the children's pages to be unlinked at their exit", Duration::from_secs(10), || {
        let left: Vec<String> = kids.iter().flat_map(|k| dir.pages_of(*k)).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("left: {left:?}")) }
    });
    h.exit();
}

/// A gunicorn master and its workers (forked) under the library: `ls --json` lists the
/// workers with the master as ppid.
#[test]
fn ls_lists_gunicorn_master_and_workers() {
    if !require_tool("gunicorn") {
        return;
    }
    let Some(py) = python() else { return };
    let dir = TempDir::new("gunicorn");
    let sock = dir.join("g.sock");
    let mut c = Command::new(py);
    c.args(["-m", "gunicorn", "--workers", "2", "--bind"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--chdir")
        .arg(root().join("tests/py"))
        .arg("page_wsgi:app")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    under_library(&mut c, dir.path(), 100);
    let mut master = Proc(c.spawn().expect("gunicorn starts"));
    let mpid = master.pid() as i64;
    let mut listed = |what: &str, want: usize| {
        wait_for(what, Duration::from_secs(30), || {
            if let Ok(Some(st)) = master.0.try_wait() {
                panic!("gunicorn exited: {st}");
            }
            let (v, _) = ls_json(dir.path(), &[]);
            let workers = v.iter().filter(|j| j.int("ppid") == mpid).count();
            let has_master = v.iter().any(|j| j.int("pid") == mpid);
            if (has_master || want == 2) && workers == want { Ok(v) } else { Err(format!("master {has_master}, workers {workers}: {v:?}")) }
        })
    };
    // The workers' event loops allocate as they wake, so their workers start; an idle master may
    // allocate nothing after its start-up, and then has no worker thread (hence no page) until it
    // does something: here, start a third worker (TTIN).
    listed("the 2 gunicorn workers in `ls --json`", 2);
    // SAFETY: signals our own child, by pid.
    unsafe { libc::kill(mpid as i32, libc::SIGTTIN) };
    let list = listed("the gunicorn master and 3 workers in `ls --json`", 3);
    for j in &list {
        check_contract(j);
    }
    let o = memtrim(dir.path(), &["ls"]);
    let t = text(&o.stdout);
    eprintln!("{t}");
    assert_eq!(t.lines().filter(|l| l.contains("─ ")).count(), 3, "three workers drawn under the master:\n{t}");
    // graceful stop: every page goes with its process
    // SAFETY: signals our own child, by pid.
    unsafe { libc::kill(master.pid() as i32, libc::SIGTERM) };
    let st = master.0.wait().unwrap();
    eprintln!("gunicorn stopped: {st}");
    wait_for("no page left after gunicorn stopped", Duration::from_secs(10), || {
        let left: Vec<PathBuf> = common::page_files(dir.path()).into_iter().map(|c| c.0).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("left: {left:?}")) }
    });
}

/// kill -9 leaves the page behind: the process is not listed (neither as a zombie nor after
/// being reaped), `ls --all` and `stat` say it is gone, `clean` removes exactly that page and
/// keeps the live one.
#[test]
fn killed_process_page_is_gone_and_cleaned() {
    let dir = TempDir::new("kill9");
    let Some(mut victim) = Host::start(dir.path()) else { return };
    let Some(other) = Host::start(dir.path()) else { return };
    let (vp, op) = (victim.pid(), other.pid());
    fresh_stat(dir.path(), vp, 0);
    fresh_stat(dir.path(), op, 0);
    let page = dir.pages_of(vp);
    assert_eq!(page.len(), 1);
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(vp as i32, libc::SIGKILL) };
    wait_for("the killed host to be a zombie", Duration::from_secs(10), || match proc_state(vp) {
        Some('Z') => Ok(()),
        s => Err(format!("state {s:?}")),
    });
    let check_not_listed = |when: &str| {
        let (v, err) = ls_json(dir.path(), &[]);
        let pids: Vec<i64> = v.iter().map(|j| j.int("pid")).collect();
        assert!(!pids.contains(&(vp as i64)), "{when}: the killed process is listed as live: {pids:?}");
        assert!(pids.contains(&(op as i64)), "{when}: the live one is missing: {pids:?}");
        assert!(err.contains("1 gone"), "{when}: stderr does not mention the gone page: {err}");
        assert_eq!(err.lines().count(), 1, "{when}: one line on stderr: {err}");
    };
    check_not_listed("zombie");
    let _ = victim.io.proc.0.wait();
    check_not_listed("reaped");
    let (all, _) = ls_json(dir.path(), &["--all"]);
    let gone = all.iter().find(|j| j.int("pid") == vp as i64).expect("ls --all lists the gone page");
    assert_eq!(gone.str("state"), "gone");
    let o = memtrim(dir.path(), &["stat", &vp.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("gone"), "{}", show(&o));
    let o = memtrim(dir.path(), &["trim", &vp.to_string(), "--timeout", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    let o = memtrim(dir.path(), &["clean", "--dry-run"]);
    assert!(o.status.success() && text(&o.stdout).contains("would remove 1 stale page"), "{}", show(&o));
    assert_eq!(dir.pages_of(vp), page, "--dry-run removed something");
    let o = memtrim(dir.path(), &["clean"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("removed 1 stale page"), "{}", show(&o));
    assert!(dir.pages_of(vp).is_empty(), "the stale page is still there");
    assert_eq!(dir.pages_of(op).len(), 1, "clean removed a live page");
    let (v, err) = ls_json(dir.path(), &[]);
    assert_eq!(v.len(), 1);
    assert!(err.is_empty(), "stderr after clean: {err}");
    other.exit();
}

/// The limit's claim files (`stagger.PID.START`, one per master of recycled workers): `clean`
/// removes those of masters that are gone, keeps a live master's, and leaves a symlink with such
/// a name alone.
#[test]
fn clean_removes_claim_files_of_gone_masters() {
    let dir = TempDir::new("claims");
    let udir = common::user_dir(dir.path(), common::euid());
    std::fs::create_dir(&udir).unwrap();
    std::fs::set_permissions(&udir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let me = std::process::id();
    let live = udir.join(format!("stagger.{me}.{}", start_ticks(me)));
    let gone = udir.join(format!("stagger.{me}.{}", start_ticks(me) + 1));
    let link = udir.join(format!("stagger.{me}.{}", start_ticks(me) + 2));
    std::fs::write(&live, "1").unwrap();
    std::fs::write(&gone, "1").unwrap();
    std::os::unix::fs::symlink(&live, &link).unwrap();
    let o = memtrim(dir.path(), &["clean", "--dry-run"]);
    assert!(o.status.success() && text(&o.stdout).contains("would remove 1 claim file of gone masters or old budgets"), "{}", show(&o));
    assert!(gone.exists(), "--dry-run removed it");
    let o = memtrim(dir.path(), &["clean"]);
    assert!(o.status.success() && text(&o.stdout).contains("removed 1 claim file of gone masters or old budgets"), "{}", show(&o));
    assert!(!gone.exists(), "the gone master's claim file is still there: {}", show(&o));
    assert!(live.exists(), "clean removed a live master's claim file");
    assert!(std::fs::symlink_metadata(&link).is_ok(), "clean removed a symlink");
    assert!(text(&o.stderr).contains("left alone"), "{}", show(&o));
}

/// A process that execs a program without the library keeps its pid and start time, but no
/// longer maps or updates its page: after a few intervals `ls` stops listing it, `stat` says
/// why, `clean` removes the page and the process runs on. A stopped process (SIGSTOP) does not
/// update its page either, but still maps it: it stays listed and its page stays.
#[test]
fn page_left_by_exec_is_abandoned_but_a_stopped_process_keeps_its_own() {
    let dir = TempDir::new("exec");
    let Some(mut ex) = Host::start(dir.path()) else { return };
    let Some(stopped) = Host::start(dir.path()) else { return };
    let (ep, sp) = (ex.pid(), stopped.pid());
    fresh_stat(dir.path(), ep, 0);
    fresh_stat(dir.path(), sp, 0);
    ex.io.send("exec");
    wait_for("the host to exec sleep", Duration::from_secs(10), || {
        let comm = std::fs::read_to_string(format!("/proc/{ep}/comm")).unwrap_or_default();
        if comm.trim() == "sleep" { Ok(()) } else { Err(comm) }
    });
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(sp as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let err = wait_for("the exec'd process to leave `ls`", Duration::from_secs(20), || {
        let (v, err) = ls_json(dir.path(), &[]);
        if v.iter().any(|j| j.int("pid") == ep as i64) { Err(format!("still listed after {:?}", t.elapsed())) } else { Ok(err) }
    });
    eprintln!("abandoned page recognised after {:?}: {err}", t.elapsed());
    assert!(err.contains("1 abandoned"), "{err}");
    std::thread::sleep(Duration::from_millis(500));
    let (v, _) = ls_json(dir.path(), &[]);
    let s = v.iter().find(|j| j.int("pid") == sp as i64).expect("the stopped process is still listed");
    assert!(now_ms() as i64 - s.int("updated_at") > 2300, "the stopped process's page was updated: the check proved nothing");
    let o = memtrim(dir.path(), &["stat", &ep.to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("exec"), "{}", show(&o));
    let o = memtrim(dir.path(), &["clean"]);
    assert!(o.status.success() && text(&o.stdout).contains("removed 1 stale page"), "{}", show(&o));
    assert!(dir.pages_of(ep).is_empty(), "the abandoned page is still there");
    assert_eq!(dir.pages_of(sp).len(), 1, "clean removed the stopped process's page");
    assert!(matches!(proc_state(ep), Some('S' | 'R')), "the exec'd process was harmed");
    // SAFETY: as above.
    unsafe { libc::kill(sp as i32, libc::SIGCONT) };
    stopped.exit();
}

/// Garbage with page names, for live processes: random bytes, another layout version, a short
/// file, a page that names another process, a broken check word, a FIFO (must not block), a
/// directory. None crashes or hangs the CLI, none is listed, all are summed up on one stderr
/// line; a good crafted page next to them is listed (with its process's hostile comm escaped).
#[test]
fn corrupt_and_odd_pages_are_skipped() {
    let dir = TempDir::new("corrupt");
    // The comm the CLI shows is the kernel's: the last process runs `sleep` under a name that
    // would be an escape sequence on a terminal.
    let hostile = b"a\"b\\\x1b[31mc";
    let mut procs: Vec<Proc> = (0..7).map(|_| sleeper()).collect();
    procs.push(common::sleeper_named(hostile));
    let names: Vec<(u32, u64, PathBuf)> = procs
        .iter()
        .map(|p| {
            let (pid, st) = (p.pid(), start_ticks(p.pid()));
            (pid, st, page_file(dir.path(), pid, st))
        })
        .collect();
    // 0: random bytes
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..FILE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write_page(&names[0].2, &noise);
    // 1: layout version 99
    let mut p = crafted_page(names[1].0, names[1].1, b"future", |_| {});
    p[8..12].copy_from_slice(&99u32.to_ne_bytes());
    write_page(&names[1].2, &p);
    // 2: short file
    write_page(&names[2].2, &crafted_page(names[2].0, names[2].1, b"short", |_| {})[..100]);
    // 3: a page that says it is pid 1
    write_page(&names[3].2, &crafted_page(1, names[3].1, b"liar", |_| {}));
    // 4: a word changed outside the seqlock
    let mut p = crafted_page(names[4].0, names[4].1, b"torn", |_| {});
    let live_at = core::mem::offset_of!(Page, stats) + core::mem::offset_of!(Stats, live_bytes);
    p[live_at] ^= 1;
    write_page(&names[4].2, &p);
    // 5: a FIFO
    let c = std::ffi::CString::new(names[5].2.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // 6: a directory
    std::fs::create_dir(&names[6].2).unwrap();
    // 7: a good page
    plant_page(dir.path(), names[7].0, names[7].1, b"claimed", |_| {});

    let o = memtrim(dir.path(), &["ls", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let v = Json::parse(text(&o.stdout).trim()).unwrap_or_else(|e| panic!("{e}\n{}", show(&o)));
    let v = v.array();
    assert_eq!(v.len(), 1, "only the good page is listed: {v:?}");
    assert_eq!(v[0].int("pid"), names[7].0 as i64);
    assert_eq!(v[0].str("comm").as_bytes(), hostile, "comm round-trips through JSON escaping");
    assert_eq!(v[0].int("live_bytes"), 12345);
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "one stderr line: {err}");
    assert!(err.contains("skipped 7 pages"), "{err}");
    for word in ["another layout version", "corrupt", "torn", "not regular"] {
        assert!(err.contains(word), "stderr does not say {word:?}: {err}");
    }
    let o = memtrim(dir.path(), &["ls"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!o.stdout.contains(&0x1b), "an escape byte reached the terminal output:\n{}", show(&o));
    for (i, (pid, _, _)) in names.iter().enumerate().take(7) {
        let o = memtrim(dir.path(), &["stat", &pid.to_string()]);
        assert_eq!(o.status.code(), Some(1), "stat of bad page {i}:\n{}", show(&o));
    }
    let o = memtrim(dir.path(), &["clean"]);
    assert!(o.status.success() && text(&o.stdout).contains("removed 0 stale pages"), "{}", show(&o));
    assert!(names.iter().all(|n| n.2.exists()), "clean removed a page of a live process");
}

/// A symlink with a page's name is never followed, neither by the CLI (ls, stat, trim, clean)
/// nor by the library when it creates its page where one was planted (the name is known in
/// advance: pid and start time of a shell that waits before it execs the preloaded program).
#[test]
fn planted_symlinks_are_not_followed() {
    let dir = TempDir::new("symlink");
    let outside = TempDir::new("symlink-target");
    // CLI side: a valid page outside the directory, linked in under a live process's name.
    let s = sleeper();
    let st = start_ticks(s.pid());
    let target = outside.join("real-page");
    let bytes = crafted_page(s.pid(), st, b"followed", |_| {});
    write_page(&target, &bytes);
    let link = page_file(dir.path(), s.pid(), st);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (v, err) = ls_json(dir.path(), &[]);
    assert!(v.is_empty(), "a symlinked page was listed: {v:?}");
    assert!(err.contains("not regular"), "{err}");
    let o = memtrim(dir.path(), &["stat", &s.pid().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = memtrim(dir.path(), &["trim", &s.pid().to_string(), "--timeout", "0.5"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(std::fs::read(&target).unwrap(), bytes, "the symlink's target was written to");
    drop(s);
    let o = memtrim(dir.path(), &["clean"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(target.exists() && std::fs::read(&target).unwrap() == bytes, "clean touched the symlink's target");
    std::fs::remove_file(&link).unwrap();

    // Library side: a shell (not preloaded) waits on stdin, then execs a preloaded sleep that
    // keeps the shell's pid and start time, so the page name is known before the library runs.
    let victim = outside.join("victim");
    std::fs::write(&victim, b"victim\n").unwrap();
    let dangling = outside.join("would-be-created");
    let mut shells = Vec::new();
    for target in [&victim, &dangling] {
        let mut c = Command::new("sh");
        c.args(["-c", "read _ && export LD_PRELOAD=\"$MT_LIB\" && exec \"$MT_SLEEP\" 300"])
            .env("MT_LIB", lib())
            .env("MT_SLEEP", common::idle_sleep())
            .stdin(Stdio::piped());
        under_library(&mut c, dir.path(), 100).env_remove("LD_PRELOAD");
        let mut p = Proc(c.spawn().unwrap());
        let pid = p.pid();
        let name = page_file(dir.path(), pid, start_ticks(pid));
        std::os::unix::fs::symlink(target, &name).unwrap();
        writeln!(p.0.stdin.take().unwrap()).unwrap();
        shells.push((p, name));
    }
    for (p, name) in &shells {
        let j = wait_for("the preloaded sleep's page", Duration::from_secs(15), || stat_json(dir.path(), p.pid()));
        assert_eq!(j.str("comm"), "sleep");
        let md = std::fs::symlink_metadata(name).unwrap();
        assert!(md.file_type().is_file(), "the page at {} is not a regular file", name.display());
        assert_eq!(md.permissions().mode() & 0o777, 0o600, "page mode");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim\n", "the library wrote through a planted symlink");
    assert!(!dangling.exists(), "the library created the target of a dangling planted symlink");
}

fn setpriv_nobody() -> Option<Command> {
    common::setpriv_as("nobody", "nogroup")
}

/// Another user (nobody) can neither read a page (`stat` fails, `ls` lists nothing, the file
/// itself cannot be opened) nor ask for a release (`trim` fails and the process's request
/// counter does not move).
#[test]
fn another_user_can_neither_read_nor_trim() {
    if setpriv_nobody().is_none() {
        return;
    }
    let dir = TempDir::new("nobody");
    let Some(h) = Host::start(dir.path()) else { return };
    let pid = h.pid();
    let before = fresh_stat(dir.path(), pid, 0);
    let page = dir.join(&dir.pages_of(pid)[0]);
    let as_nobody = |args: &[&str]| -> Output {
        let mut c = setpriv_nobody().unwrap();
        c.arg(common::cli()).args(args).env("MEMTRIM_SHM_DIR", dir.path()).env_remove("LD_PRELOAD").stdin(Stdio::null());
        c.output().unwrap()
    };
    // nobody must be able to run the CLI and reach the directory, or the test proves nothing
    let mut c = setpriv_nobody().unwrap();
    let o = c.args(["sh", "-c", "test -x \"$0\" && test -x \"$1\" && test -r \"$1\""]).arg(common::cli()).arg(dir.path()).output().unwrap();
    if !o.status.success() {
        eprintln!("SKIP: nobody cannot run {} or read {} (a parent directory is closed to other users)", common::cli().display(), dir.path().display());
        return;
    }
    let pid_s = pid.to_string();
    for args in [vec!["stat", pid_s.as_str()], vec!["stat", pid_s.as_str(), "--json"]] {
        let o = as_nobody(&args);
        assert_eq!(o.status.code(), Some(1), "nobody: memtrim {args:?}\n{}", show(&o));
        assert!(o.stdout.is_empty(), "nobody read something:\n{}", show(&o));
        assert!(text(&o.stderr).contains("uid 0"), "no clear message:\n{}", show(&o));
    }
    let o = as_nobody(&["ls", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), "[]", "nobody lists root's process:\n{}", show(&o));
    assert!(text(&o.stderr).contains("other users"), "{}", show(&o));
    let o = as_nobody(&["trim", &pid_s, "--timeout", "2"]);
    assert_eq!(o.status.code(), Some(1), "nobody: memtrim trim\n{}", show(&o));
    assert!(text(&o.stderr).contains("permission denied"), "{}", show(&o));
    let o = as_nobody(&["trim", "--all", "--timeout", "2"]);
    assert!(!text(&o.stdout).contains("released"), "{}", show(&o));
    // the file itself, not only the CLI's refusal: 0600 keeps nobody out
    let mut c = setpriv_nobody().unwrap();
    let o = c.args(["sh", "-c", "cat \"$0\" > /dev/null; echo read=$?; (true >> \"$0\"); echo write=$?"]).arg(&page).output().unwrap();
    let t = text(&o.stdout);
    assert!(t.contains("read=1") && t.contains("write=") && !t.contains("write=0"), "nobody could open the page:\n{}", show(&o));
    // nothing was requested: the worker published since, with the same request count
    let after = fresh_stat(dir.path(), pid, now_ms() + 150);
    assert_eq!(requests(&after), requests(&before), "another user's request reached the process");
    assert_eq!(std::fs::metadata(&page).map(|m| m.permissions().mode() & 0o777).unwrap(), 0o600);
    h.exit();
}

/// `memtrim trim PID` makes the worker release once (request counter +1) and reports what the
/// page reports; `--all` asks every process; a page nobody serves times out with a message.
#[test]
fn trim_asks_the_worker_to_release() {
    let dir = TempDir::new("trim");
    let Some(mut h) = Host::start(dir.path()) else { return };
    let Some(h2) = Host::start(dir.path()) else { return };
    let pid = h.pid();
    h.cmd("frag");
    let before = fresh_stat(dir.path(), pid, 0);
    let t = Instant::now();
    let o = memtrim(dir.path(), &["trim", &pid.to_string()]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    eprintln!("{out}");
    assert!(took < Duration::from_secs(5), "trim took {took:?}");
    let after = stat_json(dir.path(), pid).unwrap();
    assert_eq!(requests(&after), requests(&before) + 1, "one release on request:\n{before:?}\n{after:?}");
    assert!(after.int("trims") > before.int("trims"));
    assert_eq!(after.str("last_reason"), "request");
    let reported: i64 =
        out.split('(').nth(2).and_then(|s| s.split(" B)").next()).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no byte count in {out:?}"));
    assert_eq!(reported, after.int("released_bytes") - before.int("released_bytes"), "reported release differs from the page");
    assert!(out.contains(&format!("pid {pid} (python")) && out.contains(" ms"), "{out}");

    let b1 = stat_json(dir.path(), pid).unwrap();
    let b2 = fresh_stat(dir.path(), h2.pid(), 0);
    let o = memtrim(dir.path(), &["trim", "--all"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("2 processes released"), "{}", show(&o));
    assert_eq!(requests(&stat_json(dir.path(), pid).unwrap()), requests(&b1) + 1);
    assert_eq!(requests(&stat_json(dir.path(), h2.pid()).unwrap()), requests(&b2) + 1);

    // a page with no worker behind it: the request is never served
    let s = sleeper();
    let st = start_ticks(s.pid());
    plant_page(dir.path(), s.pid(), st, b"deaf", |_| {});
    let t = Instant::now();
    let o = memtrim(dir.path(), &["trim", &s.pid().to_string(), "--timeout", "0.5"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stderr).contains("timed out"), "{}", show(&o));
    assert!(t.elapsed() >= Duration::from_millis(500) && t.elapsed() < Duration::from_secs(5), "timeout took {:?}", t.elapsed());
    h.exit();
    h2.exit();
}

/// `memtrim top` in an 80x24 tmux pane: shows the process's row, resorts on a key, quits on q
/// (and on SIGTERM) with the terminal restored.
#[test]
fn top_in_tmux_shows_rows_and_quits_on_q() {
    if !require_tool("tmux") {
        return;
    }
    let dir = TempDir::new("top");
    let Some(mut h) = Host::start(dir.path()) else { return };
    let pid = h.pid();
    h.cmd("alloc 20");
    fresh_stat(dir.path(), pid, 0);
    for (way, expect) in [("q", "top-exit=0"), ("SIGTERM", "top-exit=143")] {
        let tmux = Tmux::new(&format!("top-{}", way.to_lowercase()));
        let script = format!(
            "'{}' top --dir '{}' --delay 0.2; echo top-exit=$?; stty -a | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo; sleep 60",
            common::cli().display(),
            dir.path().display()
        );
        let o = tmux.cmd(&["new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "sh", "-c", &script]);
        assert!(o.status.success(), "tmux new-session: {}", show(&o));
        let screen = wait_for("top to show the host's row", Duration::from_secs(10), || {
            let s = tmux.capture();
            let row = s.lines().any(|l| l.split_whitespace().next() == Some(&pid.to_string()) && l.contains("python"));
            if row && s.contains("memtrim top") { Ok(s) } else { Err(s) }
        });
        eprintln!("{screen}");
        assert!(screen.lines().all(|l| l.chars().count() <= 80), "a line is wider than 80 columns:\n{screen}");
        for col in ["PID", "COMMAND", "LIVE", "RSS", "RETAINED"] {
            assert!(screen.contains(col), "column {col} missing at 80 columns:\n{screen}");
        }
        assert!(screen.contains("Live") && screen.contains("q quit"), "header totals and key help:\n{screen}");
        if way == "q" {
            tmux.cmd(&["send-keys", "-t", "t", "l"]);
            wait_for("sort by live", Duration::from_secs(5), || {
                let s = tmux.capture();
                if s.contains("sort: live") { Ok(()) } else { Err(s) }
            });
            tmux.cmd(&["send-keys", "-t", "t", "q"]);
        } else {
            let top_pid = find_pid_with_arg(&dir.path().display().to_string(), "top").expect("memtrim top's pid");
            // SAFETY: the memtrim top this test started (found by its unique --dir argument).
            unsafe { libc::kill(top_pid, libc::SIGTERM) };
        }
        let after = wait_for(&format!("top to exit on {way}"), Duration::from_secs(5), || {
            let s = tmux.capture();
            if s.contains("top-exit=") && s.contains("icanon") { Ok(s) } else { Err(s) }
        });
        assert!(after.contains(expect), "exit status on {way}:\n{after}");
        let modes = after.lines().find(|l| l.contains("icanon")).unwrap();
        assert!(modes.split_whitespace().any(|w| w == "icanon") && modes.split_whitespace().any(|w| w == "echo"), "terminal not restored after {way}: {modes}");
        assert!(!after.contains("q quit"), "top's screen stayed (alternate screen not left):\n{after}");
    }
    h.exit();
}

/// The pid of a process whose command line holds `arg` and `word` (our own memtrim top).
fn find_pid_with_arg(arg: &str, word: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()? {
        let Ok(e) = e else { continue };
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let words: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if words.contains(&arg.as_bytes()) && words.contains(&word.as_bytes()) && words.first().is_some_and(|w| w.ends_with(b"memtrim")) {
            return Some(pid);
        }
    }
    None
}

/// A process named with Unicode bidirectional controls (U+202E reverses what follows it on a
/// terminal that honours it, making a row's figures read otherwise): `ls` and `stat` print none
/// of them.
#[test]
fn bidi_controls_in_a_process_name_are_not_printed() {
    let dir = TempDir::new("bidi");
    let p = common::sleeper_named("\u{202e}ab\u{2066}c\u{200f}".as_bytes());
    let (pid, st) = (p.pid(), start_ticks(p.pid()));
    plant_page(dir.path(), pid, st, b"x", |_| {});
    for args in [vec!["ls"], vec!["stat", &pid.to_string()]] {
        let args: Vec<&str> = args.iter().map(|s| &**s).collect();
        let o = memtrim(dir.path(), &args);
        let out = text(&o.stdout);
        assert!(out.contains(&pid.to_string()), "{args:?} does not show the process:\n{}", show(&o));
        for c in ['\u{202e}', '\u{2066}', '\u{200f}'] {
            assert!(!out.contains(c), "{args:?} prints {:?} of the process's name:\n{}", c, show(&o));
        }
    }
}
