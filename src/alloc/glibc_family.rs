//! The malloc family on the glibc backend. Each function forwards to glibc and counts the usable
//! size of what changed hands. Nothing else happens on the common path: no locks, no syscalls,
//! no allocation, no logging.
//! While a release runs, every allocating entry point is served by the side pool (beyond its
//! largest class, or with it full, by a mapping of the block's own) and frees of glibc blocks
//! are deferred (divert.rs): malloc and free learn it from their fast path being closed, at no
//! cost of their own; side-pool blocks and own mappings look like mmapped chunks, so they cost
//! nothing until that branch.
use crate::alloc::accounting::{self, on_alloc, on_move};
use crate::sys::glibc::{self, counted_size};
use crate::alloc::{divert, own_mapping, side_pool};
use crate::sys::errno::set_errno;
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
    give_back(p);
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

/// Frees a block that the counts do not hold (counted out, or refused) to whichever allocator
/// it came from.
unsafe fn give_back(p: *mut c_void) {
    if !glibc::is_mmapped(glibc::header(p)) {
        glibc::__libc_free(p)
    } else if side_pool::contains(p) {
        side_pool::free(p)
    } else if own_mapping::owns(p) {
        own_mapping::free(p)
    } else {
        glibc::__libc_free(p)
    }
}

/// Whether a block is the side pool's or in a mapping of its own, not glibc's.
unsafe fn diverted_block(p: *mut c_void) -> bool {
    glibc::is_mmapped(glibc::header(p)) && (side_pool::contains(p) || own_mapping::owns(p))
}

/// A block for a host call while a release runs: the side pool's, or beyond it a mapping of its
/// own; NULL when the system refuses both (the caller then goes to glibc, and may wait).
#[cold]
#[inline(never)]
fn diverted(align: usize, size: usize) -> *mut c_void {
    let p = side_pool::alloc_aligned(align, size);
    if p.is_null() { own_mapping::alloc(align, size) } else { p }
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
        let p = diverted(MALLOC_ALIGNMENT, size);
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

/// A side-pool block, an own mapping, or a glibc mmapped chunk (its free takes no arena lock).
#[cold]
#[inline(never)]
unsafe fn free_mmapped(p: *mut c_void) {
    let n = counted_size(p);
    if !accounting::on_free(n) {
        accounting::on_free_slow(n);
    }
    give_back(p)
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
    if !p.is_null() {
        // Recycled side-pool memory is not zero.
        (p as *mut u8).write_bytes(0, bytes);
        return counted(p);
    }
    // A fresh mapping is.
    let p = own_mapping::alloc(MALLOC_ALIGNMENT, bytes);
    counted(if p.is_null() { glibc::__libc_calloc(n, size) } else { p })
}

/// realloc of a live block to a size above 0 (the export handles NULL and 0).
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if divert::active() || accounting::strict() || glibc::is_mmapped(glibc::header(p)) {
        return realloc_slow(p, size);
    }
    let old = counted_size(p);
    let q = glibc::__libc_realloc(p, size);
    if !q.is_null() {
        on_move(old, counted_size(q));
    }
    q
}

/// realloc by copy of a diverted block, or of a glibc heap block while a release runs (the new
/// block then comes from the side pool and the old one's free is deferred); otherwise by glibc,
/// under a hard limit with its growth checked first. glibc resizes its own mmapped chunks with
/// mremap under no arena lock (mremap_chunk), so they stay with it during a release too: no copy,
/// and no second block for a hard limit to count (only a failed mremap has glibc malloc, and wait).
#[cold]
#[inline(never)]
unsafe fn realloc_slow(p: *mut c_void, size: usize) -> *mut c_void {
    if diverted_block(p) || (divert::active() && !glibc::is_mmapped(glibc::header(p))) {
        return moved_realloc(p, size);
    }
    let old = counted_size(p);
    let grow = if accounting::strict() { chunk_for(size).saturating_sub(old) } else { 0 };
    if grow > 0 && !accounting::reserve_growth(grow) {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    let q = glibc::__libc_realloc(p, size);
    if q.is_null() {
        if grow > 0 {
            accounting::unreserve_growth(grow);
        }
    } else {
        on_move(old + grow, counted_size(q));
    }
    q
}

/// glibc's request2size (malloc/malloc.c): the least a block of `size` counts.
fn chunk_for(size: usize) -> usize {
    const MINSIZE: usize = 32;
    size.checked_add(8 + MALLOC_ALIGNMENT - 1).map_or(usize::MAX, |n| (n & !(MALLOC_ALIGNMENT - 1)).max(MINSIZE))
}

/// Under a hard limit a shrink leaves the block where it is, as realloc may: the copy would count
/// both blocks at once and could be refused where glibc shrinks in place.
#[cold]
#[inline(never)]
unsafe fn moved_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let old_usable = if side_pool::contains(p) { side_pool::usable(p) } else { glibc::usable_checked(p) };
    if size <= old_usable && accounting::strict() {
        let n = counted_size(p);
        on_move(n, n);
        return p;
    }
    let q = malloc(size);
    if !q.is_null() {
        core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old_usable.min(size));
        free(p);
    }
    q
}

const MALLOC_ALIGNMENT: usize = 16;

pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if divert::active() {
        return diverted_memalign(align, size);
    }
    counted(glibc::__libc_memalign(align, size))
}

/// glibc's _mid_memalign (malloc/malloc.c) while a release runs: small alignments are malloc's,
/// others at least MINSIZE and rounded up to a power of two, absurd ones EINVAL, absurd sizes
/// ENOMEM (checked before glibc would wait for the arena).
#[cold]
#[inline(never)]
unsafe fn diverted_memalign(align: usize, size: usize) -> *mut c_void {
    const MINSIZE: usize = 32;
    let align = match glibc::memalign_alignment(align) {
        glibc::Alignment::Malloc => return malloc(size),
        glibc::Alignment::Invalid => {
            set_errno(libc::EINVAL);
            return core::ptr::null_mut();
        }
        glibc::Alignment::To(a) => a,
    };
    if size > isize::MAX as usize - align - MINSIZE {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    let p = diverted(align, size);
    counted(if p.is_null() { glibc::__libc_memalign(align, size) } else { p })
}

pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    if divert::active() {
        return diverted_memalign(page_size(), size);
    }
    counted(glibc::__libc_valloc(size))
}

pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    if divert::active() {
        // glibc's __libc_pvalloc: whole pages, with an overflow check.
        let page = page_size();
        let Some(rounded) = size.checked_add(page - 1) else {
            set_errno(libc::ENOMEM);
            return core::ptr::null_mut();
        };
        return diverted_memalign(page, rounded & !(page - 1));
    }
    counted(glibc::__libc_pvalloc(size))
}

fn page_size() -> usize {
    // SAFETY: no preconditions; the auxiliary vector is there from the start.
    unsafe { libc::getauxval(libc::AT_PAGESZ) as usize }
}

pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    glibc::usable_checked(p)
}
