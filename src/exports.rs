//! The malloc family, as the host sees it (DESIGN.md trap 11: the whole family, so every
//! pointer reaching free belongs to the active backend). Each export jumps to the chosen
//! backend's function; the few defined by the others are written once, here, with glibc's
//! exact semantics (traps 9-10).
use crate::backend::{self, CallocFn, FreeFn, MallocFn, MemalignFn, ReallocFn, UsableFn};
use core::ffi::{c_int, c_void};
use core::sync::atomic::Ordering::Relaxed;

#[inline(always)]
pub unsafe fn set_errno(e: c_int) {
    *libc::__errno_location() = e;
}

macro_rules! jump {
    ($slot:ident as $ty:ty) => {
        // SAFETY: the slot always holds a function of this type (backend.rs).
        core::mem::transmute::<*mut (), $ty>(backend::$slot.load(Relaxed))
    };
}

#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    jump!(MALLOC as MallocFn)(size)
}

#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    jump!(FREE as FreeFn)(p)
}

#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    free(p)
}

#[no_mangle]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    jump!(CALLOC as CallocFn)(n, size)
}

#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    jump!(REALLOC as ReallocFn)(p, size)
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
    jump!(MEMALIGN as MemalignFn)(align, size)
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
    jump!(VALLOC as MallocFn)(size)
}

#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    jump!(PVALLOC as MallocFn)(size)
}

#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    jump!(USABLE as UsableFn)(p)
}
