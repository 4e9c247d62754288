//! The `memtrim` command line: the version, help and usage errors, `--dir DIR` and `--dir=DIR`,
//! what `run` passes on, and the shell completions and man page generated from the same
//! definitions; what the commands survive: a symlink planted where `man --out` writes, a reader
//! that closes stdout early; and what `memtrim config` says each variable takes.
//!
//! Build first: `cargo build --release --workspace && cargo test --release --test cli_args`.
//! Tools: bash, zsh, fish, man (each required on CI, skipped with a message elsewhere).

mod common;

use common::{TempDir, cli, memtrim, plant_page, require_tool, run, show, sleeper, start_ticks, text};
use std::process::{Command, Output, Stdio};

/// `memtrim ARGS` with the page directory left to the arguments.
fn memtrim_bare(args: &[&str]) -> Output {
    run(Command::new(cli()).args(args).env_remove("MEMTRIM_SHM_DIR").env_remove("LD_PRELOAD").stdin(Stdio::null()))
}

/// `memtrim --version` (and `-V`): the version first, then the library `run` would preload.
#[test]
fn version_prints_the_version_then_the_library() {
    for flag in ["--version", "-V"] {
        let o = memtrim_bare(&[flag]);
        assert_eq!(o.status.code(), Some(0), "memtrim {flag}: {}", show(&o));
        let out = text(&o.stdout);
        assert!(out.starts_with(&format!("memtrim {}\n", env!("CARGO_PKG_VERSION"))), "memtrim {flag} does not start with the version:\n{}", show(&o));
        assert!(out.lines().any(|l| l.starts_with("library: ")), "memtrim {flag} names no library:\n{}", show(&o));
    }
}

