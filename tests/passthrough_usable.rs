//! When glibc serves alone (MEMTRIM_DISABLE=1; MALLOC_CHECK_ on glibc 2.28 to 2.33)
//! malloc_usable_size must be glibc's own, not that of another object loaded after the library
//! that happens to export one (a program linked against libjemalloc): glibc's blocks are not its.
mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn disabled_malloc_usable_size_is_glibcs_not_another_librarys() {
    if !require_tool("gcc") {
        return;
    }
    let dir = TempDir::new("usable-elsewhere");
    let other = dir.join("libother.so");
    let src = root().join("tests/c/usable_elsewhere.c");
    let st = Command::new("gcc").args(["-shared", "-fPIC", "-DOTHER_LIB", "-o"]).arg(&other).arg(&src).status().expect("gcc runs");
    assert!(st.success(), "gcc -shared failed");
    let rpath = format!("-Wl,-rpath,{}", dir.path().display());
    let bin = compile("usable_elsewhere.c", &[other.to_str().unwrap(), &rpath]);
    let o = run_for(preloaded(Command::new(&bin).env("MEMTRIM_DISABLE", "1")), Duration::from_secs(20));
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), "usable 104", "MEMTRIM_DISABLE=1: malloc_usable_size of a 100-byte glibc block\n{}", show(&o));
}
