//! Prefork servers for the tests that load them (tests/servers.rs, tests/limits.rs): gunicorn
//! with the Django app of tests/apps/djangoapp.py and puma with tests/apps/rackapp.ru, started
//! under the library in their own process group on a loopback port, with a private page
//! directory; HTTP/1.0 requests to them; their workers in /proc.

use super::{TUNING, TempDir, on_ci, preloaded, python, read_page, require_tool, root, target_dir, text, without_env};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Workers of every server the tests start.
pub const WORKERS: usize = 3;

/// The real python3 (see `python`) if it has gunicorn and django; on CI their absence fails.
pub fn python_with_django() -> Option<String> {
    if !require_tool("gunicorn") {
        return None;
    }
    let python = python()?;
    static IMPORTS: OnceLock<Result<(), String>> = OnceLock::new();
    let r = IMPORTS.get_or_init(|| {
        let o = Command::new(python).args(["-c", "import gunicorn, django"]).output().map_err(|e| e.to_string())?;
        if o.status.success() { Ok(()) } else { Err(text(&o.stderr)) }
    });
    match r {
        Ok(()) => Some(python.to_string()),
        Err(e) => {
            assert!(!on_ci(), "python3 with gunicorn and django is required on CI: {e}");
            eprintln!("SKIP: python3 cannot import gunicorn and django: {e}");
            None
        }
    }
}

/// APP_DATA with the rows (`djangoapp.py init`), made once in the target directory and reused
/// by every test binary.
pub fn app_data() -> Option<PathBuf> {
    static DATA: OnceLock<Option<PathBuf>> = OnceLock::new();
    DATA.get_or_init(|| {
        let python = python_with_django()?;
        let target = target_dir();
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

/// A server in its own process group, killed (the whole group) when dropped. Its stdout and
/// stderr go to server.out and server.err of a private directory, its pages to shm/ in it.
pub struct Server {
    child: Child,
    pub port: u16,
    pub shm: PathBuf,
    dir: TempDir,
}

impl Server {
    /// Starts `cmd` (listening on `port`) under the library with no tuning of the test's own
    /// environment, `env` instead, and APP_DATA; returns once WORKERS workers have their pages
    /// and /health answers 200.
    pub fn start(tag: &str, mut cmd: Command, port: u16, env: &[(&str, &str)]) -> Server {
        let dir = TempDir::new(tag);
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        without_env(&mut cmd, TUNING)
            .env("MEMTRIM_SHM_DIR", &shm)
            .envs(env.iter().copied())
            .env("APP_DATA", app_data().expect("app data"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(root().join("tests/apps"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("server.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("server.err")).unwrap())
            .process_group(0);
        let child = preloaded(&mut cmd).spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut s = Server { child, port, shm, dir };
        s.wait_ready();
        s
    }

    pub fn master(&self) -> u32 {
        self.child.id()
    }

    /// Where its stdout and its stderr (the library's lines) go.
    pub fn log_files(&self) -> [PathBuf; 2] {
        [self.dir.join("server.out"), self.dir.join("server.err")]
    }

    /// stdout then stderr: the server's log and the library's lines.
    pub fn logs(&self) -> String {
        self.log_files().iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect()
    }

    pub fn workers(&self) -> Vec<u32> {
        children(self.master())
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the server exited with {st} before it was ready:\n{}", self.logs());
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the server is not ready in 60 s:\n{}", self.logs());
            let w = self.workers();
            if w.len() == WORKERS && w.iter().all(|&p| read_page(&self.shm, p).is_some()) && get(self.port, "/health").is_ok_and(|(st, _)| st == 200) {
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

/// Live (not zombie) children of `pid`.
/// puma in cluster mode serving tests/apps/rackapp.ru on `port`: WORKERS workers of 4 threads;
/// None (the test returns) where puma, ruby or the app data are missing.
pub fn puma_command(port: u16, preload: bool) -> Option<Command> {
    if !require_tool("puma") || !require_tool("ruby") || python_with_django().is_none() {
        return None;
    }
    let mut cmd = Command::new("puma");
    cmd.args(["-w", &WORKERS.to_string(), "-t", "4:4", "-e", "production", "-b", &format!("tcp://127.0.0.1:{port}")]);
    if preload {
        cmd.arg("--preload");
    }
    cmd.arg(root().join("tests/apps/rackapp.ru"));
    Some(cmd)
}

pub fn children(pid: u32) -> Vec<u32> {
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

/// Whether `pid` exists and is not a zombie.
pub fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rfind(')').and_then(|i| s[i + 2..].split_whitespace().next()) != Some("Z"))
}

/// One HTTP/1.0 GET on a new connection: (status, body).
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
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

/// A number field of the apps' JSON bodies (`"pid": N` or `"pid":N`).
pub fn body_u64(body: &[u8], field: &str) -> Option<u64> {
    let t = text(body);
    let key = format!("\"{field}\":");
    let at = t.find(&key)? + key.len();
    t[at..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
}

/// What a load got: requests answered whole, failures, and requests per worker pid.
#[derive(Default)]
pub struct Tally {
    pub ok: usize,
    pub failed: Vec<String>,
    pub per_worker: BTreeMap<u32, usize>,
}

impl Tally {
    /// Counts the answer to `GET path` for `limit` rows: 200 with a whole page of them (and the
    /// worker's pid) is ok, anything else a failure.
    pub fn count(&mut self, path: &str, limit: u64, r: std::io::Result<(u16, Vec<u8>)>) {
        match r {
            Ok((200, body)) if body.ends_with(b"]}") && body.len() as u64 > limit * 100 => {
                self.ok += 1;
                if let Some(pid) = body_u64(&body, "pid") {
                    *self.per_worker.entry(pid as u32).or_default() += 1;
                }
            }
            Ok((st, body)) => self.failed.push(format!("{path}: status {st}, {} bytes: {:?}", body.len(), text(&body[..body.len().min(200)]))),
            Err(e) => self.failed.push(format!("{path}: {e}")),
        }
    }
}
