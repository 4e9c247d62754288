//! Cases the command line must survive: a planted symlink where `man --out` writes, and a
//! reader that closes stdout early.
//!
//! Build first: `cargo build --release --workspace && cargo test --release --test attacks_cli`.

mod common;

use common::{cli, run, show, text, TempDir};
use std::process::{Command, Stdio};

/// `memtrim man --out DIR` replaces each page whole, as every file the CLI writes
/// (atomic_file.rs): a symlink planted in DIR where a page goes is refused or replaced, never
/// written through.
#[test]
fn man_out_does_not_write_through_a_planted_symlink() {
    let tmp = TempDir::new("man-symlink");
    let victim = tmp.join("victim");
    std::fs::write(&victim, "not a man page\n").unwrap();
    let out = tmp.join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("memtrim-ls.1")).unwrap();
    let o = run(Command::new(cli()).args(["man", "--out", out.to_str().unwrap()]).stdin(Stdio::null()));
    let now = std::fs::read_to_string(&victim).unwrap();
    assert!(now == "not a man page\n", "memtrim man --out wrote through the symlink memtrim-ls.1 into its target (now {} bytes starting {:?}): {}", now.len(), now.lines().next().unwrap_or(""), show(&o));
}

/// A reader that stops early (`memtrim fields --json | head -c 10`): memtrim stops quietly
/// instead of panicking (abort, exit 134, a backtrace on stderr).
#[test]
fn a_closed_stdout_is_not_a_panic() {
    for args in [&["fields", "--json"][..], &["fields"], &["config"], &["--version"]] {
        let mut c = Command::new(cli());
        c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        drop(child.stdout.take()); // the reader is gone before memtrim writes
        let o = child.wait_with_output().unwrap();
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "memtrim {}: panicked on a closed stdout (status {:?}): {}", args.join(" "), o.status, err.lines().find(|l| l.contains("panicked") || l.contains("failed")).unwrap_or(""));
    }
}

/// `memtrim config` says which values each variable takes: MEMTRIM_START_MS=0 is not "off"
/// (it starts the worker at the first allocation).
#[test]
fn config_says_what_start_ms_zero_means() {
    let o = run(Command::new(cli()).arg("config").stdin(Stdio::null()));
    let line = text(&o.stdout).lines().find(|l| l.starts_with("MEMTRIM_START_MS")).map(str::to_owned).unwrap_or_default();
    assert!(!line.contains("0 (off)"), "memtrim config calls MEMTRIM_START_MS=0 off, which starts the worker at the first allocation: {line}");
}

/// `stat --watch=SECS`: a value attached with `=` is --watch's own, not the PID (only a
/// separate number after --watch is ambiguous).
#[test]
fn stat_watch_with_an_attached_value_is_not_the_pid() {
    let tmp = TempDir::new("watch-eq");
    let o = run(Command::new(cli()).args(["stat", "--watch=2", "--dir", tmp.path().to_str().unwrap()]).stdin(Stdio::null()));
    assert_eq!(o.status.code(), Some(2), "memtrim stat --watch=2 (no PID) looked up pid 2 instead of asking which PID: {}", show(&o));
}

/// `memtrim config` lists every value a variable takes: MEMTRIM_LIMIT takes live:SIZE (the
/// reader and the page's limit_metric know it).
#[test]
fn config_lists_every_limit_metric_the_reader_takes() {
    let o = run(Command::new(cli()).arg("config").stdin(Stdio::null()));
    let line = text(&o.stdout).lines().find(|l| l.starts_with("MEMTRIM_LIMIT ")).map(str::to_owned).unwrap_or_default();
    assert!(line.contains("live"), "memtrim config does not list live for MEMTRIM_LIMIT, which takes live:1G: {line}");
}
