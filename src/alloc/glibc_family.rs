//! The malloc family on the glibc backend. Each function forwards to glibc and counts the usable
//! size of what changed hands. Nothing else happens on the common path: no locks, no syscalls,
//! no allocation, no logging.
//! While a release runs, every allocating entry point is served by the side pool (beyond its
//! largest class, or with it full, by a mapping of the block's own) and frees of glibc blocks
//! are deferred (divert.rs): malloc and free learn it from their fast path being closed, at no
//! cost of their own; side-pool blocks and own mappings look like mmapped chunks, so they cost
//! nothing until that branch.
use crate::alloc::accounting::{self, on_alloc, on_move};
use crate::alloc::{divert, own_mapping, side_pool};
use crate::sys::errno::set_errno;
use crate::sys::glibc::{self, counted_size};
use core::ffi::c_void;

/// Counts a block the host is about to get, or gives it back if a hard limit refuses it.
///
/// # Safety
/// `p` is null or a live block of this backend that nothing has counted yet.
#[inline(always)]
unsafe fn counted(p: *mut c_void) -> *mut c_void {
    // SAFETY: p is not null, so a live block of this backend (the caller's contract); on refusal
    // nothing has counted it, so it goes back uncounted.
    if !p.is_null() && !on_alloc(unsafe { counted_size(p) }) {
        // SAFETY: p is live and uncounted.
        return unsafe { refused(p) };
    }
    p
}

/// MEMTRIM_HARD_LIMIT said no: the block goes back and the host sees ENOMEM.
///
/// # Safety
/// `p` is a live, uncounted block of this backend, which the caller gives up.
#[cold]
#[inline(never)]
unsafe fn refused(p: *mut c_void) -> *mut c_void {
    // SAFETY: the caller's contract is give_back's; set_errno writes this thread's errno.
    unsafe {
        give_back(p);
        set_errno(libc::ENOMEM);
    }
    core::ptr::null_mut()
}

/// Frees a block that the counts do not hold (counted out, or refused) to whichever allocator
/// it came from.
///
/// # Safety
/// `p` is a live block of this backend, not counted, which the caller gives up.
unsafe fn give_back(p: *mut c_void) {
    // SAFETY: p is live (header readable), and each branch frees it to the allocator whose block
    // it is: glibc's heap chunks are not mmapped; mmapped ones are the side pool's, an own
    // mapping's, or glibc's.
    unsafe {
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
}

/// Whether a block is the side pool's or in a mapping of its own, not glibc's.
///
/// # Safety
/// `p` is a live block of this backend.
unsafe fn diverted_block(p: *mut c_void) -> bool {
    // SAFETY: p is live, so its header is readable; an mmapped chunk outside the side pool is an
    // own mapping or glibc's, which both carry the words owns reads.
    unsafe { glibc::is_mmapped(glibc::header(p)) && (side_pool::contains(p) || own_mapping::owns(p)) }
}

/// A block for a host call while a release runs: the side pool's, or beyond it a mapping of its
/// own; NULL when the system refuses both (the caller then goes to glibc, and may wait).
#[cold]
#[inline(never)]
fn diverted(align: usize, size: usize) -> *mut c_void {
    let p = side_pool::alloc_aligned(align, size);
    if p.is_null() { own_mapping::alloc(align, size) } else { p }
}

/// # Safety
/// None beyond C's malloc (the export's contract).
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: malloc_slow has no precondition.
    let Some(slot) = accounting::fast_slot() else { return unsafe { malloc_slow(size) } };
    // SAFETY: glibc's malloc; a non-null result is a live block of glibc's.
    let p = unsafe { glibc::__libc_malloc(size) };
    if !p.is_null() {
        // SAFETY: p is not null, so a live block of glibc's.
        slot.count_alloc(unsafe { counted_size(p) });
    }
    p
}

