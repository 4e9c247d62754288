//! The worker thread starts lazily, MEMTRIM_START_MS (a second by default) after the process (or
//! a fork child) starts, so that a process that execs, exits or unshares before then never has a second
//! thread: unshare(CLONE_NEWUSER) (`unshare --user`, sandboxes that fork and unshare at once)
//! requires a single-threaded caller. Nothing runs on a timer without a thread or a signal, and
//! both belong elsewhere, so the start rides on the host's own calls: arming points the malloc,
//! free, calloc and realloc exports (backend's slots) at wrappers that call [`poll`] and then
//! the backend's function. [`poll`] reads the coarse clock (a few nanoseconds in the vDSO, on
//! every call, so that a process that allocates once a second still starts on time) and, once
//! the deadline has passed, runs the start hook (a function given by whoever arms, so that the allocation
//! layer knows nothing of the worker) and puts the backend's functions back: once started, the
//! hot path is what it is without this module, instruction for instruction.
//!
//! Given up: a process that allocates nothing after that time (one that waits idle on
//! its input, say) never gets its worker, hence no page, releases or limits, until it does;
//! servers' event loops mostly allocate as they wake, and every request does. Until the start,
//! calls cost a wrapper and a clock read more.
use crate::alloc::accounting;
use crate::alloc::backend::{self, CALLOC, CallocFn, FREE, FreeFn, MALLOC, MallocFn, REALLOC, ReallocFn};
use core::ffi::c_void;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering::*};
use std::time::Duration;

/// When the start is due (CLOCK_MONOTONIC, ns); 0 when no start is pending.
static DEADLINE_NS: AtomicU64 = AtomicU64::new(0);
static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The process that armed: a vfork child (or any clone sharing this memory) that crosses the
/// deadline must not start a thread that dies with it, nor take the start from the process.
static ARMED_PID: AtomicI32 = AtomicI32::new(0);
/// The backend's malloc and free, which the wrappers call and the start puts back.
static BACKEND_MALLOC: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static BACKEND_FREE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static BACKEND_CALLOC: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static BACKEND_REALLOC: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; the coarse clock is read in the vDSO, without a
    // syscall, and its few milliseconds of resolution are nothing against the delay.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `start` on the first malloc, free, calloc or realloc after `after` from now.
pub fn arm(after: Duration, start: fn()) {
    backend::active(); // the backend's functions are in their slots before they are wrapped
    HOOK.store(start as *mut (), Release);
    // SAFETY: getpid has no preconditions.
    ARMED_PID.store(unsafe { libc::getpid() }, Release);
    DEADLINE_NS.store(now_ns().saturating_add(after.as_nanos() as u64).max(1), Release);
    wrap(&MALLOC, &BACKEND_MALLOC, malloc_pending as *mut ());
    wrap(&FREE, &BACKEND_FREE, free_pending as *mut ());
    wrap(&CALLOC, &BACKEND_CALLOC, calloc_pending as *mut ());
    wrap(&REALLOC, &BACKEND_REALLOC, realloc_pending as *mut ());
}

/// No start any more (the process is exiting).
pub fn disarm() {
    DEADLINE_NS.store(0, Release);
    unwrap();
}

fn wrap(slot: &AtomicPtr<()>, backend: &AtomicPtr<()>, wrapper: *mut ()) {
    let current = slot.load(Acquire);
    if current != wrapper {
        backend.store(current, Release);
        slot.store(wrapper, Release);
    }
}

fn unwrap() {
    for (slot, backend, wrapper) in [
        (&MALLOC, &BACKEND_MALLOC, malloc_pending as *mut ()),
        (&FREE, &BACKEND_FREE, free_pending as *mut ()),
        (&CALLOC, &BACKEND_CALLOC, calloc_pending as *mut ()),
        (&REALLOC, &BACKEND_REALLOC, realloc_pending as *mut ()),
    ] {
        let b = backend.load(Acquire);
        if !b.is_null() {
            let _ = slot.compare_exchange(wrapper, b, AcqRel, Relaxed);
        }
    }
}

/// # Safety
/// None beyond C's malloc.
unsafe extern "C" fn malloc_pending(size: usize) -> *mut c_void {
    poll();
    // SAFETY: `wrap` saved the backend's malloc, a MallocFn, before it installed this wrapper.
    unsafe { core::mem::transmute::<*mut (), MallocFn>(BACKEND_MALLOC.load(Acquire))(size) }
}

/// # Safety
/// As C's free: `p` is null or a live block of the backend, which the caller gives up.
unsafe extern "C" fn free_pending(p: *mut c_void) {
    poll();
    // SAFETY: as in malloc_pending, for free; the caller's contract is free's.
    unsafe { core::mem::transmute::<*mut (), FreeFn>(BACKEND_FREE.load(Acquire))(p) }
}

/// # Safety
/// None beyond C's calloc.
unsafe extern "C" fn calloc_pending(n: usize, size: usize) -> *mut c_void {
    poll();
    // SAFETY: as in malloc_pending, for calloc.
    unsafe { core::mem::transmute::<*mut (), CallocFn>(BACKEND_CALLOC.load(Acquire))(n, size) }
}

/// # Safety
/// As the backend's realloc: `p` is a live block of the backend, `size` above 0.
unsafe extern "C" fn realloc_pending(p: *mut c_void, size: usize) -> *mut c_void {
    poll();
    // SAFETY: as in malloc_pending, for realloc; the caller's contract is the backend's.
    unsafe { core::mem::transmute::<*mut (), ReallocFn>(BACKEND_REALLOC.load(Acquire))(p, size) }
}

/// Starts what was armed once its deadline has passed.
fn poll() {
    let due = DEADLINE_NS.load(Acquire);
    if due == 0 || now_ns() < due {
        return;
    }
    // SAFETY: getpid has no preconditions; a syscall, made only once the deadline has passed.
    if unsafe { libc::getpid() } != ARMED_PID.load(Acquire) {
        return;
    }
    // One caller wins; the hook's own allocations (pthread_create's) find nothing pending.
    if DEADLINE_NS.compare_exchange(due, 0, AcqRel, Relaxed).is_err() {
        return;
    }
    let hook = HOOK.load(Acquire);
    if !hook.is_null() {
        // SAFETY: HOOK only ever holds a `fn()` stored by `arm`. What the start allocates
        // (pthread_create's calloc) is the library's, not the host's.
        accounting::uncounted(|| unsafe { core::mem::transmute::<*mut (), fn()>(hook)() });
    }
    unwrap();
}
