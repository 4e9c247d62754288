//! The malloc family on the bundled jemalloc (tikv-jemalloc-sys, `_rjem_` symbols linked into
//! this library), with glibc's semantics where jemalloc's differ: memalign rounds an alignment
//! up to a power of two, pvalloc rounds to pages.
//! jemalloc has no chunk header, so usable sizes come from jemalloc itself, and frees are sized.
//! glibc aligns every block to 16 bytes; jemalloc's 8-byte class does not, so requests are at
//! least [`MIN_SIZE`].
use crate::accounting::{self, on_alloc, on_move};
use crate::exports::set_errno;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
use tikv_jemalloc_sys as je;

/// The smallest request: jemalloc's classes from 16 bytes up are 16-aligned.
const MIN_SIZE: usize = 16;
/// Requests up to this size find their size class in [`CLASSES`].
const TABLE_MAX: usize = 4096;
/// jemalloc's size class (the usable size) of the requests in (16 i, 16 i + 16], read once from
/// nallocx by [`prepare`]: every class is a multiple of the 16-byte quantum, so one entry serves
/// all 16 sizes, and counting a malloc is a load instead of a call into jemalloc.
static CLASSES: [AtomicU32; TABLE_MAX / 16] = [const { AtomicU32::new(0) }; TABLE_MAX / 16];

/// Fills [`CLASSES`]; called once, when this backend is chosen, before it serves a block.
pub fn prepare() {
    for (i, c) in CLASSES.iter().enumerate() {
        // SAFETY: nallocx only computes (and initialises jemalloc, which allocates nothing through us).
        c.store(unsafe { je::nallocx((i + 1) * 16, 0) } as u32, Relaxed);
    }
}

/// The usable size of a block jemalloc returns for a request of `size` (at least MIN_SIZE) with
/// no alignment: what malloc_usable_size would say of it, and what jemalloc itself counts.
#[inline(always)]
fn usable_for(size: usize) -> usize {
    if size <= TABLE_MAX {
        CLASSES[(size - 1) / 16].load(Relaxed) as usize
    } else {
        // SAFETY: nallocx only computes.
        unsafe { je::nallocx(size, 0) }
    }
}

#[inline(always)]
unsafe fn counted(p: *mut c_void) -> *mut c_void {
    if !p.is_null() && !on_alloc(je::malloc_usable_size(p)) {
        return refused(p);
    }
    p
}

/// MEMTRIM_HARD_LIMIT said no.
#[cold]
#[inline(never)]
unsafe fn refused(p: *mut c_void) -> *mut c_void {
    je::free(p);
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let size = size.max(MIN_SIZE);
    let p = je::malloc(size);
    // The size class of the request is the block's usable size, known without the pointer
    // lookup malloc_usable_size needs.
    if !p.is_null() && !on_alloc(usable_for(size)) {
        return refused(p);
    }
    p
}

pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let n = je::malloc_usable_size(p);
    if !accounting::on_free(n) {
        accounting::on_free_slow(n);
    }
    je::sdallocx(p, n, 0)
}

pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) if bytes < MIN_SIZE => counted(je::calloc(1, MIN_SIZE)),
        _ => counted(je::calloc(n, size)),
    }
}

/// realloc of a live block to a size above 0 (the export handles NULL and 0).
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if accounting::strict() {
        // Under a hard limit a refused growth must leave the old block live.
        let q = malloc(size);
        if !q.is_null() {
            core::ptr::copy_nonoverlapping(p as *const u8, q as *mut u8, je::malloc_usable_size(p).min(size));
            free(p);
        }
        return q;
    }
    let old = je::malloc_usable_size(p);
    let size = size.max(MIN_SIZE);
    let q = je::realloc(p, size);
    if !q.is_null() {
        // moved or resized in place, the block is of the request's class (jemalloc counts it so)
        on_move(old, usable_for(size));
    }
    q
}

/// glibc's `_mid_memalign`: small alignments are plain malloc, others at least 32 and rounded
/// up to a power of two, absurd ones EINVAL.
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    const MALLOC_ALIGNMENT: usize = 16;
    const MINSIZE: usize = 32;
    if align <= MALLOC_ALIGNMENT {
        return malloc(size);
    }
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    let align = align.max(MINSIZE).next_power_of_two();
    counted(je::aligned_alloc(align, size))
}

pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    memalign(page_size(), size)
}

pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    match size.checked_add(page - 1) {
        Some(rounded) => memalign(page, rounded & !(page - 1)),
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        0
    } else {
        je::malloc_usable_size(p)
    }
}

fn page_size() -> usize {
    // SAFETY: no preconditions; the auxiliary vector is there from the start.
    unsafe { libc::getauxval(libc::AT_PAGESZ) as usize }
}
