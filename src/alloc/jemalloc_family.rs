//! The malloc family on the bundled jemalloc (tikv-jemalloc-sys, `_rjem_` symbols linked into
//! this library), with glibc's semantics where jemalloc's differ: memalign rounds an alignment
//! up to a power of two, pvalloc rounds to pages.
//! A thread with a slot counts blocks only: its bytes are jemalloc's own per-thread counters
//! (see accounting), so no call asks a block's size. Threads without one count usable sizes.
//! glibc aligns every block to 16 bytes; jemalloc's 8-byte class does not, so requests are at
//! least [`MIN_SIZE`].
use crate::alloc::accounting::{self, on_alloc, on_move};
use crate::sys::errno::set_errno;
use crate::sys::glibc::{Alignment, memalign_alignment};
use core::ffi::c_void;
use tikv_jemalloc_sys as je;

/// The smallest request: jemalloc's classes from 16 bytes up are 16-aligned.
const MIN_SIZE: usize = 16;

/// Counts a block the host is about to get, or gives it back if a hard limit refuses it.
///
/// # Safety
/// `p` is null or a live block of jemalloc's that nothing has counted yet.
#[inline(always)]
unsafe fn counted(p: *mut c_void) -> *mut c_void {
    if !p.is_null() {
        match accounting::slot() {
            Some(s) => s.tally_alloc(),
            // SAFETY: the caller's contract.
            None => return unsafe { counted_slow(p) },
        }
    }
    p
}

/// # Safety
/// `p` is a live, uncounted block of jemalloc's.
#[cold]
#[inline(never)]
unsafe fn counted_slow(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is jemalloc's and live; a refused one is freed once and not handed out.
    unsafe {
        if on_alloc(je::malloc_usable_size(p)) {
            p
        } else {
            // MEMTRIM_HARD_LIMIT said no.
            je::free(p);
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// # Safety
/// None beyond C's malloc.
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: jemalloc's malloc gives null or a fresh, uncounted block.
    unsafe { counted(je::malloc(size.max(MIN_SIZE))) }
}

/// # Safety
/// `p` is null or a live block of jemalloc's, which the caller gives up.
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is jemalloc's and live (the caller's contract), freed once.
    unsafe {
        match accounting::slot() {
            Some(s) => {
                s.tally_free();
                je::free(p)
            }
            None => free_slow(p),
        }
    }
}

/// # Safety
/// `p` is a live block of jemalloc's, which the caller gives up.
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut c_void) {
    // SAFETY: p is jemalloc's and live; n is its usable size, which sdallocx accepts.
    let n = unsafe {
        let n = je::malloc_usable_size(p);
        je::sdallocx(p, n, 0);
        n
    };
    // After jemalloc counted it: this may claim a slot, which starts from jemalloc's count.
    accounting::on_free_slow(n);
}

/// # Safety
/// None beyond C's calloc.
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: jemalloc's calloc gives null or a fresh, uncounted block.
    unsafe {
        match n.checked_mul(size) {
            Some(bytes) if bytes < MIN_SIZE => counted(je::calloc(1, MIN_SIZE)),
            _ => counted(je::calloc(n, size)),
        }
    }
}

/// realloc of a live block to a size above 0 (the export handles NULL and 0).
///
/// # Safety
/// `p` is a live block of jemalloc's; on success the caller gives it up.
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let size = size.max(MIN_SIZE);
    // SAFETY: p is jemalloc's and live (the caller's contract).
    let q = unsafe {
        match accounting::slot() {
            Some(s) => {
                let q = je::realloc(p, size);
                if !q.is_null() {
                    s.tally_move();
                }
                q
            }
            None => realloc_slow(p, size),
        }
    };
    if q.is_null() {
        // As glibc does; jemalloc 5.3.0 left errno alone for sizes beyond its largest class.
        // SAFETY: this thread's errno.
        unsafe { set_errno(libc::ENOMEM) };
    }
    q
}

/// # Safety
/// As [`realloc`].
#[cold]
#[inline(never)]
unsafe fn realloc_slow(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: p is jemalloc's and live.
    let old = unsafe { je::malloc_usable_size(p) };
    // Under a hard limit the growth is checked first, so that a refused one leaves the block
    // live; jemalloc then resizes in place where it can, as without a limit.
    let grow = if accounting::strict() {
        // SAFETY: no precondition; flags 0.
        match unsafe { je::nallocx(size, 0) } {
            0 => return core::ptr::null_mut(),
            want => want.saturating_sub(old),
        }
    } else {
        0
    };
    if grow > 0 && !accounting::reserve_growth(grow) {
        return core::ptr::null_mut();
    }
    // SAFETY: p is jemalloc's and live; a non-null result is too.
    let q = unsafe { je::realloc(p, size) };
    if q.is_null() {
        if grow > 0 {
            accounting::unreserve_growth(grow);
        }
    } else {
        // SAFETY: q is not null, so a live block of jemalloc's.
        on_move(old + grow, unsafe { je::malloc_usable_size(q) });
    }
    q
}

/// glibc's `_mid_memalign`: small alignments are plain malloc, others at least 32 and rounded
/// up to a power of two, absurd ones EINVAL.
///
/// # Safety
/// None beyond C's memalign.
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: malloc has no precondition; set_errno writes this thread's errno; aligned_alloc is
    // given a power of two and gives null or a fresh, uncounted block.
    unsafe {
        match memalign_alignment(align) {
            Alignment::Malloc => malloc(size),
            Alignment::Invalid => {
                set_errno(libc::EINVAL);
                core::ptr::null_mut()
            }
            Alignment::To(align) => counted(je::aligned_alloc(align, size)),
        }
    }
}

/// # Safety
/// None beyond C's valloc.
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: memalign has no precondition.
    unsafe { memalign(page_size(), size) }
}

/// # Safety
/// None beyond C's pvalloc.
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    // SAFETY: memalign has no precondition; set_errno writes this thread's errno.
    unsafe {
        match size.checked_add(page - 1) {
            Some(rounded) => memalign(page, rounded & !(page - 1)),
            None => {
                set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }
}

/// # Safety
/// `p` is null or a live block of jemalloc's.
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        0
    } else {
        // SAFETY: not null, so a live block of jemalloc's (the caller's contract).
        unsafe { je::malloc_usable_size(p) }
    }
}

fn page_size() -> usize {
    // SAFETY: no preconditions; the auxiliary vector is there from the start.
    unsafe { libc::getauxval(libc::AT_PAGESZ) as usize }
}