/// A thread without a slot yet, a hard limit, or a release diverting the host.
///
/// # Safety
/// None beyond C's malloc.
#[cold]
#[inline(never)]
unsafe fn malloc_slow(size: usize) -> *mut c_void {
    if divert::active() {
        let p = diverted(MALLOC_ALIGNMENT, size);
        if !p.is_null() {
            // SAFETY: a fresh, uncounted block of the side pool or an own mapping.
            return unsafe { counted(p) };
        }
    }
    // SAFETY: glibc's malloc gives null or a fresh, uncounted block.
    unsafe { counted(glibc::__libc_malloc(size)) }
}

/// # Safety
/// `p` is null or a live block of this backend, which the caller gives up.
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is a live block (the caller's contract), so its header is readable; one not
    // mmapped is glibc's heap chunk, which glibc frees.
    unsafe {
        let h = glibc::header(p);
        if glibc::is_mmapped(h) {
            return free_mmapped(p);
        }
        let n = glibc::counted_from_header(h);
        let Some(slot) = accounting::fast_slot() else { return free_slow(p, n) };
        slot.count_free(n);
        glibc::__libc_free(p)
    }
}

/// Out of line so that the fast path of `free` ends in a jump to glibc with no frame of its own;
/// a release diverting the host closes that path, and the block's free waits for its end.
///
/// # Safety
/// `p` is a live glibc heap block (not mmapped) whose counted size is `n`, given up by the caller.
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut c_void, n: usize) {
    accounting::on_free_slow(n);
    // SAFETY: p is glibc's, as defer and __libc_free need, and freed once.
    unsafe {
        if divert::active() {
            return divert::defer(p);
        }
        glibc::__libc_free(p)
    }
}

/// A side-pool block, an own mapping, or a glibc mmapped chunk (its free takes no arena lock).
///
/// # Safety
/// `p` is a live, counted, mmapped block of this backend, given up by the caller.
#[cold]
#[inline(never)]
unsafe fn free_mmapped(p: *mut c_void) {
    // SAFETY: p is live.
    let n = unsafe { counted_size(p) };
    if !accounting::on_free(n) {
        accounting::on_free_slow(n);
    }
    // SAFETY: p is live and no longer counted.
    unsafe { give_back(p) }
}

/// # Safety
/// None beyond C's calloc.
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: diverted_calloc has no precondition; glibc's calloc gives null or a fresh block.
    unsafe {
        if divert::active() {
            return diverted_calloc(n, size);
        }
        counted(glibc::__libc_calloc(n, size))
    }
}

/// # Safety
/// None beyond C's calloc.
#[cold]
#[inline(never)]
unsafe fn diverted_calloc(n: usize, size: usize) -> *mut c_void {
    let Some(bytes) = n.checked_mul(size) else {
        // SAFETY: this thread's errno.
        unsafe { set_errno(libc::ENOMEM) };
        return core::ptr::null_mut();
    };
    let p = side_pool::alloc(bytes);
    if !p.is_null() {
        // Recycled side-pool memory is not zero.
        // SAFETY: a fresh side-pool block of at least `bytes` usable bytes, not yet counted.
        unsafe {
            (p as *mut u8).write_bytes(0, bytes);
            return counted(p);
        }
    }
    // A fresh mapping is.
    let p = own_mapping::alloc(MALLOC_ALIGNMENT, bytes);
    // SAFETY: a fresh own mapping, or glibc's calloc's null or fresh block.
    unsafe { counted(if p.is_null() { glibc::__libc_calloc(n, size) } else { p }) }
}

