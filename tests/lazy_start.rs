//! The worker starts lazily: a process (or fork child) stays single-threaded for its first
//! interval, so that `unshare --user` and a fork child's unshare(CLONE_NEWUSER) work under the
//! library and a process that execs early never had a thread; a long-lived allocating process
//! and its forked child still get their pages within about an interval (tests/c/lazy_start.c).

mod common;

use common::{Proc, TUNING, TempDir, preloaded, show, text, wait_for, without_env};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `cmd` under the library, writing pages into `dir`, with a first interval of `interval_ms`.
fn lazy<'a>(cmd: &'a mut Command, dir: &Path, interval_ms: u64) -> &'a mut Command {
    preloaded(
        without_env(cmd, TUNING)
            .env("MEMTRIM_SHM_DIR", dir)
            .env("MEMTRIM_INTERVAL_MS", interval_ms.to_string())
            .env("MEMTRIM_START_MS", interval_ms.to_string()),
    )
}

/// tests/c/lazy_start.c, compiled once for every test of this file (a binary being rewritten
/// while another test starts it fails with ETXTBSY).
fn program() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| common::compile("lazy_start.c", &[])).clone()
}

#[test]
fn unshare_user_works_under_the_library() {
    if !common::require_tool("unshare") {
        return;
    }
    let plain = common::run(Command::new("unshare").args(["--user", "true"]).env_remove("LD_PRELOAD"));
    if !plain.status.success() {
        eprintln!("SKIP: `unshare --user true` fails here without the library: {}", show(&plain));
        return;
    }
    let dir = TempDir::new("unshare");
    let o = common::run_for(lazy(Command::new("unshare").args(["--user", "true"]), dir.path(), 1000), Duration::from_secs(30));
    assert!(o.status.success(), "`unshare --user true` under the library: {}", show(&o));
}

/// setpriv changes its capabilities on its own thread (PR_SET_KEEPCAPS, capset), then its
/// credentials, which glibc makes every thread change too: with a second thread whose
/// capabilities differ, glibc aborts the process. Early in a process there is no second thread.
#[test]
fn setpriv_drops_privileges_under_the_library() {
    if !common::require_tool("setpriv") {
        return;
    }
    let args = ["--reuid=nobody", "--regid=nogroup", "--clear-groups", "true"];
    let plain = common::run(Command::new("setpriv").args(args).env_remove("LD_PRELOAD"));
    if !plain.status.success() {
        eprintln!("SKIP: setpriv cannot change user here without the library: {}", show(&plain));
        return;
    }
    let dir = TempDir::new("setpriv");
    let o = common::run_for(lazy(Command::new("setpriv").args(args), dir.path(), 1000), Duration::from_secs(30));
    assert!(o.status.success(), "setpriv under the library: {}", show(&o));
}

#[test]
fn fork_child_can_unshare_a_user_namespace() {
    if !common::require_tool("unshare") || !common::run(Command::new("unshare").args(["--user", "true"]).env_remove("LD_PRELOAD")).status.success() {
        eprintln!("SKIP: this machine does not allow unprivileged user namespaces");
        return;
    }
    let bin = program();
    let dir = TempDir::new("fork-unshare");
    // the parent allocates for three intervals first: its own worker is running when it forks
    let o = common::run_for(lazy(Command::new(&bin).args(["fork-unshare", "900"]), dir.path(), 300), Duration::from_secs(30));
    assert!(o.status.success() && text(&o.stdout).contains("unshare ok"), "a fork child's unshare(CLONE_NEWUSER): {}", show(&o));
}

#[test]
fn process_that_execs_in_its_first_interval_has_no_worker_thread() {
    let bin = program();
    let dir = TempDir::new("exec-early");
    let o = common::run_for(lazy(Command::new(&bin).args(["exec-early", "300"]), dir.path(), 2000), Duration::from_secs(30));
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("memtrim threads 0"), "a thread before the first interval ended: {}", show(&o));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a page was made in the first interval");
}

#[test]
fn vfork_child_crossing_the_deadline_leaves_the_start_to_its_parent() {
    let bin = program();
    let dir = TempDir::new("vfork");
    // the child allocates after the deadline, in the parent's memory; the parent allocates next
    let o = common::run_for(lazy(Command::new(&bin).args(["vfork", "600"]), dir.path(), 200), Duration::from_secs(30));
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("memtrim threads 1"), "the parent has no worker after its vfork child allocated: {}", show(&o));
}

#[test]
fn long_lived_process_and_its_fork_child_get_their_pages() {
    let bin = program();
    let dir = TempDir::new("serve");
    let interval = Duration::from_millis(500);
    // two intervals, and half of one for a busy machine
    let limit = 2 * interval + interval / 2;
    let mut c = Command::new(&bin);
    let mut proc = Proc(lazy(c.args(["serve", "20000"]), dir.path(), interval.as_millis() as u64).stdout(Stdio::piped()).spawn().expect("lazy_start runs"));
    let start = Instant::now();
    let mut lines = BufReader::new(proc.0.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = (0..2).map(|_| lines.next().and_then(Result::ok).and_then(|l| l.strip_prefix("pid ")?.parse().ok()).expect("`pid PID`")).collect();
    for pid in pids {
        wait_for(&format!("the page of pid {pid}"), limit.saturating_sub(start.elapsed()), || {
            common::read_page(dir.path(), pid).ok_or_else(|| format!("none in {}", dir.path().display()))
        });
    }
    eprintln!("both pages after {:?}", start.elapsed());
}
