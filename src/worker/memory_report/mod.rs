//! `memtrim report`, the library's half: on the worker thread, when the page's report_requested
//! moves, the allocator's own view of the heap is gathered and written next to the page (in its
//! per-user directory) as `<page>.report` (JSON, 0600, replaced whole through
//! memtrim_common::atomic_file). The CLI (crates/cli/src/report/) reads it and adds the
//! kernel's view from /proc/PID/smaps.
//!
//! What is gathered (each bounded, and safe on a live server): glibc's arenas, heaps and
//! mmapped blocks (glibc.rs), jemalloc's arenas on its backend (jemalloc.rs), CPython's arenas
//! (python.rs), memtrim's own ranges, with resident bytes by mincore (residency.rs), and what a
//! release would return (the prediction: heaps.rs for glibc, jemalloc.rs).
mod glibc;
mod heaps;
mod jemalloc;
mod malloc_info;
mod mmapped_probe;
mod python;

use crate::alloc::{accounting, backend, side_pool};
use crate::python::pymalloc;
use crate::sys::{clock, procfs, stderr};
use crate::worker::residency::Residency;
use memtrim_common::config::{Allocator, Config, LogLevel};
use memtrim_common::json::Writer;
use memtrim_common::{atomic_file, page, report};
use std::path::Path;
use std::time::Instant;

/// The report file of the page of (pid, start) in `dir`: beside the page, in its per-user
/// directory.
fn path(dir: &str, pid: u32, start_ticks: u64) -> String {
    format!("{}/{}{}", crate::worker::page_file::user_dir(dir), page::file_name(pid, start_ticks), report::SUFFIX)
}

/// Gathers the report for request number `request` and writes it beside the page in
/// `cfg.shm_dir`; on failure writes a report that says why (so that the CLI never waits for
/// nothing). Runs on the worker thread.
pub fn serve(cfg: &Config, pid: u32, start_ticks: u64, request: u32) {
    let text = gather(pid, start_ticks, request);
    if let Err(e) = atomic_file::replace(Path::new(&path(&cfg.shm_dir, pid, start_ticks)), text.as_bytes(), 0o600)
        && cfg.log >= LogLevel::Warn
    {
        stderr::line(&format!("memtrim: cannot write the report: {e}"));
    }
}

/// This thread's stack: memtrim's own.
fn worker_stack() -> Option<(usize, usize)> {
    // SAFETY: attr is initialised by pthread_getattr_np and destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let (mut addr, mut size) = (core::ptr::null_mut(), 0usize);
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0).then_some((addr as usize, addr as usize + size))
    }
}

fn gather(pid: u32, start_ticks: u64, request: u32) -> String {
    let t0 = Instant::now();
    let cpu0 = clock::thread_cpu_us();
    let page = procfs::page_size();
    let mut res = Residency::new(page);
    let allocator = backend::active();
    let mut w = Writer::with_capacity(32 << 10);
    w.begin_object();
    w.field("version", report::VERSION).field("pid", pid).field("start_ticks", start_ticks).field("request", request);
    w.field("gathered_at_ms", clock::unix_ms());
    w.field(
        "allocator",
        match allocator {
            Allocator::Glibc => "glibc",
            Allocator::Jemalloc => "jemalloc",
        },
    );
    w.field("page_size", page).field("live_bytes", accounting::totals().live);
    let mut notes: Vec<String> = Vec::new();

    let own = [("side_pool", side_pool::range()), ("worker_stack", worker_stack())];
    let own_ranges: Vec<(usize, usize)> = own.iter().filter_map(|o| o.1).collect();
    let mut glibc = glibc::gather(&mut res, page, &own_ranges, &mut notes);
    glibc.write(&mut w, &mut res);
    let release = match allocator {
        Allocator::Glibc => glibc.release,
        Allocator::Jemalloc => jemalloc::write(&mut w),
    };
    if pymalloc::state() != page::PyState::NoPython {
        python::write(&mut w, &mut res);
    }
    // SAFETY: looks a name up; CRuby exports ruby_version.
    if !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"ruby_version".as_ptr()) }.is_null() {
        w.field("ruby", true);
    }
    w.key("own").begin_object();
    for (name, r) in own {
        if let Some((s, e)) = r {
            w.key(name).numbers(&[s as u64, (e - s) as u64, res.bytes(s, e)]);
        }
    }
    w.end_object();
    notes.push(
        match allocator {
            Allocator::Glibc => "glibc does not record which free pages it already gave back: the prediction counts whole free pages only as far as the arena's resident bytes (mincore) leave room for them",
            Allocator::Jemalloc => "the prediction is jemalloc's dirty and muzzy pages; some were never touched (the cache-oblivious page of large blocks, the rest of fresh mappings) and are not resident, so it can overstate by them; glibc's arenas here hold memtrim's own allocations and are not released",
        }
        .into(),
    );
    w.key("prediction").begin_object().field("release_bytes", release);
    w.field(
        "method",
        match allocator {
            Allocator::Glibc => "whole free pages of the bins (expected at random alignment) bounded by the arena's resident free bytes, plus the resident trimmable top of the main arena",
            Allocator::Jemalloc => "dirty plus muzzy pages",
        },
    );
    w.end_object();
    w.key("cost").begin_object();
    w.field("total_us", t0.elapsed().as_micros() as u64).field("cpu_us", clock::thread_cpu_us().saturating_sub(cpu0));
    w.field("malloc_info_us", glibc.malloc_info_us).field("malloc_info_and_heaps_us", glibc.malloc_info_and_heaps_us);
    w.field("max_lock_us", glibc.max_lock.1).field("max_lock_arena", glibc.max_lock.0);
    w.field("resident_us", glibc.resident_us).field("mincore_calls", res.calls).field("probe_us", glibc.probe_us).field("probes", glibc.probes());
    w.end_object();
    w.key("notes").begin_array();
    for n in &notes {
        w.value(n);
    }
    w.end_array().end_object();
    let mut text = w.finish();
    text.push('\n');
    text
}
