//! Giving retained memory back to the kernel, measured by the resident set before and after,
//! and the record of every release.
use crate::{clock, procfs};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::Instant;

static BUSY: AtomicBool = AtomicBool::new(false);
static TRIMS: AtomicU64 = AtomicU64::new(0);
static RELEASED: AtomicU64 = AtomicU64::new(0);
static LAST_US: AtomicU64 = AtomicU64::new(0);
static MAX_US: AtomicU64 = AtomicU64::new(0);
static LAST_AT_MS: AtomicU64 = AtomicU64::new(0);

pub struct Record {
    pub trims: u64,
    pub released: u64,
    pub last_us: u64,
    pub max_us: u64,
    pub last_at_ms: u64,
}

/// `malloc_trim(0)` on every arena; returns how much the resident set shrank. A release
/// already running elsewhere makes this one return 0 at once instead of queueing behind it.
pub fn trim_now() -> usize {
    if BUSY.swap(true, Acquire) {
        return 0;
    }
    let t0 = Instant::now();
    let before = procfs::rss_bytes();
    // SAFETY: malloc_trim may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) };
    let released = before.saturating_sub(procfs::rss_bytes());
    let us = t0.elapsed().as_micros() as u64;
    TRIMS.fetch_add(1, Relaxed);
    RELEASED.fetch_add(released, Relaxed);
    LAST_US.store(us, Relaxed);
    MAX_US.fetch_max(us, Relaxed);
    LAST_AT_MS.store(clock::unix_ms(), Relaxed);
    BUSY.store(false, Release);
    released as usize
}

pub fn record() -> Record {
    Record {
        trims: TRIMS.load(Relaxed),
        released: RELEASED.load(Relaxed),
        last_us: LAST_US.load(Relaxed),
        max_us: MAX_US.load(Relaxed),
        last_at_ms: LAST_AT_MS.load(Relaxed),
    }
}

/// A release that was running in the parent does not run in the child.
pub fn after_fork_in_child() {
    BUSY.store(false, Relaxed);
}
