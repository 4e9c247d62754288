//! `memtrim run`: the library it puts in LD_PRELOAD is the one it chose, whatever the path.
//!
//! Tools: gcc (for a marker library).

mod common;

use common::{TempDir, cli, lib, run_for, show, text};
use std::process::Command;
use std::time::Duration;

/// ld.so splits LD_PRELOAD at spaces and colons, and loads a relative fragment from the working
/// directory. A library path with either (given with --lib, or found beside the binary: a venv
/// in "My Projects") is preloaded through a link in a private directory: that library is the
/// one mapped in the command, and the library planted in the working directory under the name
/// of the split-off fragment never runs.
#[test]
fn library_path_that_ld_so_would_split_is_preloaded_through_a_link() {
    let tmp = TempDir::new("run-split");
    let marker_lib = common::compile("marker_lib.c", &["-shared", "-fPIC"]);
    // the fragment after the separator is "dir/libmemtrim.so", relative to the cwd
    let cwd = tmp.join("cwd");
    std::fs::create_dir_all(cwd.join("dir")).unwrap();
    std::fs::copy(&marker_lib, cwd.join("dir/libmemtrim.so")).unwrap();
    let marker = tmp.join("marker-ran");
    for name in ["lib dir", "lib:dir"] {
        let spaced = tmp.join(name);
        std::fs::create_dir(&spaced).unwrap();
        std::fs::copy(lib(), spaced.join("libmemtrim.so")).unwrap();
        std::fs::copy(cli(), spaced.join("memtrim")).unwrap();
        let with_flag = {
            let mut c = Command::new(cli());
            c.arg("run").arg("--lib").arg(spaced.join("libmemtrim.so")).args(["--", "cat", "/proc/self/maps"]);
            c
        };
        let beside = {
            let mut c = Command::new(spaced.join("memtrim"));
            c.args(["run", "--", "cat", "/proc/self/maps"]);
            c
        };
        for (how, mut c) in [("--lib", with_flag), ("beside the binary", beside)] {
            c.current_dir(&cwd).env("MARKER_FILE", &marker).env_remove("LD_PRELOAD");
            let o = run_for(&mut c, Duration::from_secs(20));
            assert!(!marker.exists(), "{name:?}, {how}: the library in the working directory ran:\n{}", show(&o));
            assert!(o.status.success(), "{name:?}, {how}: did not run:\n{}", show(&o));
            let mapped = spaced.join("libmemtrim.so");
            assert!(text(&o.stdout).contains(mapped.to_str().unwrap()), "{name:?}, {how}: {} is not mapped in the command:\n{}", mapped.display(), show(&o));
        }
    }
}

/// ld.so expands $ORIGIN (the program's directory), $LIB and $PLATFORM in an LD_PRELOAD entry, so
/// a library under a directory named `x$ORIGIN` would be looked for elsewhere: a library planted
/// where `$ORIGIN` leads runs instead, and otherwise none is loaded. Such a path (any `$`) is
/// preloaded through a link, and the planted library never runs.
#[test]
fn library_path_that_ld_so_would_expand_is_preloaded_through_a_link() {
    let tmp = TempDir::new("run-dst");
    let marker_lib = common::compile("marker_lib.c", &["-shared", "-fPIC"]);
    let bin = tmp.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/true", bin.join("true")).unwrap();
    let marker = tmp.join("marker-ran");
    for name in ["x$ORIGIN", "x${ORIGIN}", "x$LIB", "x$PLATFORM"] {
        let dir = tmp.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(lib(), dir.join("libmemtrim.so")).unwrap();
        // where "TMP/x$ORIGIN/libmemtrim.so" leads when the program is TMP/bin/true
        let expanded = tmp.join(&format!("x{}", bin.display())).join("libmemtrim.so");
        std::fs::create_dir_all(expanded.parent().unwrap()).unwrap();
        std::fs::copy(&marker_lib, &expanded).unwrap();
        let mut c = Command::new(cli());
        c.arg("run").arg("--lib").arg(dir.join("libmemtrim.so")).arg("--").arg(bin.join("true"));
        c.env("MARKER_FILE", &marker).env_remove("LD_PRELOAD");
        let o = run_for(&mut c, Duration::from_secs(20));
        assert!(!marker.exists(), "{name:?}: the library planted where ld.so's expansion leads ran:\n{}", show(&o));
        assert!(o.status.success(), "{name:?}: did not run:\n{}", show(&o));
    }
}

/// The command's arguments go through as they are: a file name that is not UTF-8 reaches the
/// command byte for byte (and memtrim does not abort on it).
#[test]
fn arguments_that_are_not_utf8_reach_the_command() {
    use std::os::unix::ffi::OsStrExt;
    let arg = std::ffi::OsStr::from_bytes(b"a\xffb\xc3(");
    let mut c = Command::new(cli());
    c.args(["run", "--", "printf", "%s"]).arg(arg).env_remove("LD_PRELOAD");
    let o = run_for(&mut c, Duration::from_secs(20));
    assert!(o.status.success(), "memtrim run failed on an argument that is not UTF-8:\n{}", show(&o));
    assert_eq!(o.stdout, arg.as_bytes(), "the argument changed on the way:\n{}", show(&o));
}

/// A name given twice in memtrim run's environment reaches the command as getenv read it there:
/// its first value (MEMTRIM_REPORT=1 then =0 prints the exit summary), not merged into the last.
#[test]
fn a_name_given_twice_keeps_its_first_value_through_run() {
    let launcher = common::compile("execve_env.c", &[]);
    let mut c = Command::new(launcher);
    c.args(["MEMTRIM_REPORT=1", "MEMTRIM_REPORT=0", "--"]).arg(cli()).args(["run", "--", "/bin/true"]);
    let o = run_for(&mut c, Duration::from_secs(20));
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("exit: live"), "MEMTRIM_REPORT=1 then =0 through memtrim run: no exit summary (the last value was used):\n{}", show(&o));
}
