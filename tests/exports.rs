//! The exports as glibc's own: composite entry points call what glibc's would (the program's
//! realloc from reallocarray), and the counting stays exact when a signal handler allocates on
//! a thread that is counting. Programs in tests/c/, run with libmemtrim.so preloaded on the
//! backend TEST_ALLOCATOR names.
mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// A program with its own malloc, free, calloc and realloc but not reallocarray: glibc's
/// reallocarray calls realloc through the dynamic linker, so it gets the program's.
#[test]
fn reallocarray_calls_the_programs_own_realloc() {
    if !require_tool("gcc") {
        return;
    }
    let bin = compile("own_malloc.c", &["-fno-builtin"]);
    let plain = run_for(Command::new(&bin).env_remove("LD_PRELOAD"), Duration::from_secs(20));
    assert!(plain.status.success(), "without the library\n{}", show(&plain));
    let o = run_for(preloaded(&mut Command::new(&bin)), Duration::from_secs(20));
    assert!(o.status.success(), "under the library, unlike without it\n{}", show(&o));
    assert!(text(&o.stdout).contains("ok reallocarray used the program's realloc"), "{}", show(&o));
}

/// SIGALRM every 20 us, its handler allocating and freeing, while the main thread allocates:
/// live bytes and blocks exact at the end. glibc only: jemalloc's own per-thread counters,
/// which the jemalloc backend's slots read, are not updated in a signal-safe way.
#[test]
fn signal_handler_allocations_are_counted_exactly() {
    if !require_tool("gcc") || allocator() != "glibc" {
        return;
    }
    let bin = compile("signal_alloc.c", &["-fno-builtin"]);
    let o = run_for(preloaded(Command::new(&bin).arg("2")), Duration::from_secs(30));
    assert!(o.status.success() && !text(&o.stdout).contains("FAIL"), "{}", show(&o));
}
