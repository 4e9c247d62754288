//! The malloc family, as the host sees it (DESIGN.md trap 11: the whole family, so every
//! pointer reaching free belongs to the active backend). Each export jumps to the chosen
//! backend's function; the few defined by the others are written once, here, with glibc's
//! exact semantics (traps 9-10).
use crate::backend;
use core::ffi::{c_int, c_void};

#[inline(always)]
pub unsafe fn set_errno(e: c_int) {
    *libc::__errno_location() = e;
}

/// An export that is one indirect jump through its backend slot: on x86_64 a naked function of
/// a single instruction, elsewhere a load and a call.
macro_rules! trampoline {
    ($name:ident($($a:ident: $t:ty),*) -> $r:ty = $slot:ident as $fty:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            core::arch::naked_asm!("jmp qword ptr [rip + {slot}]", slot = sym backend::$slot)
        }

        #[cfg(not(target_arch = "x86_64"))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            // SAFETY: the slot always holds a function of this type (backend.rs).
            core::mem::transmute::<*mut (), backend::$fty>(backend::$slot.load(core::sync::atomic::Ordering::Relaxed))($($a),*)
        }
    };
}

trampoline!(malloc(size: usize) -> *mut c_void = MALLOC as MallocFn);
trampoline!(free(p: *mut c_void) -> () = FREE as FreeFn);
trampoline!(calloc(n: usize, size: usize) -> *mut c_void = CALLOC as CallocFn);
trampoline!(memalign(align: usize, size: usize) -> *mut c_void = MEMALIGN as MemalignFn);
trampoline!(valloc(size: usize) -> *mut c_void = VALLOC as MallocFn);
trampoline!(pvalloc(size: usize) -> *mut c_void = PVALLOC as MallocFn);
trampoline!(malloc_usable_size(p: *mut c_void) -> usize = USABLE as UsableFn);

#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    free(p)
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
    // SAFETY: the slot always holds a function of this type (backend.rs).
    core::mem::transmute::<*mut (), backend::ReallocFn>(backend::REALLOC.load(core::sync::atomic::Ordering::Relaxed))(p, size)
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

