//! realloc under MEMTRIM_HARD_LIMIT: the limit bounds the growth, and glibc (or jemalloc)
//! resizes in place as without a limit. tests/c/limit_realloc.c, with libmemtrim.so preloaded
//! on the backend TEST_ALLOCATOR names.
mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Compiled once: the tests run in parallel.
fn program() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| require_tool("gcc").then(|| compile("limit_realloc.c", &["-fno-builtin"]))).clone()
}

fn limited(bin: &PathBuf, limit: Option<&str>, arg: &str) -> std::process::Output {
    let mut c = Command::new(bin);
    without_env(&mut c, TUNING).arg(arg);
    if let Some(l) = limit {
        c.env("MEMTRIM_HARD_LIMIT", l);
    }
    run_for(preloaded(&mut c), Duration::from_secs(120))
}

/// 40 MiB grown to 41 MiB under a 64 MiB limit: live bytes stay at 41 MiB.
#[test]
fn realloc_growth_under_the_limit_succeeds() {
    let Some(bin) = program() else { return };
    let o = limited(&bin, Some("64M"), "grow");
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("refused"), "{}", show(&o));
}

/// A buffer grown 4 KiB at a time to 8 MiB costs under a 1 GiB limit what it costs without one
/// (the best of several rounds each; at most 1.5 times).
#[test]
fn realloc_growth_loop_costs_what_it_costs_without_a_limit() {
    let Some(bin) = program() else { return };
    let _one = serial();
    let best = |limit: Option<&str>| -> f64 {
        let o = limited(&bin, limit, "loop");
        assert!(o.status.success(), "{}", show(&o));
        text(&o.stdout).lines().find_map(|l| l.strip_prefix("best ")?.parse().ok()).unwrap_or_else(|| panic!("no figure\n{}", show(&o)))
    };
    let (free, limited) = (best(None), best(Some("1G")));
    let (free, limited) = (free.min(best(None)), limited.min(best(Some("1G"))));
    eprintln!("4 KiB steps to 8 MiB: {free:.2} ms without a limit, {limited:.2} ms under MEMTRIM_HARD_LIMIT=1G");
    assert!(limited <= 1.5 * free, "{limited:.2} ms under MEMTRIM_HARD_LIMIT=1G, {free:.2} ms without a limit: {:.1} times", limited / free);
}

/// A 20 MiB heap block shrunk to 14 MiB while a release runs, under a 30 MiB limit, succeeds as
/// it does outside a release (the shrink needs no new block).
#[test]
fn realloc_shrink_during_a_release_is_not_refused() {
    let Some(bin) = program() else { return };
    if allocator() != "glibc" {
        return;
    }
    let _one = serial();
    let o = limited(&bin, Some("30M"), "release");
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("refused"), "{}", show(&o));
}

/// A 100 MiB block grown to 110 MiB while a release runs, under a 160 MiB limit: glibc grows an
/// mmapped chunk with mremap, taking no arena lock, so the library lets it, and the limit counts
/// the growth alone.
#[test]
fn realloc_growth_of_an_mmapped_chunk_during_a_release_is_not_refused() {
    let Some(bin) = program() else { return };
    if allocator() != "glibc" {
        return;
    }
    let _one = serial();
    let o = limited(&bin, Some("160M"), "release-grow");
    assert!(o.status.success(), "{}", show(&o));
    assert!(!text(&o.stderr).contains("refused"), "{}", show(&o));
}
