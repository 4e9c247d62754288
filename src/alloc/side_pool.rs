//! A small allocator in a reserved, recognisable address range that serves the host while a
//! release holds glibc's arena locks (see divert.rs). Blocks carry a glibc-style header marked
//! IS_MMAPPED, so the usual usable-size arithmetic holds for them and the exports tell them apart
//! on the path glibc's own mmapped chunks already take: no cost on the common path. An aligned
//! block sits inside a larger one behind a second header whose prev_size is the offset back to
//! the larger block's start, as in glibc's own mmapped memalign chunks.
//! Power-of-two classes from 32 B to 32 MiB, one free list each, under a spin lock that is held
//! for a few instructions (and the odd mprotect). Host calls only try the lock for a bounded
//! time: a signal handler that allocates on the thread holding it would otherwise spin forever.
//! An allocation that finds the lock taken is served elsewhere (the caller maps a block of its
//! own); a free that finds it taken goes onto a lock-free list that the next holder files.
//! The range is reserved PROT_NONE, which the kernel charges to no commit limit (under
//! vm.overcommit_memory=2 it ignores MAP_NORESERVE on a writable mapping and would charge it
//! all); pages become writable in steps as the bump pointer grows. Outside a release the pool
//! keeps only the part of the range its live blocks need, and none once they are freed: a host
//! may set RLIMIT_AS at any time, and address space the pool sat on could make its next large
//! malloc fail.
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

/// Address space only, and only while a release runs (or blocks of one live); no bigger than a
/// release window of allocations can need.
const RESERVES: [usize; 2] = [1 << 30, 128 << 20];
const MIN_SHIFT: u32 = 5;
const MAX_SHIFT: u32 = 25;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
const HEADER: usize = 16;
const IS_MMAPPED: usize = 2;
/// Freed blocks at least this big give their interior pages back at once.
const MADVISE_FROM: usize = 64 << 10;
const PAGE: usize = 4096;
/// Pages are made writable this much at a time.
const COMMIT_STEP: usize = 4 << 20;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static BUMP: AtomicUsize = AtomicUsize::new(0);
/// Bytes from BASE that are writable.
static COMMITTED: AtomicUsize = AtomicUsize::new(0);
/// Blocks handed out and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static FREE: [AtomicPtr<u8>; CLASSES] = [const { AtomicPtr::new(core::ptr::null_mut()) }; CLASSES];
static LOCK: AtomicBool = AtomicBool::new(false);
/// Blocks freed while the lock was taken, linked through their first word after the header.
static PENDING: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
/// Tries of the lock before a host call gives up on it (tens of microseconds).
const TRIES: u32 = 1024;
/// From `reserve` to `settle`: a release may serve the host from the range, which stays whole.
static RELEASING: AtomicBool = AtomicBool::new(false);

/// Reserves the range for a release (address space only); false if the system refuses. A range
/// that live blocks kept is grown back in place where the address space after it is free.
pub fn reserve() -> bool {
    lock();
    RELEASING.store(true, Relaxed);
    regrow();
    for len in RESERVES {
        if BASE.load(Relaxed) != 0 {
            break;
        }
        // SAFETY: a fresh anonymous mapping.
        let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) };
        if p != libc::MAP_FAILED {
            LEN.store(len, Relaxed);
            BASE.store(p as usize, Release);
        }
    }
    let reserved = BASE.load(Relaxed) != 0;
    RELEASING.store(reserved, Relaxed);
    unlock();
    reserved
}

#[inline]
pub fn contains(p: *mut c_void) -> bool {
    let base = BASE.load(Relaxed);
    base != 0 && (p as usize).wrapping_sub(base) < LEN.load(Relaxed)
}

/// The reserved range, once there is one (for `memtrim report`).
pub fn range() -> Option<(usize, usize)> {
    let base = BASE.load(Acquire);
    (base != 0).then(|| (base, base + LEN.load(Relaxed)))
}

/// Takes the lock within [`TRIES`] tries, then files the pending frees.
fn try_lock() -> bool {
    for tries in 1..=TRIES {
        if !LOCK.swap(true, Acquire) {
            file_pending();
            return true;
        }
        if tries % 64 == 0 {
            // SAFETY: no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            core::hint::spin_loop();
        }
    }
    false
}

/// For the release's own calls, never from a signal handler.
fn lock() {
    while !try_lock() {}
}