/// realloc of a live block to a size above 0 (the export handles NULL and 0).
///
/// # Safety
/// `p` is a live block of this backend; on success the caller gives it up.
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: p is live (the caller's contract) and, past the test, a glibc heap chunk that
    // glibc's realloc takes; a non-null result is a live block of glibc's.
    unsafe {
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
}

/// realloc by copy of a diverted block, or of a glibc heap block while a release runs (the new
/// block then comes from the side pool and the old one's free is deferred); otherwise by glibc,
/// under a hard limit with its growth checked first. glibc resizes its own mmapped chunks with
/// mremap under no arena lock (mremap_chunk), so they stay with it during a release too: no copy,
/// and no second block for a hard limit to count (only a failed mremap has glibc malloc, and wait).
///
/// # Safety
/// As [`realloc`].
#[cold]
#[inline(never)]
unsafe fn realloc_slow(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: p is live (the caller's contract).
    if unsafe { diverted_block(p) || (divert::active() && !glibc::is_mmapped(glibc::header(p))) } {
        // SAFETY: the caller's contract is moved_realloc's.
        return unsafe { moved_realloc(p, size) };
    }
    // SAFETY: p is live and glibc's (own mapping or side pool went above).
    let old = unsafe { counted_size(p) };
    let grow = if accounting::strict() { chunk_for(size).saturating_sub(old) } else { 0 };
    if grow > 0 && !accounting::reserve_growth(grow) {
        // SAFETY: this thread's errno.
        unsafe { set_errno(libc::ENOMEM) };
        return core::ptr::null_mut();
    }
    // SAFETY: p is glibc's block; a non-null result is a live block of glibc's.
    let q = unsafe { glibc::__libc_realloc(p, size) };
    if q.is_null() {
        if grow > 0 {
            accounting::unreserve_growth(grow);
        }
    } else {
        // SAFETY: q is not null, so a live block of glibc's.
        on_move(old + grow, unsafe { counted_size(q) });
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
///
/// # Safety
/// As [`realloc`].
#[cold]
#[inline(never)]
unsafe fn moved_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: p is a live block of the side pool's, or one that carries glibc's header.
    let old_usable = unsafe { if side_pool::contains(p) { side_pool::usable(p) } else { glibc::usable_checked(p) } };
    if size <= old_usable && accounting::strict() {
        // SAFETY: p is live.
        let n = unsafe { counted_size(p) };
        on_move(n, n);
        return p;
    }
    // SAFETY: q is a fresh block of at least `size` bytes, p has old_usable readable ones, so the
    // copy stays in both and they do not overlap; p is then given up, once.
    unsafe {
        let q = malloc(size);
        if !q.is_null() {
            core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, old_usable.min(size));
            free(p);
        }
        q
    }
}

const MALLOC_ALIGNMENT: usize = 16;

/// # Safety
/// None beyond C's memalign.
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: diverted_memalign has no precondition; glibc's gives null or a fresh block.
    unsafe {
        if divert::active() {
            return diverted_memalign(align, size);
        }
        counted(glibc::__libc_memalign(align, size))
    }
}

/// glibc's _mid_memalign (malloc/malloc.c) while a release runs: small alignments are malloc's,
/// others at least MINSIZE and rounded up to a power of two, absurd ones EINVAL, absurd sizes
/// ENOMEM (checked before glibc would wait for the arena).
///
/// # Safety
/// None beyond C's memalign.
#[cold]
#[inline(never)]
unsafe fn diverted_memalign(align: usize, size: usize) -> *mut c_void {
    const MINSIZE: usize = 32;
    // SAFETY: malloc has no precondition; set_errno writes this thread's errno; a diverted block
    // or glibc's memalign's result is null or fresh and uncounted.
    unsafe {
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
}

/// # Safety
/// None beyond C's valloc.
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: diverted_memalign has no precondition; glibc's valloc gives null or a fresh block.
    unsafe {
        if divert::active() {
            return diverted_memalign(page_size(), size);
        }
        counted(glibc::__libc_valloc(size))
    }
}

/// # Safety
/// None beyond C's pvalloc.
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    // SAFETY: as in valloc; set_errno writes this thread's errno.
    unsafe {
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
}

fn page_size() -> usize {
    // SAFETY: no preconditions; the auxiliary vector is there from the start.
    unsafe { libc::getauxval(libc::AT_PAGESZ) as usize }
}

/// # Safety
/// `p` is null or a live block of this backend.
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: the caller's contract is usable_checked's.
    unsafe { glibc::usable_checked(p) }
}
