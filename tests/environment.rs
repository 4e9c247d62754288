//! How the library reads its environment: getenv's rule for a name given twice, a value that is
//! not UTF-8, and nothing at all under AT_SECURE (a setuid program run by another user).
//!
//! Tools: gcc; setpriv and root for the setuid case (skipped with a message without them).

mod common;

use common::{TempDir, allocator, lib, require_tool, run_for, show, text};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// `program` run by execve_env with exactly `env` (LD_PRELOAD=the library first).
fn with_exact_env(env: &[&[u8]], program: &str, args: &[&str]) -> Output {
    // compiled once: a test running it while another rewrites it would fail with ETXTBSY
    static LAUNCHER: OnceLock<PathBuf> = OnceLock::new();
    let launcher = LAUNCHER.get_or_init(|| common::compile("execve_env.c", &[]));
    let preload = [b"LD_PRELOAD=".as_slice(), lib().as_os_str().as_bytes()].concat();
    let mut c = Command::new(launcher);
    c.arg(OsStr::from_bytes(&preload));
    c.args(env.iter().map(|e| OsStr::from_bytes(e)));
    c.arg("--").arg(program).args(args);
    run_for(&mut c, Duration::from_secs(20))
}

/// A name given twice: the first value counts, as for getenv, in the backend and in the
/// configuration alike. MEMTRIM_REPORT=1 then =0 prints the exit summary; MEMTRIM_DISABLE=1
/// then =0 counts nothing (the summary, asked for, shows zero allocations).
#[test]
fn a_name_given_twice_means_its_first_value() {
    let o = with_exact_env(&[b"MEMTRIM_REPORT=1", b"MEMTRIM_REPORT=0"], "/bin/true", &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("exit: live"), "MEMTRIM_REPORT=1 then =0: no exit summary (the last value was used):\n{}", show(&o));
    let o = with_exact_env(&[b"MEMTRIM_REPORT=0", b"MEMTRIM_REPORT=1"], "/bin/true", &[]);
    assert!(!text(&o.stderr).contains("exit: live"), "MEMTRIM_REPORT=0 then =1: an exit summary (the last value was used):\n{}", show(&o));
    let o = with_exact_env(&[b"MEMTRIM_DISABLE=1", b"MEMTRIM_DISABLE=0", b"MEMTRIM_REPORT=1"], "/bin/true", &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("exit: live"), "MEMTRIM_DISABLE=1 then =0: the library was not disabled:\n{}", show(&o));
}

/// A value that is not UTF-8 is one warning line naming the variable, saying why and which
/// default is used; the host runs on.
#[test]
fn a_value_that_is_not_utf8_warns() {
    let o = with_exact_env(&[b"MEMTRIM_LOG=w\xffrn"], "/bin/true", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("MEMTRIM_LOG")).collect();
    assert_eq!(lines.len(), 1, "expected one warning naming MEMTRIM_LOG:\n{}", show(&o));
    assert!(lines[0].contains("not UTF-8") && lines[0].contains("default \"warn\""), "{}", lines[0]);
}