/// Under the lock.
fn file_pending() {
    let mut blk = PENDING.swap(core::ptr::null_mut(), Acquire);
    while !blk.is_null() {
        // SAFETY: every node is a block of this pool pushed by `free`.
        unsafe {
            let next = *(blk.add(HEADER) as *mut *mut u8);
            file(blk);
            blk = next;
        }
    }
}

fn unlock() {
    LOCK.store(false, Release);
}

/// Forgets every block; under the lock, with none live.
fn empty() {
    BUMP.store(0, Relaxed);
    COMMITTED.store(0, Relaxed);
    FREE.iter().for_each(|l| l.store(core::ptr::null_mut(), Relaxed));
}

/// Unmaps the range beyond the blocks handed out, all of it when none is live (which also gives
/// back the commit of its writable pages); under the lock, outside a release.
fn shrink() {
    let (base, len) = (BASE.load(Relaxed), LEN.load(Relaxed));
    let keep = if LIVE.load(Relaxed) == 0 { 0 } else { (BUMP.load(Relaxed) + PAGE - 1) & !(PAGE - 1) };
    if base == 0 || keep >= len {
        return;
    }
    // Off the range before it goes, so that `contains` never claims what the system maps there next.
    LEN.store(keep, Relaxed);
    if keep == 0 {
        BASE.store(0, Release);
        empty();
    } else {
        COMMITTED.store(COMMITTED.load(Relaxed).min(keep), Relaxed);
    }
    // SAFETY: the part of our range that holds no live block.
    unsafe { libc::munmap((base + keep) as *mut c_void, len - keep) };
}

/// Maps the rest of a shrunk range again, if that address space is still free; under the lock.
fn regrow() {
    let (base, len, full) = (BASE.load(Relaxed), LEN.load(Relaxed), RESERVES[0]);
    if base == 0 || len >= full {
        return;
    }
    let want = (base + len) as *mut c_void;
    // SAFETY: a fresh anonymous mapping that replaces nothing (older kernels take the address as
    // a hint, and a mapping elsewhere is given back).
    let p = unsafe {
        libc::mmap(want, full - len, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE, -1, 0)
    };
    if p == want {
        LEN.store(full, Relaxed);
    } else if p != libc::MAP_FAILED {
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(p, full - len) };
    }
}

/// Makes the range writable up to `end`; under the lock.
fn commit(end: usize) -> bool {
    let committed = COMMITTED.load(Relaxed);
    if end <= committed {
        return true;
    }
    let to = ((end + COMMIT_STEP - 1) & !(COMMIT_STEP - 1)).min(LEN.load(Relaxed));
    // SAFETY: pages of our own range.
    let ok = unsafe { libc::mprotect((BASE.load(Relaxed) + committed) as *mut c_void, to - committed, libc::PROT_READ | libc::PROT_WRITE) } == 0;
    if ok {
        COMMITTED.store(to, Relaxed);
    }
    ok
}

/// A block of at least `size` usable bytes, or NULL when the size is beyond the largest class
/// or the range is full (the caller then looks elsewhere).
pub fn alloc(size: usize) -> *mut c_void {
    alloc_aligned(HEADER, size)
}

/// As [`alloc`], at a multiple of `align` (a power of two of at least 16).
pub fn alloc_aligned(align: usize, size: usize) -> *mut c_void {
    let slack = if align > HEADER { align } else { 0 };
    let Some(total) = size.checked_add(HEADER + slack) else { return core::ptr::null_mut() };
    let shift = total.max(1 << MIN_SHIFT).next_power_of_two().trailing_zeros();
    if shift > MAX_SHIFT {
        return core::ptr::null_mut();
    }
    let class = 1usize << shift;
    let list = &FREE[(shift - MIN_SHIFT) as usize];
    if !try_lock() {
        return core::ptr::null_mut();
    }
    let mut blk = list.load(Relaxed);
    if blk.is_null() {
        let off = BUMP.load(Relaxed);
        let base = BASE.load(Relaxed);
        if base != 0 && off + class <= LEN.load(Relaxed) && commit(off + class) {
            BUMP.store(off + class, Relaxed);
            blk = (base + off) as *mut u8;
        }
    } else {
        // SAFETY: a free block's first word after its header holds the next free block.
        list.store(unsafe { *(blk.add(HEADER) as *mut *mut u8) }, Relaxed);
    }
    if !blk.is_null() {
        LIVE.fetch_add(1, Relaxed);
    }
    unlock();
    if blk.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: blk is a block of `class` bytes inside the writable range; the aligned pointer
    // and its header lie inside it (class >= size + HEADER + slack).
    unsafe {
        *(blk as *mut usize) = 0;
        *(blk.add(8) as *mut usize) = class | IS_MMAPPED;
        let p = (blk as usize + HEADER + align - 1) & !(align - 1);
        let back = p - HEADER - blk as usize;
        if back != 0 {
            *((p - HEADER) as *mut usize) = back;
            *((p - 8) as *mut usize) = (class - back) | IS_MMAPPED;
        }
        p as *mut c_void
    }
}

