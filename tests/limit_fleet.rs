//! Limits across the workers of one server, against real processes: two sibling workers of one
//! master (tests/py/limit_siblings.py forks them) that cross their MEMTRIM_LIMIT at the same
//! moment are not recycled together: one is signalled, the other defers (its page says until
//! when) and is signalled only once MEMTRIM_LIMIT_STAGGER_MS has passed. The claim is a file in
//! the per-user page directory, named for the master.
mod common;

use common::{TUNING, TempDir, cli, euid, lines_of, preloaded, python, root, serial, text, user_dir, without_env};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const STAGGER_MS: u64 = 3000;

/// The master and its workers, killed (by process group) when dropped.
struct Fleet {
    child: Child,
    lines: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    master: u32,
    workers: Vec<u32>,
    dir: TempDir,
}

impl Fleet {
    fn start(workers: usize, mb: u32, env: &[(&str, &str)]) -> Option<Fleet> {
        let python = python()?;
        let dir = TempDir::new("fleet");
        let mut cmd = Command::new(python);
        cmd.arg(root().join("tests/py/limit_siblings.py")).args([workers.to_string(), mb.to_string(), "1.5".into()]);
        without_env(&mut cmd, TUNING).env("MEMTRIM_SHM_DIR", dir.path()).envs(env.iter().copied()).process_group(0);
        let mut child = preloaded(&mut cmd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("python3 starts");
        let lines = lines_of(child.stdout.take().unwrap());
        let stderr = common::gathered(child.stderr.take().unwrap());
        let mut f = Fleet { child, lines, stderr, master: 0, workers: Vec::new(), dir };
        loop {
            let l = f.line(Duration::from_secs(30)).unwrap_or_else(|| panic!("no `ready` from the master; stderr:\n{}", f.stderr()));
            if let Some(pid) = l.strip_prefix("worker ") {
                f.workers.push(pid.parse().unwrap());
            } else if let Some(pid) = l.strip_prefix("ready ") {
                f.master = pid.parse().unwrap();
                return Some(f);
            } else {
                panic!("unexpected line {l:?} from the master");
            }
        }
    }

    fn line(&self, limit: Duration) -> Option<String> {
        self.lines.recv_timeout(limit).ok()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Up to `most` `signal PID UNIX_MS` lines arriving within `limit`, as (pid, ms).
    fn signals_within(&self, limit: Duration, most: usize) -> Vec<(u32, u64)> {
        let end = Instant::now() + limit;
        let mut v = Vec::new();
        while v.len() < most {
            let Some(l) = end.checked_duration_since(Instant::now()).and_then(|left| self.line(left)) else { break };
            let w: Vec<&str> = l.split_whitespace().collect();
            assert!(w.len() == 3 && w[0] == "signal", "unexpected line {l:?}");
            v.push((w[1].parse().unwrap(), w[2].parse().unwrap()));
        }
        v
    }

    fn stat_json(&self, pid: u32) -> String {
        let o = Command::new(cli()).args(["stat", &pid.to_string(), "--json", "--dir"]).arg(self.dir.path()).output().unwrap();
        assert!(o.status.success(), "memtrim stat {pid}: {}\nstderr:\n{}", text(&o.stderr), self.stderr());
        text(&o.stdout)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"");
        }
        drop(self.child.stdin.take());
        // SAFETY: signals the process group this test started.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn json_u64(obj: &str, field: &str) -> u64 {
    let key = format!("\"{field}\":");
    let at = obj.find(&key).unwrap_or_else(|| panic!("no {field} in {obj}")) + key.len();
    let rest = obj[at..].trim_start();
    rest[..rest.find([',', '}', '\n']).unwrap_or(rest.len())].trim().parse().unwrap_or_else(|_| panic!("no integer {field} in {obj}"))
}

/// Two workers of one master leak past rss:100MiB at the same moment (strikes 2 at 200 ms):
/// exactly one is signalled; the other defers, its page counting the deferrals and saying when
/// it may go, and is signalled only once the 3 s window has passed. The claim file is the
/// master's, a private regular file of the user in the page directory.
#[test]
fn siblings_over_their_limit_together_are_signalled_one_window_apart() {
    let _g = serial();
    let stagger = STAGGER_MS.to_string();
    let env = [
        ("MEMTRIM_LIMIT", "rss:100MiB"),
        ("MEMTRIM_LIMIT_STRIKES", "2"),
        ("MEMTRIM_INTERVAL_MS", "200ms"),
        ("MEMTRIM_LIMIT_STAGGER_MS", &stagger),
        ("MEMTRIM_LOG", "info"),
    ];
    let Some(f) = Fleet::start(2, 160, &env) else { return };
    let (gone, t1) =
        f.signals_within(Duration::from_secs(10), 1).pop().unwrap_or_else(|| panic!("no signal in 10 s (the workers leak at 1.5 s); stderr:\n{}", f.stderr()));
    let other = *f.workers.iter().find(|&&p| p != gone).unwrap();
    let meanwhile = f.signals_within(Duration::from_millis(1000), 1);
    let json = f.stat_json(other);
    let rest = [meanwhile, f.signals_within(Duration::from_millis(STAGGER_MS + 3000), 2)].concat();
    eprintln!("first {gone} at {t1}; then {rest:?}; the other's page 1 s after:\n{json}\nstderr:\n{}", f.stderr());
    assert_eq!(rest.len(), 1, "the other worker was not signalled once after the window: {rest:?}; stderr:\n{}", f.stderr());
    let (pid, t2) = rest[0];
    assert_eq!(pid, other);
    let gap = t2.saturating_sub(t1);
    assert!(
        gap + 100 >= STAGGER_MS,
        "the second sibling was signalled {gap} ms after the first, within MEMTRIM_LIMIT_STAGGER_MS={STAGGER_MS}; stderr:\n{}",
        f.stderr()
    );
    assert!(gap < STAGGER_MS + 2000, "the second sibling waited {gap} ms, far past the window");
    assert!(json_u64(&json, "limit_deferred") >= 1, "the deferred worker's page: {json}");
    let until = json_u64(&json, "limit_deferred_until");
    assert!(until.abs_diff(t1 + STAGGER_MS) < 500, "deferred until {until}, the window ends at {}: {json}", t1 + STAGGER_MS);
    let claim = user_dir(f.dir.path(), euid()).join(format!("stagger.{}.{}", f.master, common::start_ticks(f.master)));
    let md = std::fs::symlink_metadata(&claim).unwrap_or_else(|e| panic!("{}: {e}", claim.display()));
    assert!(md.file_type().is_file() && md.uid() == euid() && md.permissions().mode() & 0o777 == 0o600, "{}: {md:?}", claim.display());
}

/// The claim file is trusted only as a private regular file of the user: a symlink planted at
/// its name (to a file the user could care about) is not followed, not written through, and the
/// workers say so in one line each and are signalled unstaggered, as without the option.
#[test]
fn a_symlink_at_the_claim_files_name_is_not_followed() {
    let _g = serial();
    let env = [("MEMTRIM_LIMIT", "rss:100MiB"), ("MEMTRIM_LIMIT_STRIKES", "2"), ("MEMTRIM_INTERVAL_MS", "200ms"), ("MEMTRIM_LIMIT_STAGGER_MS", "3s")];
    let Some(f) = Fleet::start(2, 160, &env) else { return };
    let udir = user_dir(f.dir.path(), euid());
    if std::fs::create_dir(&udir).is_ok() {
        std::fs::set_permissions(&udir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let target = f.dir.join("precious");
    std::fs::write(&target, "precious").unwrap();
    std::os::unix::fs::symlink(&target, udir.join(format!("stagger.{}.{}", f.master, common::start_ticks(f.master)))).unwrap();
    let sig = f.signals_within(Duration::from_secs(10), 2);
    let stderr = f.stderr();
    eprintln!("{sig:?}\n{stderr}");
    assert_eq!(sig.len(), 2, "both workers signalled (unstaggered): {sig:?}\n{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious", "written through the symlink");
    assert_eq!(stderr.lines().filter(|l| l.contains("MEMTRIM_LIMIT_STAGGER_MS") && l.contains("unstaggered")).count(), 2, "{stderr}");
}
