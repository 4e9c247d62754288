//! The malloc family on the glibc backend. Each function forwards to glibc and counts the usable
//! size of what changed hands. Nothing else happens on the common path: no locks, no syscalls,
//! no allocation, no logging.
//! While a release runs, malloc, calloc and realloc are served by the side pool and frees of
//! glibc blocks are deferred (divert.rs): malloc and free learn it from their fast path being
//! closed, at no cost of their own; side-pool blocks look like mmapped chunks, so they cost
//! nothing until that branch.
use crate::accounting::{self, on_alloc, on_move};
use crate::glibc::{self, counted_size};
use crate::{divert, side_pool};
use crate::exports::set_errno;
use core::ffi::c_void;

#[inline(always)]
unsafe fn counted(p: *mut c_void) -> *mut c_void {
    if !p.is_null() && !on_alloc(counted_size(p)) {
        return refused(p);
    }
    p
}

/// MEMTRIM_HARD_LIMIT said no: the block goes back and the host sees ENOMEM.
#[cold]
#[inline(never)]
unsafe fn refused(p: *mut c_void) -> *mut c_void {
    if side_pool::contains(p) {
        side_pool::free(p)
    } else {
        glibc::__libc_free(p)
    }
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}


pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let Some(slot) = accounting::fast_slot() else { return malloc_slow(size) };
    let p = glibc::__libc_malloc(size);
    if !p.is_null() {
        slot.count_alloc(counted_size(p));
    }
    p
}

/// A thread without a slot yet, a hard limit, or a release diverting the host.
#[cold]
#[inline(never)]
unsafe fn malloc_slow(size: usize) -> *mut c_void {
    if divert::active() {
        let p = side_pool::alloc(size);
        if !p.is_null() {
            return counted(p);
        }
    }
    counted(glibc::__libc_malloc(size))
}

pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let h = glibc::header(p);
    if glibc::is_mmapped(h) {
        return free_mmapped(p);
    }
    let n = glibc::counted_from_header(h);
    let Some(slot) = accounting::fast_slot() else { return free_slow(p, n) };
    slot.count_free(n);
    glibc::__libc_free(p)
}

/// Out of line so that the fast path of `free` ends in a jump to glibc with no frame of its own;
/// a release diverting the host closes that path, and the block's free waits for its end.
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut c_void, n: usize) {
    accounting::on_free_slow(n);
    if divert::active() {
        return divert::defer(p);
    }
    glibc::__libc_free(p)
}

/// A side-pool block, or a glibc mmapped chunk (its free takes no arena lock).
#[cold]
#[inline(never)]
unsafe fn free_mmapped(p: *mut c_void) {
    let n = counted_size(p);
    if !accounting::on_free(n) {
        accounting::on_free_slow(n);
    }
    if side_pool::contains(p) {
        side_pool::free(p)
    } else {
        glibc::__libc_free(p)
    }
}

pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    if divert::active() {
        return diverted_calloc(n, size);
    }
    counted(glibc::__libc_calloc(n, size))
}

#[cold]
#[inline(never)]
unsafe fn diverted_calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    let p = side_pool::alloc(bytes);
    if p.is_null() {
        return counted(glibc::__libc_calloc(n, size));
    }
    // Recycled side-pool memory is not zero.
    (p as *mut u8).write_bytes(0, bytes);
    counted(p)
}

/// realloc of a live block to a size above 0 (the export handles NULL and 0).
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if divert::active() || accounting::strict() || side_pool::contains(p) {
        return moved_realloc(p, size);
    }
    let old = counted_size(p);
    let q = glibc::__libc_realloc(p, size);
    if !q.is_null() {
        on_move(old, counted_size(q));
    }
    q
}

/// realloc by copy: of a side-pool block, of a glibc block while a release runs (the new block
/// then comes from the side pool and the old one's free is deferred), or under a hard limit.
#[cold]
#[inline(never)]
unsafe fn moved_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let old_usable = if side_pool::contains(p) { side_pool::usable(p) } else { glibc::usable_checked(p) };
    let q = malloc(size);
    if !q.is_null() {
        core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old_usable.min(size));
        free(p);
    }
    q
}

pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    counted(glibc::__libc_memalign(align, size))
}

pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    counted(glibc::__libc_valloc(size))
}

pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    counted(glibc::__libc_pvalloc(size))
}

pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    glibc::usable_checked(p)
}