/// Usable bytes of a block of this pool.
///
/// # Safety
/// `p` is a live block of this pool.
pub unsafe fn usable(p: *mut c_void) -> usize {
    // SAFETY: a live block's header word precedes it.
    (unsafe { *(p as *const usize).sub(1) } & !7) - HEADER
}

/// # Safety
/// `p` is a live block of this pool.
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: a live block's prev_size word is the offset back to its (larger) block's start,
    // whose header holds the class.
    let blk = unsafe { (p as *mut u8).sub(HEADER + *(p as *const usize).sub(2)) };
    // SAFETY: as above.
    let class = unsafe { *(blk.add(8) as *const usize) } & !7;
    if class >= MADVISE_FROM {
        let start = (blk as usize + HEADER + 8 + PAGE - 1) & !(PAGE - 1);
        let end = (blk as usize + class) & !(PAGE - 1);
        if end > start {
            // SAFETY: whole pages inside the block, past its header and link word, which the
            // block no longer needs.
            unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    if !try_lock() {
        let mut head = PENDING.load(Relaxed);
        loop {
            // SAFETY: the block's first word after its header, its own now that it is freed.
            unsafe { *(blk.add(HEADER) as *mut *mut u8) = head };
            match PENDING.compare_exchange_weak(head, blk, Release, Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }
    // SAFETY: blk is the start of this live block, and we hold the lock.
    unsafe { file(blk) };
    if LIVE.load(Relaxed) == 0 && !RELEASING.load(Relaxed) {
        shrink();
    }
    unlock();
}

/// Puts a freed block on its class's list; under the lock.
///
/// # Safety
/// `blk` is the start of a block of this pool that was live.
unsafe fn file(blk: *mut u8) {
    // SAFETY: the block's header holds its class; its first word after the header is free to
    // link the list.
    let class = unsafe { *(blk.add(8) as *const usize) } & !7;
    let list = &FREE[(class.trailing_zeros() - MIN_SHIFT) as usize];
    // SAFETY: as above; the block is freed, so its link word is the list's.
    unsafe { *(blk.add(HEADER) as *mut *mut u8) = list.load(Relaxed) };
    list.store(blk, Relaxed);
    LIVE.fetch_sub(1, Relaxed);
}

/// After a release: the pool keeps only what its live blocks need.
pub fn settle() {
    lock();
    RELEASING.store(false, Relaxed);
    shrink();
    unlock();
}

/// A fork while a host thread held the lock must not leave the child's copy locked; a fork
/// during a release leaves the child no release to settle the pool after.
pub fn after_fork_in_child() {
    LOCK.store(false, Relaxed);
    RELEASING.store(false, Relaxed);
    shrink();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host call that finds the lock taken (a signal handler on the thread that holds it, say)
    /// does not wait for it: an allocation is refused, so that the caller maps a block of its
    /// own, and a free is queued, then filed by the next holder.
    #[test]
    fn a_taken_lock_is_not_waited_for() {
        assert!(reserve());
        let p = alloc(100);
        assert!(!p.is_null());
        let live = LIVE.load(Relaxed);
        LOCK.store(true, Relaxed);
        assert!(alloc(100).is_null(), "an allocation waited for, or took, a lock that was held");
        // SAFETY: p is a live block of the pool.
        unsafe { free(p) };
        assert!(!PENDING.load(Relaxed).is_null(), "the free was not queued");
        assert_eq!(LIVE.load(Relaxed), live, "a queued free is still live until filed");
        LOCK.store(false, Relaxed);
        let q = alloc(100);
        assert!(PENDING.load(Relaxed).is_null(), "the next holder did not file the queued free");
        assert_eq!(q, p, "the filed block is the first of its class again");
        // SAFETY: q is a live block of the pool.
        unsafe { free(q) };
        settle();
    }
}
