//! Releases without stalls. `malloc_trim` holds each arena's lock while it walks the arena
//! (hundreds of milliseconds on a big fragmented heap). For that long, host allocations are
//! served by the side pool and host frees of glibc blocks are deferred to a lock-free list that
//! is handed back to glibc afterwards, so no host thread waits on a lock the release holds.
//! Under a finite RLIMIT_AS the side pool's reservation would take address space the host may
//! need (a large malloc that plain glibc would serve), so the release then runs undiverted; the
//! limit is read at every release, since a host may set it after start (uwsgi's limit-as in a
//! worker); between releases the pool holds only what its live blocks need (side_pool.rs).
use crate::alloc::{accounting, side_pool};
use crate::sys::glibc;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering::*};
use std::time::Duration;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static DEFERRED: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

/// A thread that read ACTIVE as false just before it was set may still be on its way into
/// glibc; the release starts after this grace.
const GRACE: Duration = Duration::from_millis(2);

/// Whether host calls are diverted now. The glibc family's malloc and free learn it from their
/// fast path being closed (accounting::set_fast_path) and ask here on their slow path.
#[inline(always)]
pub fn active() -> bool {
    ACTIVE.load(Relaxed)
}

/// Runs `release` with the host diverted; without a side pool, runs it as it is.
pub fn run<T>(release: impl FnOnce() -> T) -> T {
    if address_space_limited() {
        return release();
    }
    if !side_pool::reserve() {
        return release();
    }
    ACTIVE.store(true, SeqCst);
    accounting::set_fast_path(false);
    std::thread::sleep(GRACE);
    let r = release();
    ACTIVE.store(false, SeqCst);
    accounting::set_fast_path(true);
    drain_uncached();
    side_pool::settle();
    r
}

/// [`drain`] on a short-lived thread: glibc keeps small blocks a thread frees in that thread's
/// tcache (up to 7 of each size up to 1 KiB, about 0.2 MiB), out of malloc_trim's reach while
/// the thread lives, and gives them to the arenas when it exits. The thread runs on a stack of
/// ours, so that glibc frees its TLS block at the join instead of caching it with the stack; it
/// counts nothing (the frees were counted when deferred), nor does this thread while it makes
/// and joins it, and it takes no signal (they belong to the host). Where no thread can be made,
/// drains here.
fn drain_uncached() {
    const STACK: usize = 256 << 10;
    if DEFERRED.load(Relaxed).is_null() {
        return;
    }
    extern "C" fn drainer(_: *mut c_void) -> *mut c_void {
        accounting::exclude_this_thread();
        drain();
        core::ptr::null_mut()
    }
    // SAFETY: a fresh anonymous mapping.
    let stack = unsafe {
        libc::mmap(core::ptr::null_mut(), STACK, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK, -1, 0)
    };
    if stack == libc::MAP_FAILED {
        return drain();
    }
    // SAFETY: plain pthread calls on local out-pointers; the thread is joined before its stack
    // is unmapped.
    let made = accounting::uncounted(|| unsafe {
        let mut attr = core::mem::zeroed::<libc::pthread_attr_t>();
        let (mut all, mut old) = (core::mem::zeroed::<libc::sigset_t>(), core::mem::zeroed::<libc::sigset_t>());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut t: libc::pthread_t = 0;
        let made = libc::pthread_attr_init(&mut attr) == 0
            && libc::pthread_attr_setstack(&mut attr, stack, STACK) == 0
            && libc::pthread_create(&mut t, &attr, drainer, core::ptr::null_mut()) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        if made {
            libc::pthread_join(t, core::ptr::null_mut());
        }
        made
    });
    // SAFETY: our mapping, no longer in use.
    unsafe { libc::munmap(stack, STACK) };
    if !made {
        drain();
    }
}

/// A finite RLIMIT_AS: no mapping may be added that the host did not ask for, since it could
/// make a host allocation fail that would succeed without memtrim.
pub fn address_space_limited() -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) != 0 || lim.rlim_cur != libc::RLIM_INFINITY }
}

/// Defers a free of a glibc block; the block's first word links the list.
///
/// # Safety
/// `p` is a live glibc block, already counted out.
pub unsafe fn defer(p: *mut c_void) {
    let mut head = DEFERRED.load(Relaxed);
    loop {
        // SAFETY: the block's first word, the list's now that the caller gave the block up.
        unsafe { *(p as *mut *mut c_void) = head };
        match DEFERRED.compare_exchange_weak(head, p, Release, Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Hands deferred frees to glibc; also called on every worker wake-up for frees that raced
/// with the end of a release.
pub fn drain() {
    let mut p = DEFERRED.swap(core::ptr::null_mut(), Acquire);
    while !p.is_null() {
        // SAFETY: every node is a glibc block pushed by `defer`.
        unsafe {
            let next = *(p as *mut *mut c_void);
            glibc::__libc_free(p);
            p = next;
        }
    }
}

/// A fork during a release: the releasing thread is gone in the child.
pub fn after_fork_in_child() {
    ACTIVE.store(false, Relaxed);
    accounting::set_fast_path(true);
    side_pool::after_fork_in_child();
    drain();
}