/// A command that does not exist: exit 2 and a line on stderr that names it.
#[test]
fn an_unknown_command_is_named_on_stderr() {
    let o = memtrim_bare(&["bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).lines().any(|l| l.contains("bogus")), "memtrim bogus: no line on stderr names 'bogus':\n{}", show(&o));
}

/// No command: the usage on stderr, exit 2.
#[test]
fn no_command_is_a_usage_error() {
    let o = memtrim_bare(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).to_lowercase().contains("usage"), "no usage on stderr:\n{}", show(&o));
}

/// `help`, `-h` and `--help`: exit 0, every command named on stdout.
#[test]
fn help_names_every_command() {
    for how in ["help", "-h", "--help"] {
        let o = memtrim_bare(&[how]);
        assert_eq!(o.status.code(), Some(0), "memtrim {how}: {}", show(&o));
        let out = text(&o.stdout);
        for cmd in ["run", "config", "ls", "stat", "top", "trim", "report", "clean", "serve"] {
            assert!(out.lines().any(|l| l.split_whitespace().next() == Some(cmd)), "memtrim {how} does not list {cmd}:\n{out}");
        }
    }
}

/// Every command that reads pages takes `--dir=DIR` as it takes `--dir DIR`: the same exit
/// status and output, for a directory holding a page and for an empty one (the lines of `stat`
/// that give the page's and the process's age aside: they move between two runs; `trim`,
/// `report`, `serve` and `top` say how long things took: their exit status).
#[test]
fn dir_with_an_equals_sign_is_dir_with_a_space() {
    let s = sleeper();
    let (pid, st) = (s.pid(), start_ticks(s.pid()));
    let with_page = TempDir::new("dir-page");
    plant_page(with_page.path(), pid, st, b"planted", |_| {});
    let empty = TempDir::new("dir-empty");
    let elsewhere = TempDir::new("dir-env");
    let pid = pid.to_string();
    // (arguments, whether the output is compared too)
    let commands: [(&[&str], bool); 7] = [
        (&["ls"], true),
        (&["stat", &pid], true),
        (&["clean", "--dry-run"], true),
        (&["trim", "--all", "--timeout", "0.2"], false),
        (&["report", &pid, "--timeout", "0.2"], false),
        (&["serve", "--once", "-"], false),
        (&["top"], false),
    ];
    for dir in [with_page.path(), empty.path()] {
        for (args, output) in commands {
            let d = dir.to_str().unwrap();
            let spaced = memtrim(elsewhere.path(), &[args, &["--dir", d]].concat());
            let equals = memtrim(elsewhere.path(), &[args, &[&format!("--dir={d}")]].concat());
            assert_ne!(spaced.status.code(), Some(2), "{args:?} --dir {d}: {}", show(&spaced));
            if !output {
                assert_eq!(equals.status.code(), spaced.status.code(), "{args:?}: --dir={d}: {}\n--dir {d}: {}", show(&equals), show(&spaced));
                continue;
            }
            // The first word of each line (a pid, a field's name): the figures move between two runs.
            let timeless = |o: &Output| text(&o.stdout).lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            assert_eq!(
                (equals.status.code(), timeless(&equals), text(&equals.stderr)),
                (spaced.status.code(), timeless(&spaced), text(&spaced.stderr)),
                "{args:?}: --dir={d} differs from --dir {d}"
            );
        }
    }
    let o = memtrim(elsewhere.path(), &["ls", &format!("--dir={}", with_page.path().display())]);
    assert!(text(&o.stdout).lines().any(|l| l.split_whitespace().next() == Some(pid.as_str())), "ls --dir=DIR does not list the page's process:\n{}", show(&o));
}

/// Arguments each command refuses: exit 2 and a reason on stderr, before anything is done.
#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new("usage");
    let bad: &[&[&str]] = &[
        &["ls", "--sort", "colour"],
        &["ls", "--dir"],
        &["ls", "--bogus"],
        &["ls", "12"],
        &["stat"],
        &["stat", "0"],
        &["stat", "abc"],
        &["stat", "1", "2"],
        &["stat", "1", "--watch", "0.01"],
        &["stat", "1", "--watch", "nan"],
        &["top", "--delay", "0.05"],
        &["top", "--sort", "size"],
        &["trim"],
        &["trim", "1", "--all"],
        &["trim", "1", "--timeout", "0"],
        &["trim", "1", "--timeout", "86400"],
        &["report"],
        &["report", "1", "--timeout", "inf"],
        &["clean", "--bogus"],
        &["serve", "--max-connections", "10001"],
        &["serve", "--timeout", "3601"],
        &["config", "--bogus"],
        &["run"],
        &["run", "--"],
        &["run", "--bogus", "--", "true"],
        &["run", "--set", "NOVALUE", "--", "true"],
    ];
    for args in bad {
        let o = memtrim(dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        assert!(!text(&o.stderr).trim().is_empty(), "{args:?}: no reason on stderr");
    }
}

/// `stat --watch PID` watches PID every second; `stat --watch SECS PID` every SECS: a number
/// after --watch is the PID unless the PID is given elsewhere. Watching a process that is gone
/// says so and ends.
#[test]
fn stat_watch_takes_a_number_for_the_pid_unless_the_pid_is_elsewhere() {
    let dir = TempDir::new("watch");
    let gone = sleeper();
    let pid = gone.pid().to_string();
    drop(gone);
    for args in [&["stat", "--watch", &pid][..], &["stat", "--watch", "2", &pid], &["stat", &pid, "--watch", "2"], &["stat", &pid, "-w"]] {
        let o = memtrim(dir.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", show(&o));
        assert!(text(&o.stderr).contains(&format!("process {pid} has exited")), "{args:?}: {}", show(&o));
    }
}

/// What follows the command in `memtrim run` reaches it untouched, memtrim's own options too,
/// with or without `--`.
#[test]
fn run_passes_on_what_follows_the_command() {
    for args in
        [&["run", "--", "printf", "%s|", "--lib", "-h", "--set", "--", "--version"][..], &["run", "printf", "%s|", "--lib", "-h", "--set", "--", "--version"]]
    {
        let o = memtrim_bare(args);
        assert!(o.status.success(), "{args:?}: {}", show(&o));
        assert_eq!(text(&o.stdout), "--lib|-h|--set|--|--version|", "{args:?}: {}", show(&o));
    }
    let o = memtrim_bare(&["run", "--set", "REPORT=1", "--set", "MEMTRIM_TAG=a=b", "--", "sh", "-c", "echo $MEMTRIM_REPORT $MEMTRIM_TAG"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), "1 a=b", "{}", show(&o));
}

/// `memtrim completions SHELL`: a script the shell reads without a syntax error, naming the
/// commands and their options.
#[test]
fn completions_are_valid_scripts_for_each_shell() {
    let tmp = TempDir::new("completions");
    for (shell, check) in [("bash", &["-n"][..]), ("zsh", &["-n"]), ("fish", &["--no-execute"])] {
        let o = memtrim_bare(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "memtrim completions {shell}: {}", show(&o));
        let script = text(&o.stdout);
        for word in ["trim", "report", "serve", "dir", "sort", "watch", "listen"] {
            assert!(script.contains(word), "the {shell} completions do not name {word}:\n{script}");
        }
        if !require_tool(shell) {
            continue;
        }
        let file = tmp.join(&format!("memtrim.{shell}"));
        std::fs::write(&file, &script).unwrap();
        let o = run(Command::new(shell).args(check).arg(&file));
        assert!(o.status.success(), "{shell} {check:?} on the completions: {}", show(&o));
    }
}

/// `memtrim man`: memtrim(1), a roff page that man renders; `memtrim man --out DIR`: that page
/// and the page of every command it refers to, with the command's options in it.
#[test]
fn man_pages_render() {
    let o = memtrim_bare(&["man"]);
    assert_eq!(o.status.code(), Some(0), "memtrim man: {}", show(&o));
    let page = text(&o.stdout);
    assert!(page.lines().any(|l| l.starts_with(".TH memtrim 1")), "not a roff page:\n{}", show(&o));
    let tmp = TempDir::new("man");
    let o = memtrim_bare(&["man", "--out", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "memtrim man --out: {}", show(&o));
    assert_eq!(std::fs::read_to_string(tmp.join("memtrim.1")).unwrap().trim_end(), page.trim_end(), "memtrim man --out wrote another memtrim.1");
    let expected: &[(&str, &[&str])] = &[
        ("memtrim", &["--version", "memtrim-ls(1)", "memtrim-completions(1)"]),
        ("memtrim-run", &["--lib", "--set"]),
        ("memtrim-ls", &["--json", "--sort", "--all", "--dir"]),
        ("memtrim-stat", &["--watch", "--dir"]),
        ("memtrim-top", &["--delay", "--sort"]),
        ("memtrim-trim", &["--all", "--timeout"]),
        ("memtrim-report", &["--json", "--timeout"]),
        ("memtrim-clean", &["--dry-run"]),
        ("memtrim-serve", &["--listen", "--once", "--max-connections"]),
        ("memtrim-completions", &["bash"]),
    ];
    if !require_tool("man") {
        return;
    }
    for (name, words) in expected {
        let file = tmp.join(&format!("{name}.1"));
        let o = run(Command::new("man").arg("-l").arg(&file).env("MANPAGER", "cat").env("MANWIDTH", "100"));
        assert!(o.status.success() && text(&o.stderr).is_empty(), "man -l {}: {}", file.display(), show(&o));
        let shown = text(&o.stdout);
        for word in *words {
            assert!(shown.contains(word), "{name}(1) does not show {word}:\n{shown}");
        }
    }
}

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
    assert!(
        now == "not a man page\n",
        "memtrim man --out wrote through the symlink memtrim-ls.1 into its target (now {} bytes starting {:?}): {}",
        now.len(),
        now.lines().next().unwrap_or(""),
        show(&o)
    );
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
        assert!(
            !err.contains("panicked"),
            "memtrim {}: panicked on a closed stdout (status {:?}): {}",
            args.join(" "),
            o.status,
            err.lines().find(|l| l.contains("panicked") || l.contains("failed")).unwrap_or("")
        );
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

/// `memtrim config` says which words a flag takes: every one the reader takes, not "0 or 1".
#[test]
fn config_lists_every_word_a_flag_takes() {
    let o = run(Command::new(cli()).arg("config").stdin(Stdio::null()));
    let line = text(&o.stdout).lines().find(|l| l.starts_with("MEMTRIM_STATS ")).map(str::to_owned).unwrap_or_default();
    assert!(
        ["true/false", "yes/no", "on/off", "any case", "empty: 0"].iter().all(|w| line.contains(w)),
        "memtrim config does not list every word MEMTRIM_STATS takes: {line}"
    );
}
