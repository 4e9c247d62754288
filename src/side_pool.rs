//! A small allocator in a reserved, recognisable address range that serves the host while a
//! release holds glibc's arena locks (see divert.rs). Blocks carry a glibc-style header marked
//! IS_MMAPPED, so the usual usable-size arithmetic holds for them and the exports tell them apart
//! on the path glibc's own mmapped chunks already take: no cost on the common path.
//! Power-of-two classes from 32 B to 32 MiB, one free list each, under a spin lock that is held
//! for a few instructions.
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

/// Address space only, and only once a release has run; it shows in VSZ, so no bigger than a
/// release window of allocations can need.
const RESERVES: [usize; 2] = [1 << 30, 128 << 20];
const MIN_SHIFT: u32 = 5;
const MAX_SHIFT: u32 = 25;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
const HEADER: usize = 16;
const IS_MMAPPED: usize = 2;
/// Freed blocks at least this big give their interior pages back at once.
const MADVISE_FROM: usize = 64 << 10;

static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
static BUMP: AtomicUsize = AtomicUsize::new(0);
static FREE: [AtomicPtr<u8>; CLASSES] = [const { AtomicPtr::new(core::ptr::null_mut()) }; CLASSES];
static LOCK: AtomicBool = AtomicBool::new(false);

/// Reserves the range once (address space only, MAP_NORESERVE); false if the system refuses.
pub fn reserve() -> bool {
    if BASE.load(Acquire) != 0 {
        return true;
    }
    for len in RESERVES {
        // SAFETY: a fresh anonymous mapping.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            LEN.store(len, Relaxed);
            BASE.store(p as usize, Release);
            return true;
        }
    }
    false
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

fn lock() {
    let mut spins = 0u32;
    while LOCK.swap(true, Acquire) {
        spins += 1;
        if spins % 64 == 0 {
            // SAFETY: no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            core::hint::spin_loop();
        }
    }
}

fn unlock() {
    LOCK.store(false, Release);
}

/// A block of at least `size` usable bytes, or NULL when the size is beyond the largest class
/// or the range is full (the caller then goes to glibc).
pub fn alloc(size: usize) -> *mut c_void {
    let Some(total) = size.checked_add(HEADER) else { return core::ptr::null_mut() };
    let shift = total.max(1 << MIN_SHIFT).next_power_of_two().trailing_zeros();
    if shift > MAX_SHIFT || BASE.load(Acquire) == 0 {
        return core::ptr::null_mut();
    }
    let class = 1usize << shift;
    let list = &FREE[(shift - MIN_SHIFT) as usize];
    lock();
    let mut blk = list.load(Relaxed);
    if blk.is_null() {
        let off = BUMP.load(Relaxed);
        if off + class <= LEN.load(Relaxed) {
            BUMP.store(off + class, Relaxed);
            blk = (BASE.load(Relaxed) + off) as *mut u8;
        }
    } else {
        // SAFETY: a free block's first user word holds the next free block.
        list.store(unsafe { *(blk.add(HEADER) as *mut *mut u8) }, Relaxed);
    }
    unlock();
    if blk.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: blk is a block of `class` bytes inside the range.
    unsafe {
        *(blk as *mut usize) = 0;
        *(blk.add(8) as *mut usize) = class | IS_MMAPPED;
        blk.add(HEADER).cast()
    }
}

/// Usable bytes of a block of this pool.
///
/// # Safety
/// `p` is a live block of this pool.
pub unsafe fn usable(p: *mut c_void) -> usize {
    (*(p as *const usize).sub(1) & !7) - HEADER
}

/// # Safety
/// `p` is a live block of this pool.
pub unsafe fn free(p: *mut c_void) {
    let blk = (p as *mut u8).sub(HEADER);
    let class = *(blk.add(8) as *const usize) & !7;
    if class >= MADVISE_FROM {
        let page = 4096;
        let start = (p as usize + 8 + page - 1) & !(page - 1);
        let end = (blk as usize + class) & !(page - 1);
        if end > start {
            libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED);
        }
    }
    let list = &FREE[(class.trailing_zeros() - MIN_SHIFT) as usize];
    lock();
    *(p as *mut *mut u8) = list.load(Relaxed);
    list.store(blk, Relaxed);
    unlock();
}

/// A fork while a host thread held the lock must not leave the child's copy locked.
pub fn after_fork_in_child() {
    LOCK.store(false, Relaxed);
}