/// Every variable is read by one row of the table: a bad value's warning says the values the
/// row takes, and `memtrim config` lists each variable with the same range and its default.
#[test]
fn a_bad_value_is_told_the_range_that_memtrim_config_lists() {
    let o = with_exact_env(&[b"MEMTRIM_LIMIT_STRIKES=0"], "/bin/true", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    assert_eq!(err.trim_end(), "memtrim: MEMTRIM_LIMIT_STRIKES=\"0\" is not a count from 1 to 1000; using the default \"3\"", "{}", show(&o));
    let c = Command::new(common::cli()).arg("config").output().unwrap();
    assert!(c.status.success(), "{}", show(&c));
    let listed = text(&c.stdout);
    assert!(listed.contains("MEMTRIM_LIMIT_STRIKES  default 3  takes a count from 1 to 1000\n"), "{listed}");
    assert!(listed.contains("MEMTRIM_INTERVAL_MS  default 1000  takes a duration from 10ms to 1h\n"), "{listed}");
    let names = listed.lines().filter(|l| l.starts_with("MEMTRIM_")).count();
    assert!(names >= 24, "{names} variables listed:\n{listed}");
}

/// Under AT_SECURE (a setuid-root program run by nobody) MEMTRIM_DISABLE=1 is ignored like every
/// other variable: the library counts. The same program without the setuid bit is disabled by
/// it, so the variable does reach the library.
#[test]
fn secure_execution_ignores_memtrim_disable() {
    if !require_tool("setpriv") {
        return;
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: a setuid-root program and switching to nobody need root");
        return;
    }
    let libdir = lib().parent().unwrap().to_path_buf();
    let probe = common::compile("secure_probe.c", &[&format!("-L{}", libdir.display()), "-lmemtrim", &format!("-Wl,-rpath,{}", libdir.display())]);
    let tmp = TempDir::new("setuid");
    let run_as_nobody = |bin: &PathBuf| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).arg(bin).env("MEMTRIM_DISABLE", "1").env_remove("LD_PRELOAD");
        run_for(&mut c, Duration::from_secs(20))
    };
    let plain = tmp.join("plain_probe");
    std::fs::copy(&probe, &plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = run_as_nobody(&plain);
    if !o.status.success() {
        assert!(!common::on_ci(), "nobody cannot run the probe:\n{}", show(&o));
        eprintln!("SKIP: nobody cannot run {} (a parent directory is closed to other users?)\n{}", plain.display(), show(&o));
        return;
    }
    assert!(text(&o.stdout).starts_with("secure=0 rc=0 live=0\n"), "MEMTRIM_DISABLE=1 did not disable the library:\n{}", show(&o));
    let setuid = tmp.join("setuid_probe");
    std::fs::copy(&probe, &setuid).unwrap();
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let o = run_as_nobody(&setuid);
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.starts_with("secure=1 rc=0 live="), "not run in secure-execution mode:\n{}", show(&o));
    let live: u64 = out.trim().rsplit('=').next().unwrap().parse().unwrap();
    assert!(live >= 1 << 20, "under AT_SECURE the library read MEMTRIM_DISABLE=1 (live bytes {live}):\n{}", show(&o));
}

/// A huge environment of MEMTRIM_ names (60000 distinct ones, near the kernel's limit) costs the
/// host's start no more than as many other names do: reading it is linear, not quadratic.
#[test]
fn a_huge_environment_is_read_in_linear_time() {
    let timed = |prefix: &str| {
        let entries: Vec<Vec<u8>> = std::iter::once(b"MEMTRIM_LOG=off".to_vec()).chain((0..60_000).map(|i| format!("{prefix}{i}=").into_bytes())).collect();
        let env: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let t = std::time::Instant::now();
        let o = with_exact_env(&env, "/bin/true", &[]);
        assert!(o.status.success(), "{prefix}: {}", show(&o));
        t.elapsed()
    };
    let others = timed("OTHER_X");
    let ours = timed("MEMTRIM_X");
    assert!(ours < others * 3 + Duration::from_millis(300), "60000 MEMTRIM_ names took {ours:?} to start /bin/true, 60000 other names {others:?}");
}

/// A positive duration too small for an f64 (0.000…01 s with 400 zeros) is not 0 (off): it is
/// warned about like any positive duration that rounds to 0 ms.
#[test]
fn a_positive_duration_below_f64_is_not_off() {
    let tiny = format!("MEMTRIM_IDLE_MS=0.{}1s", "0".repeat(400));
    let o = with_exact_env(&[tiny.as_bytes()], "/bin/true", &[]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("MEMTRIM_IDLE_MS="), "a positive MEMTRIM_IDLE_MS far below 1 ms was taken as 0 (off) without a warning:\n{}", show(&o));
}

/// glibc reads every GLIBC_TUNABLES in the environment, not only the first: huge-page heaps
/// asked for in a second one (glibc 2.35 on) turn the release of arena tops off as in the first.
#[test]
fn huge_page_heaps_in_a_second_glibc_tunables_turn_arena_tops_off() {
    let minor: u32 = text(&Command::new("getconf").arg("GNU_LIBC_VERSION").output().unwrap().stdout).trim().rsplit('.').next().unwrap().parse().unwrap();
    if allocator() != "glibc" || minor < 35 {
        return;
    }
    let bin = common::compile("arena_tops.c", &[]);
    let o =
        with_exact_env(&[b"GLIBC_TUNABLES=glibc.malloc.mxfast=0", b"GLIBC_TUNABLES=glibc.malloc.hugetlb=2", b"MEMTRIM_LOG=info"], bin.to_str().unwrap(), &[]);
    assert!(o.status.success() && text(&o.stdout).ends_with("ok\n"), "{}", show(&o));
    let line = "makes huge-page heaps (glibc.malloc.hugetlb), not HEAP_MAX-aligned: releases use malloc_trim alone";
    assert!(text(&o.stderr).contains(line), "hugetlb=2 in the second GLIBC_TUNABLES: no line saying {line:?}\n{}", show(&o));
}
