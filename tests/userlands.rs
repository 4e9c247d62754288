//! The release artefacts (scripts/package) on real userlands: Debian 11, 12 and 13 root
//! filesystems (glibc 2.31, 2.36, 2.41), each made once with debootstrap and cached
//! (tests/userlands/run-in-root), in which tests/userlands/check-release installs the wheel with
//! the release's own python3 and pip and the .deb with its apt, runs the exactness and
//! glibc-semantics C programs compiled there, the release's python3 and ruby under
//! `memtrim run` on a fragmented heap, `memtrim ls/stat/trim/report` on a host, gunicorn with two
//! workers serving while they release, and README.md's Dockerfile snippets. Each release prints
//! a table of its steps; a step is OFF exactly where a version check must turn its feature off
//! (glibc_layout.rs): MALLOC_CHECK_'s checked chunks up to glibc 2.33.
mod common;
use common::{dist, euid, on_ci, require_tool, root, run_for, show, text};
use std::process::Command;
use std::time::{Duration, Instant};

/// The steps check-release runs, each of which must pass on every release, or be OFF where the
/// test says so.
const STEPS: [&str; 13] = [
    "wheel",
    "deb",
    "c-accounting",
    "c-errors",
    "c-malloc-check",
    "c-arena-tops",
    "python-live-bytes",
    "python-cli",
    "heap-over-4gib",
    "ruby-frag",
    "gunicorn",
    "readme-python",
    "readme-ruby",
];

fn matrix(release: &str, glibc: &str, off: &[&str]) {
    for tool in ["debootstrap", "unshare", "chroot"] {
        if !require_tool(tool) {
            return;
        }
    }
    if euid() != 0 {
        assert!(!on_ci(), "the userland matrix needs root (chroot, mounts)");
        eprintln!("SKIP: not root");
        return;
    }
    dist();
    // One release at a time: each loads the machine's two cores.
    let _one = common::serial();
    let start = Instant::now();
    let o = run_for(Command::new(root().join("tests/userlands/run-in-root")).arg(release), Duration::from_secs(1200));
    let out = text(&o.stdout);
    let table = format!("== {release}: {:.0} s\n{out}", start.elapsed().as_secs_f64());
    eprintln!("{table}");
    // scripts/test prints it at the end, passed or not.
    let _ = std::fs::write(format!("{}/userlands-{release}.txt", env!("CARGO_TARGET_TMPDIR")), &table);
    assert!(o.status.success(), "run-in-root {release}: {}", show(&o));
    let header = out.lines().find(|l| l.starts_with("GLIBC ")).unwrap_or_else(|| panic!("no GLIBC line: {}", show(&o)));
    assert!(header.starts_with(&format!("GLIBC {glibc} ")), "{release} runs {header}, not glibc {glibc}");
    for step in STEPS {
        let line = out.lines().find(|l| l.starts_with(&format!("STEP {step} "))).unwrap_or_else(|| panic!("{release}: step {step} did not run\n{out}"));
        let want = if off.contains(&step) { "OFF" } else { "PASS" };
        assert!(line.starts_with(&format!("STEP {step} {want} ")), "{release}: expected {want}: {line}\n{out}");
    }
}

#[test]
fn debian_11_bullseye_glibc_2_31() {
    matrix("bullseye", "2.31", &["c-malloc-check"]);
}

#[test]
fn debian_12_bookworm_glibc_2_36() {
    matrix("bookworm", "2.36", &[]);
}

#[test]
fn debian_13_trixie_glibc_2_41() {
    matrix("trixie", "2.41", &[]);
}
