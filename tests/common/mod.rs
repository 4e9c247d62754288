//! What the integration tests share: where the built artefacts are, compiling the C programs,
//! running commands (with the library preloaded, with a time limit, driven over stdin and
//! stdout), private directories, the stats pages and the CLI, a JSON reader, requiring
//! tools on CI, and (in `servers`) the prefork servers some tests load.
#![allow(dead_code)] // each test binary uses a different part of this module

mod json;
pub mod servers;

pub use json::{Json, JsonExt};
use memtrim_common::page::{FILE_BYTES, Page, ReadError, Reason, Stats, dir_name, file_name, parse_dir_name, parse_file_name};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// The preloadable library of the same profile as the running test.
pub fn lib() -> PathBuf {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let p = target_dir().join(profile).join("libmemtrim.so");
    assert!(p.exists(), "{} is missing: run `cargo build --release` first", p.display());
    p
}

/// The `memtrim` CLI of the same profile (crates/cli, built by `cargo build --workspace`).
pub fn cli() -> PathBuf {
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let p = target_dir().join(profile).join("memtrim");
    assert!(p.exists(), "{} is missing: run `cargo build --release --workspace` first", p.display());
    p
}

/// The release artefacts scripts/package made (the portable build, the wheel, the .deb).
pub fn dist() -> PathBuf {
    let d = target_dir().join("dist");
    assert!(d.join("libmemtrim.so").exists(), "{} has no libmemtrim.so: run scripts/package first", d.display());
    d
}

pub fn on_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether `tool` is on PATH. On CI (CI=true) a missing tool fails the test instead of
/// skipping it; elsewhere the skip is printed.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().map(|o| o.status.success()).unwrap_or(false);
    if !found {
        assert!(!on_ci(), "{tool} is required on CI but missing");
        eprintln!("SKIP: {tool} not installed");
    }
    found
}

