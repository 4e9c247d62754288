//! Releases on the glibc backend divert the host (side pool, deferred frees) without costing it
//! anything it would not pay without the library: no allocation fails for lack of the address
//! space the pool took, no entry point of the malloc family waits for the release (nor for
//! the side pool's lock: src/side_pool.rs's unit test), and the deferred frees end where
//! malloc_trim reaches them.
mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Under RLIMIT_AS of 2,000,000 KiB, set before a first release or between two, a 1200 MiB
/// malloc after the release succeeds, as it does without the library.
#[test]
fn release_leaves_the_address_space_to_the_host() {
    if !require_tool("gcc") {
        return;
    }
    big_malloc_under_address_limit(&["first", "between"]);
}

/// The host may set RLIMIT_AS at any time, not only before a release: set after one, with no
/// release since, and again while a block the side pool served during a release is still live,
/// the 1200 MiB malloc succeeds as it does without the library.
#[test]
fn side_pool_holds_no_address_space_after_a_release() {
    if !require_tool("gcc") || allocator() != "glibc" {
        return;
    }
    big_malloc_under_address_limit(&["after", "live"]);
}

/// tests/c/address_limit.c in each of its modes `whens`, without the library and then with it.
fn big_malloc_under_address_limit(whens: &[&str]) {
    let bin = compile("address_limit.c", &["-fno-builtin"]);
    for when in whens {
        let plain = run_for(without_env(&mut Command::new(&bin), TUNING).arg(when).env_remove("LD_PRELOAD"), Duration::from_secs(60));
        assert!(plain.status.success(), "without the library\n{}", show(&plain));
        let o = run_for(preloaded(without_env(&mut Command::new(&bin), TUNING).arg(when)), Duration::from_secs(60));
        assert!(o.status.success(), "under the library, unlike without it\n{}", show(&o));
    }
}

fn stall_program() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stall");
    let st = Command::new("gcc").args(["-O2", "-pthread", "-o"]).arg(&out).arg(root().join("benches/stall.c")).arg("-ldl").status().expect("gcc runs");
    assert!(st.success(), "gcc failed on benches/stall.c");
    out
}

/// `release R ms, ...; longest ENTRY+free during it S ms (N calls), ...` as (R, S, N).
fn stall_figures(line: &str) -> (f64, f64, u64) {
    let num = |after: &str| -> f64 {
        let at = line.find(after).unwrap_or_else(|| panic!("no {after:?} in {line:?}")) + after.len();
        line[at..].split([' ', ',']).next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no figure after {after:?} in {line:?}"))
    };
    (num("release "), num("during it "), num("ms (") as u64)
}

/// While a release walks a 256 MiB fragmented heap, a posix_memalign and a 64 MiB malloc (beyond
/// the side pool's largest class) each return in a small part of the release's own time.
#[test]
fn aligned_and_large_allocations_do_not_wait_for_a_release() {
    if !require_tool("gcc") || allocator() != "glibc" {
        return;
    }
    let bin = stall_program();
    let _one = serial();
    for entry in ["posix_memalign", "malloc64m"] {
        let o = run_for(preloaded(without_env(&mut Command::new(&bin), TUNING).args(["256", entry])), Duration::from_secs(120));
        assert!(o.status.success(), "{}", show(&o));
        let out = text(&o.stdout);
        let (release, longest, calls) = stall_figures(out.trim());
        assert!(release >= 20.0, "the release took {release} ms: too short to tell a stall\n{out}");
        assert!(calls > 0, "no {entry} during the release\n{out}");
        assert!(longest < release / 4.0, "{entry} waited {longest} ms during a release of {release} ms\n{out}");
    }
}

/// Frees deferred during a release end in glibc's arenas, not parked in the tcache of the thread
/// that handed them back (tests/c/drain_tcache.c: glibc's in-use bytes back within 32 KiB).
#[test]
fn deferred_frees_are_not_parked_in_a_tcache() {
    if !require_tool("gcc") || allocator() != "glibc" {
        return;
    }
    let bin = compile("drain_tcache.c", &["-fno-builtin"]);
    let _one = serial();
    let o = run_for(preloaded(without_env(&mut Command::new(&bin), TUNING)), Duration::from_secs(60));
    assert!(o.status.success(), "{}", show(&o));
}
