//! A release touches only the thread arenas glibc has published on main_arena's list: an arena
//! glibc is still creating (top chunk written, lock word not yet initialised, not yet linked)
//! keeps every byte (tests/c/unpublished_arena.c builds one by hand). That the tops of
//! published thread arenas are still given back is tests/release.rs::thread_arena_tops_are_released.

mod common;

use common::{TUNING, TempDir, preloaded, show, text, without_env};
use std::process::Command;
use std::time::Duration;

#[test]
fn release_leaves_an_arena_glibc_has_not_published() {
    let bin = common::compile("unpublished_arena.c", &[]);
    let dir = TempDir::new("unpublished");
    let mut c = Command::new(&bin);
    let o = common::run_for(preloaded(without_env(&mut c, TUNING).env("MEMTRIM_SHM_DIR", dir.path())), Duration::from_secs(60));
    let out = text(&o.stdout);
    if out.starts_with("SKIP") {
        eprintln!("{out}");
        return;
    }
    assert!(o.status.success() && out.ends_with("ok\n"), "{}", show(&o));
}