/// A command prefix that runs as `user` (group `group`, no supplementary groups) with setpriv;
/// None (the test skips, with the reason printed) without setpriv or without root.
pub fn setpriv_as(user: &str, group: &str) -> Option<Command> {
    if !require_tool("setpriv") {
        return None;
    }
    if euid() != 0 {
        eprintln!("SKIP: switching to {user} needs root");
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args([&format!("--reuid={user}"), &format!("--regid={group}"), "--clear-groups"]);
    Some(c)
}

/// The uid of `user` (from /etc/passwd).
pub fn uid_of(user: &str) -> u32 {
    let pw = std::fs::read_to_string("/etc/passwd").unwrap();
    pw.lines().find_map(|l| l.strip_prefix(&format!("{user}:"))?.split(':').nth(1)?.parse().ok()).unwrap_or_else(|| panic!("no user {user}"))
}

/// For the tests of a binary that must run one at a time (they time things against the
/// library, or use both cores): hold the guard for the length of the test.
pub fn serial() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles tests/c/NAME (C or C++ by extension) into the target dir, with include/ on the
/// include path; returns the binary.
pub fn compile(name: &str, extra: &[&str]) -> PathBuf {
    let src = root().join("tests/c").join(name);
    let out_dir = target_dir().join("test-programs");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = Path::new(name).file_stem().unwrap().to_str().unwrap();
    let out = out_dir.join(stem);
    let cc = if name.ends_with(".cpp") { "g++" } else { "gcc" };
    // Built beside, then renamed: a test may still run the previous build (ETXTBSY).
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let tmp = out_dir.join(format!("{stem}.{}.{}", std::process::id(), BUILDS.fetch_add(1, Ordering::Relaxed)));
    let st = Command::new(cc)
        .args(["-O1", "-g", "-Wall", "-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg(format!("-I{}", root().join("include").display()))
        .args(extra)
        .args(["-ldl"])
        .status()
        .expect("compiler runs");
    assert!(st.success(), "{cc} failed on {}", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// `sleep` for the tests that want a long-lived process under the library: tests/c/sleep.c,
/// which allocates as it wakes (the worker starts on an allocation), under the name `sleep`.
pub fn idle_sleep() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| compile("sleep.c", &[])).clone()
}

/// The backend the tests run against: TEST_ALLOCATOR (glibc or jemalloc; scripts/test
/// runs the suite once with each).
pub fn allocator() -> String {
    std::env::var("TEST_ALLOCATOR").unwrap_or_else(|_| "glibc".into())
}

/// `cmd` with the library preloaded in front of any LD_PRELOAD it already has, on the backend
/// under test.
pub fn preloaded(cmd: &mut Command) -> &mut Command {
    cmd.env("MEMTRIM_ALLOCATOR", allocator());
    start_at_first_allocation(cmd);
    let mut preload = lib().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        preload.push(":");
        preload.push(old);
    }
    cmd.env("LD_PRELOAD", preload)
}

/// `cmd` without the variables of the test's own environment whose names start with one of
/// `prefixes` (MEMTRIM_ settings, say, that would change what the test measures).
pub fn without_env<'a>(cmd: &'a mut Command, prefixes: &[&str]) -> &'a mut Command {
    for (k, _) in std::env::vars_os() {
        if prefixes.iter().any(|p| k.to_string_lossy().starts_with(p)) {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// What tunes the library or the allocators: a test that measures them removes these.
pub const TUNING: &[&str] = &["MEMTRIM_", "MALLOC_", "PYTHONMALLOC"];

/// `c` under the library (LD_PRELOAD is the library alone), writing its page into `dir` and
/// sampling every `interval_ms`, with no other MEMTRIM_ setting of the test's environment.
pub fn under_library<'a>(c: &'a mut Command, dir: &Path, interval_ms: u32) -> &'a mut Command {
    without_env(c, &["MEMTRIM_"]).env("LD_PRELOAD", lib()).env("MEMTRIM_SHM_DIR", dir).env("MEMTRIM_INTERVAL_MS", interval_ms.to_string());
    start_at_first_allocation(c)
}

/// Tests that watch a host's page want its worker at once, not on the first allocation a second
/// later, which a host waiting idle on its input may never make (tests/lazy_start.rs tests the
/// default): MEMTRIM_START_MS=0, unless the command sets it already.
fn start_at_first_allocation(c: &mut Command) -> &mut Command {
    if !c.get_envs().any(|(k, _)| k == "MEMTRIM_START_MS") {
        c.env("MEMTRIM_START_MS", "0");
    }
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command starts")
}

/// Runs `cmd` with stdout and stderr captured; kills it and fails the test after `limit`.
pub fn run_for(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out_reader = read_all(Box::new(child.stdout.take().unwrap()));
    let err_reader = read_all(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            // descendants may still hold the pipes: do not wait for the readers
            panic!("{what} did not finish in {} s (killed: a hang?)", limit.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    eprintln!("{what}: {status} in {:.1} s", start.elapsed().as_secs_f64());
    Output { status, stdout, stderr }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's status and output, for a failure message.
pub fn show(o: &Output) -> String {
    format!("status {}\n--- stdout\n{}\n--- stderr\n{}", o.status, text(&o.stdout), text(&o.stderr))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Polls `f` every 50 ms until it gives Ok, or fails the test after `limit` with the last Err.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => panic!("timed out after {limit:?} waiting for {what}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A free loopback port (bound, then released: whoever binds it next may find it taken).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Directories and processes.

/// A directory of one test under the target dir (open to other users, 0755, so that a test can
/// switch to `nobody`), named after the test binary, `name` and this process; removed at the
/// end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let binary = module_path!().split("::").next().unwrap_or("test");
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{binary}-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }

    /// The page files (memtrim.PID.START) of `pid`, relative to the directory: in the per-user
    /// directories (memtrim-UID/memtrim.PID.START) and in the flat layout of older libraries.
    pub fn pages_of(&self, pid: u32) -> Vec<String> {
        let mut v: Vec<String> = page_files(&self.0)
            .into_iter()
            .filter(|(_, p, _)| *p == pid)
            .filter_map(|(path, _, _)| path.strip_prefix(&self.0).ok()?.to_str().map(String::from))
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL, by its pid) and reaped when the test ends, however it ends.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines `r` gives, read on a thread of their own as they come.
pub fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A program driven over its stdin and stdout, a command a line and an answer a line (the test
/// hosts of tests/py/, tests/c/report_layout.c); killed when dropped.
pub struct Driven {
    pub proc: Proc,
    pub stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Driven {
    /// Starts `cmd` with its stdin and stdout piped (its stderr as `cmd` says).
    pub fn spawn(cmd: &mut Command) -> Driven {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        Driven { proc: Proc(child), stdin, lines }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The next line it prints, within `limit`; a failure otherwise, with `context()` (what it
    /// said on stderr, say).
    pub fn line(&self, limit: Duration, context: impl FnOnce() -> String) -> String {
        self.lines.recv_timeout(limit).unwrap_or_else(|_| panic!("no line from pid {} within {limit:?}; {}", self.pid(), context()))
    }

    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").and_then(|_| self.stdin.flush()).expect("the program reads commands");
    }

    /// Sends `command`; its answer (within 60 s), which must not be an error.
    pub fn ask(&mut self, command: &str, context: impl FnOnce() -> String) -> String {
        self.send(command);
        let answer = self.line(Duration::from_secs(60), context);
        assert!(!answer.starts_with("error"), "{command}: {answer}");
        answer
    }

    /// Asks it to end (`exit`), gives it 3 s, then kills it.
    pub fn end(&mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.proc.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }
}

/// tmux with its own socket, removed at the end; its session is "t".
pub struct Tmux(String);

impl Tmux {
    pub fn new(name: &str) -> Tmux {
        Tmux(format!("memtrim-test-{name}-{}", std::process::id()))
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.0).args(args).env_remove("TMUX").output().expect("tmux runs")
    }

    pub fn capture(&self) -> String {
        text(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// What `r` (a child's stderr, say) prints, gathered line by line on a thread of its own.
pub fn gathered(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let all = Arc::new(Mutex::new(String::new()));
    let sink = all.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    all
}

/// VmRSS of `pid` in bytes (None once it is gone).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok())?;
    Some(kib * 1024)
}

/// The CPython executable itself (not a pyenv shim, a shell script whose subshells would each
/// get the library and a page), so that the pid a test starts is the interpreter's.
pub fn python() -> Option<&'static str> {
    static PY: OnceLock<Option<String>> = OnceLock::new();
    PY.get_or_init(|| {
        if !require_tool("python3") {
            return None;
        }
        let o = Command::new("python3").args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"]).output().expect("python3 runs");
        assert!(o.status.success(), "python3 does not run: {}", text(&o.stderr));
        Some(text(&o.stdout).trim().to_string())
    })
    .as_deref()
}

/// `sleep 600` without the library, to lend its live (pid, start) to crafted pages.
pub fn sleeper() -> Proc {
    Proc(Command::new("sleep").arg("600").env_remove("LD_PRELOAD").stdin(Stdio::null()).spawn().expect("sleep starts"))
}

/// `sleep 600` without the library whose comm (what /proc, and so the CLI, names it) is `name`
/// (at most 15 bytes, no '/'): it is exec'd through a symlink of that name.
pub fn sleeper_named(name: &[u8]) -> Proc {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("named");
    let alias = dir.path().join(std::ffi::OsStr::from_bytes(name));
    std::os::unix::fs::symlink("/bin/sleep", &alias).unwrap();
    Proc(Command::new(&alias).arg("600").env_remove("LD_PRELOAD").stdin(Stdio::null()).spawn().expect("sleep starts"))
}

/// Start time of a process in clock ticks after boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Pages and the CLI.

/// Runs `memtrim ARGS` with MEMTRIM_SHM_DIR=dir.
pub fn memtrim(dir: &Path, args: &[&str]) -> Output {
    Command::new(cli()).args(args).env("MEMTRIM_SHM_DIR", dir).env_remove("LD_PRELOAD").stdin(Stdio::null()).output().expect("memtrim runs")
}

/// `memtrim stat PID --json`, parsed; Err with what it printed when it fails.
pub fn stat_json(dir: &Path, pid: u32) -> Result<Json, String> {
    let o = memtrim(dir, &["stat", &pid.to_string(), "--json"]);
    if !o.status.success() {
        return Err(show(&o));
    }
    Json::parse(text(&o.stdout).trim()).map_err(|e| format!("bad JSON ({e}):\n{}", show(&o)))
}

/// Every page file in `dir`'s per-user directories, then in `dir` (the flat layout of older
/// libraries, or a name planted there): (path, pid, start ticks).
pub fn page_files(dir: &Path) -> Vec<(PathBuf, u32, u64)> {
    let in_dir = |d: &Path| -> Vec<(PathBuf, u32, u64)> {
        let Ok(rd) = std::fs::read_dir(d) else { return Vec::new() };
        rd.filter_map(Result::ok)
            .filter_map(|e| {
                let (pid, start) = parse_file_name(e.file_name().to_str()?)?;
                Some((e.path(), pid, start))
            })
            .collect()
    };
    let mut v = Vec::new();
    for d in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
        if d.file_name().to_str().and_then(parse_dir_name).is_some() {
            v.extend(in_dir(&d.path()));
        }
    }
    v.extend(in_dir(dir));
    v
}

/// The page file of `pid` in `dir` (or its per-user directories).
pub fn page_path(dir: &Path, pid: u32) -> Option<PathBuf> {
    page_files(dir).into_iter().find(|c| c.1 == pid).map(|c| c.0)
}

/// The per-user page directory of `uid` in `dir`.
pub fn user_dir(dir: &Path, uid: u32) -> PathBuf {
    dir.join(dir_name(uid))
}

/// The test's own euid.
pub fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// The page of `pid` in `dir` once the worker has published it, read with the layout of
/// crates/common (the code the library writes it with).
pub fn read_page(dir: &Path, pid: u32) -> Option<Stats> {
    let path = page_path(dir, pid)?;
    for _ in 0..200 {
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() < core::mem::size_of::<Page>() {
            return None;
        }
        // SAFETY: Page is plain data (integers and atomics); all-zero is a valid value and the
        // copy fills exactly its size from a buffer at least that long.
        let mut page: Box<Page> = Box::new(unsafe { core::mem::zeroed() });
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut *page as *mut Page as *mut u8, core::mem::size_of::<Page>()) };
        match page.read() {
            Ok(s) if s.samples > 0 => return Some(s),
            Ok(_) | Err(ReadError::Torn) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return None,
        }
    }
    None
}

/// The releases a page counts for `r`.
pub fn by(s: &Stats, r: Reason) -> u64 {
    s.releases_by_reason[r as usize]
}

/// A page built with the library's own layout code for (pid, start), as a fresh mapping holds
/// it, then changed by `edit`. Published now, with an interval of 10 minutes (so that it is not
/// taken for abandoned while the test runs).
pub fn crafted_page(pid: u32, start: u64, comm: &[u8], edit: impl FnOnce(&mut Page)) -> Vec<u8> {
    let mut buf = vec![0u64; FILE_BYTES / 8];
    // SAFETY: FILE_BYTES, 8-aligned, zeroed: what a fresh page mapping is.
    let page = unsafe { &mut *(buf.as_mut_ptr() as *mut Page) };
    page.init();
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm);
    page.publish(Stats {
        pid,
        start_ticks: start,
        comm: c,
        live_bytes: 12345,
        heap_bytes: 20000,
        retained_bytes: 7655,
        updated_at_ms: now_ms(),
        interval_ms: 600_000,
        ..Default::default()
    });
    edit(page);
    buf.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// Writes a page file, mode 0600 as the library makes it.
pub fn write_page(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Where the library puts the page of (pid, start) in `dir` when it runs as this test's user:
/// in the per-user directory, created (0700) if missing, as the library does.
pub fn page_file(dir: &Path, pid: u32, start: u64) -> PathBuf {
    let d = user_dir(dir, euid());
    if std::fs::create_dir(&d).is_ok() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    d.join(file_name(pid, start))
}

/// The name of the page of (pid, start) in the flat layout of older libraries (directly in
/// `dir`), which the CLI still reads.
pub fn old_page_file(dir: &Path, pid: u32, start: u64) -> PathBuf {
    dir.join(file_name(pid, start))
}

/// A crafted page (see `crafted_page`) written at `path` (see `page_file`, `old_page_file`).
pub fn plant_page_at(path: &Path, pid: u32, start: u64, comm: &[u8], edit: impl FnOnce(&mut Page)) {
    write_page(path, &crafted_page(pid, start, comm, edit));
}

/// A crafted page (see `crafted_page`) written into `dir` under the name of (pid, start).
pub fn plant_page(dir: &Path, pid: u32, start: u64, comm: &[u8], edit: impl FnOnce(&mut Page)) -> PathBuf {
    let path = page_file(dir, pid, start);
    plant_page_at(&path, pid, start, comm, edit);
    path
}

/// A Python script of tests/py driven over stdin/stdout under the library
/// (host_common.py's `serve`): it says `ready PID` first; its stderr is gathered; its page is in
/// a directory of its own; ended when dropped.
pub struct PyHost {
    pub io: Driven,
    pub stderr: Arc<Mutex<String>>,
    pub pid: u32,
    pub dir: TempDir,
}

impl PyHost {
    pub fn start(python: &str, script: &str, tag: &str, env: &[(&str, &str)]) -> PyHost {
        let dir = TempDir::new(tag);
        let mut cmd = Command::new(python);
        cmd.arg(root().join("tests/py").join(script));
        without_env(&mut cmd, TUNING).env("MEMTRIM_SHM_DIR", &dir.0).envs(env.iter().copied());
        let mut io = Driven::spawn(preloaded(&mut cmd).stderr(Stdio::piped()));
        let stderr = gathered(io.proc.0.stderr.take().unwrap());
        let mut host = PyHost { io, stderr, pid: 0, dir };
        let ready = host.io.line(Duration::from_secs(30), || format!("stderr:\n{}", host.stderr()));
        host.pid = ready.strip_prefix("ready ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("expected `ready PID`, got {ready:?}"));
        host
    }

    pub fn ask(&mut self, command: &str) -> String {
        let stderr = &self.stderr;
        self.io.ask(command, || format!("stderr:\n{}", stderr.lock().unwrap()))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The page once the worker has published it.
    pub fn page(&self) -> Stats {
        wait_for(&format!("a page for pid {} in {}", self.pid, self.dir.0.display()), Duration::from_secs(10), || {
            read_page(&self.dir.0, self.pid).ok_or_else(|| "none yet".to_string())
        })
    }
}

impl Drop for PyHost {
    fn drop(&mut self) {
        self.io.end();
    }
}
