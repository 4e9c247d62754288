//! The malloc family, as the host sees it. Each export forwards to the backend with glibc's
//! exact semantics (DESIGN.md traps 9-11) and counts the usable size of what changed hands.
//! Nothing else happens here: no locks, no syscalls, no allocation, no logging.
use crate::accounting::{self, on_alloc, on_move};
use crate::glibc::{self, counted_size as usable};
use core::ffi::{c_int, c_void};

#[inline(always)]
unsafe fn counted(p: *mut c_void) -> *mut c_void {
    if !p.is_null() {
        on_alloc(usable(p));
    }
    p
}

#[inline(always)]
unsafe fn set_errno(e: c_int) {
    *libc::__errno_location() = e;
}

#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    counted(glibc::__libc_malloc(size))
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let n = usable(p);
    if !accounting::on_free(n) {
        return free_slow(p, n);
    }
    glibc::__libc_free(p)
}

/// Out of line so that the fast path of `free` ends in a jump to glibc with no frame of its own.
#[cold]
#[inline(never)]
unsafe fn free_slow(p: *mut c_void, n: usize) {
    accounting::on_free_slow(n);
    glibc::__libc_free(p)
}

#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    free(p)
}

#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    counted(glibc::__libc_calloc(n, size))
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // glibc frees and returns NULL (REALLOC_ZERO_BYTES_FREES).
        free(p);
        return core::ptr::null_mut();
    }
    let old = usable(p);
    let q = glibc::__libc_realloc(p, size);
    if !q.is_null() {
        on_move(old, usable(q));
    }
    q
}

#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) => realloc(p, bytes),
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    counted(glibc::__libc_memalign(align, size))
}

/// glibc 2.36 exports aligned_alloc as an alias of memalign: same rounding, no size check.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    const W: usize = core::mem::size_of::<usize>();
    if align % W != 0 || !(align / W).is_power_of_two() {
        return libc::EINVAL;
    }
    let p = memalign(align, size);
    if p.is_null() {
        return libc::ENOMEM;
    }
    *out = p;
    0
}

#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    counted(glibc::__libc_valloc(size))
}

#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    counted(glibc::__libc_pvalloc(size))
}

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    glibc::usable_checked(p)
}
