//! Giving retained memory back to the kernel, measured by the resident set before and after,
//! and the record of every release.
use crate::alloc::{backend, divert};
use crate::python::pymalloc;
use crate::sys::{clock, jemalloc_ctl, procfs, stderr};
use crate::worker::arena_tops;
use crate::worker::heap_residency::{Heaps, Released, Snapshot};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use memtrim_common::config::{Allocator, Config, LogLevel};
use memtrim_common::page::{REASONS, Reason, ReleaseKind};
use memtrim_common::units::format_size;
use std::time::Instant;

/// How long a release waits for the interpreter to run its step.
const PYTHON_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

static BUSY: AtomicBool = AtomicBool::new(false);
static BY_REASON: [AtomicU64; REASONS] = [const { AtomicU64::new(0) }; REASONS];
static RELEASED: AtomicU64 = AtomicU64::new(0);
static LAST_US: AtomicU64 = AtomicU64::new(0);
static MAX_US: AtomicU64 = AtomicU64::new(0);
static LAST_AT_MS: AtomicU64 = AtomicU64::new(0);
static LAST_REASON: AtomicU64 = AtomicU64::new(0);
static LAST_BEFORE: AtomicU64 = AtomicU64::new(0);
static LAST_AFTER: AtomicU64 = AtomicU64::new(0);
/// Releases from the host's own threads (memtrim_trim()) for the worker to book, in one word so
/// that a release is booked whole: the last one's kind + 1 in the top byte (0: none), their CPU
/// (µs) below.
static UNBOOKED: AtomicU64 = AtomicU64::new(0);
const CPU_BITS: u64 = (1 << 56) - 1;

/// Every release so far, for the page.
pub(super) struct Record {
    pub by_reason: [u64; REASONS],
    pub released: u64,
    pub last_us: u64,
    pub max_us: u64,
    pub last_at_ms: u64,
    pub last_reason: u64,
    pub last_before: u64,
    pub last_after: u64,
}

/// One release that ran: resident bytes before and after, its duration, the worker's CPU it
/// took, and the heap pages it made non-resident (glibc, when the caller watches the heaps).
pub struct Outcome {
    pub released: u64,
    pub before: u64,
    pub after: u64,
    pub us: u64,
    pub cpu_us: u64,
    pub pages: Option<Released>,
}

/// A release of `kind`: `malloc_trim(0)` on every arena and the thread arenas' tops (glibc's
/// trim), with the host diverted; the tops alone (no walk of the bins, no divert: each arena is
/// only tried, never waited for); or, on jemalloc, the pages its decay times say are due (a busy
/// jemalloc reuses recently freed pages and would fault them in again) or all unused pages. With
/// `heaps`, the heaps' residency is read just before and after, while the host is still diverted,
/// so that the pages the release made non-resident are exactly known. A release already running
/// elsewhere makes this one return `None` at once instead of queueing behind it.
pub fn release(cfg: &Config, reason: Reason, kind: ReleaseKind, heaps: Option<&mut Heaps>) -> Option<Outcome> {
    if BUSY.swap(true, Acquire) {
        return None;
    }
    let t0 = Instant::now();
    let cpu0 = clock::thread_cpu_us();
    // CPython's empty pools go back at the interpreter's next safe point (pymalloc.rs), while
    // the allocator's release runs; the resident set after waits for them a little. Not while
    // the host is busy: it takes empty pools again soon, and each would fault its pages back in.
    let asked = clock::unix_ms();
    pymalloc::request(reason != Reason::Retained);
    let before = procfs::rss_bytes();
    let mut snap = heaps.and_then(Heaps::snapshot);
    let mut watched = |run: &dyn Fn()| {
        if let Some(s) = snap.as_mut() {
            s.take(false);
        }
        run();
        if let Some(s) = snap.as_mut() {
            s.take(true);
        }
    };
    match kind {
        ReleaseKind::Trim | ReleaseKind::Tops if backend::active() == Allocator::Glibc => {
            let arenas = if cfg.arena_tops { arena_tops::find(cfg) } else { Vec::new() };
            if kind == ReleaseKind::Tops {
                watched(&|| arena_tops::release(&arenas));
            } else {
                divert::run(|| {
                    watched(&|| {
                        // SAFETY: malloc_trim may be called from any thread at any time.
                        unsafe { libc::malloc_trim(0) };
                        arena_tops::release(&arenas);
                    })
                });
            }
        }
        ReleaseKind::JeDecay => jemalloc_ctl::decay(),
        _ => jemalloc_ctl::purge(),
    }
    let cpu_us = clock::thread_cpu_us().saturating_sub(cpu0);
    // the allocator's part alone: the interpreter's steps stall no thread of the host's
    let us = t0.elapsed().as_micros() as u64;
    if reason != Reason::Retained {
        // a busy release asks for no pools: the sample after it must not come late
        pymalloc::wait_for_walk(asked, PYTHON_WAIT);
    }
    let after = procfs::rss_bytes();
    let pages = snap.map(Snapshot::released);
    let out = Outcome { released: before.saturating_sub(after), before, after, us, cpu_us, pages };
    BY_REASON[reason as usize].fetch_add(1, Relaxed);
    RELEASED.fetch_add(out.released, Relaxed);
    LAST_US.store(out.us, Relaxed);
    MAX_US.fetch_max(out.us, Relaxed);
    LAST_AT_MS.store(clock::unix_ms(), Relaxed);
    LAST_REASON.store(reason as u64, Relaxed);
    LAST_BEFORE.store(before, Relaxed);
    LAST_AFTER.store(after, Relaxed);
    if reason == Reason::Api {
        let add = |old: u64| Some((kind as u64 + 1) << 56 | ((old & CPU_BITS) + cpu_us).min(CPU_BITS));
        let _ = UNBOOKED.fetch_update(AcqRel, Relaxed, add);
    }
    BUSY.store(false, Release);
    if cfg.log >= LogLevel::Info {
        stderr::line(&format!(
            "memtrim: pid {} release ({}): rss {} -> {} ({} released) in {:.1} ms",
            std::process::id(),
            reason.name(),
            format_size(out.before),
            format_size(out.after),
            format_size(out.released),
            out.us as f64 / 1000.0
        ));
    }
    Some(out)
}

/// The release for every reason but a busy process's fragmentation: all the allocator can give.
pub fn full(glibc: bool) -> ReleaseKind {
    if glibc { ReleaseKind::Trim } else { ReleaseKind::JePurge }
}

/// The releases the host made itself since the last call (memtrim_trim()): their last kind and
/// their CPU, for the cost model.
pub(super) fn take_unbooked() -> Option<(ReleaseKind, u64)> {
    let word = UNBOOKED.swap(0, AcqRel);
    let kind = (word >> 56).checked_sub(1)?;
    Some((ReleaseKind::ALL.get(kind as usize).copied()?, word & CPU_BITS))
}

pub(super) fn record() -> Record {
    Record {
        by_reason: core::array::from_fn(|i| BY_REASON[i].load(Relaxed)),
        released: RELEASED.load(Relaxed),
        last_us: LAST_US.load(Relaxed),
        max_us: MAX_US.load(Relaxed),
        last_at_ms: LAST_AT_MS.load(Relaxed),
        last_reason: LAST_REASON.load(Relaxed),
        last_before: LAST_BEFORE.load(Relaxed),
        last_after: LAST_AFTER.load(Relaxed),
    }
}

/// A release that was running in the parent does not run in the child.
pub fn after_fork_in_child() {
    BUSY.store(false, Relaxed);
    UNBOOKED.store(0, Relaxed);
}
