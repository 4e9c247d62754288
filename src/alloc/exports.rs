//! The malloc family, as the host sees it (docs/DESIGN.md, trap 11: the whole family, so every
//! pointer reaching free belongs to the active backend). Each export jumps to the chosen
//! backend's function; the few defined by the others are written once, here, with glibc's
//! exact semantics (traps 9-10).
//! A composite export calls what glibc 2.36's calls, the same way. Through the dynamic linker,
//! so a program that defines its own gets it: only reallocarray's `realloc`
//! (malloc/reallocarray.c). Internally, as glibc's do (malloc/malloc.c): cfree is a compat alias
//! of __libc_free; aligned_alloc an alias of __libc_memalign; posix_memalign, valloc and pvalloc
//! call _mid_memalign; realloc(NULL, n) calls __libc_malloc and realloc(p, 0) __libc_free; so
//! ours call our free, memalign, valloc, pvalloc and malloc.
use crate::alloc::backend;
use crate::sys::errno::set_errno;
use crate::sys::glibc_layout;
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

/// An export that is one indirect jump through its backend slot: on x86_64 a naked function of
/// a single instruction, elsewhere a load and a call.
macro_rules! trampoline {
    ($name:ident($($a:ident: $t:ty),*) -> $r:ty = $slot:ident as $fty:ident) => {
        /// # Safety
        /// As the C function of this name.
        #[cfg(target_arch = "x86_64")]
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            core::arch::naked_asm!("jmp qword ptr [rip + {slot}]", slot = sym backend::$slot)
        }

        /// # Safety
        /// As the C function of this name.
        #[cfg(not(target_arch = "x86_64"))]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            // SAFETY: the slot always holds a function of this type (backend.rs), whose contract
            // is this export's.
            unsafe { core::mem::transmute::<*mut (), backend::$fty>(backend::$slot.load(core::sync::atomic::Ordering::Relaxed))($($a),*) }
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

/// Our own function behind an export, for a call that glibc's counterpart makes internally: a
/// call by the exported name binds, through the dynamic linker, to a program's own.
macro_rules! own {
    ($slot:ident as $fty:ident) => {
        // SAFETY: the slot always holds a function of this type (backend.rs).
        core::mem::transmute::<*mut (), backend::$fty>(backend::$slot.load(Relaxed))
    };
}

/// # Safety
/// As C's free: `p` is null or a live block of the malloc family, which the caller gives up.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: the caller's contract is free's.
    unsafe { own!(FREE as FreeFn)(p) }
}

/// # Safety
/// As C's realloc: `p` is null or a live block of the malloc family.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract is own_realloc's.
    unsafe { own_realloc(p, size) }
}

/// # Safety
/// As C's realloc: `p` is null or a live block of the malloc family.
#[inline(always)]
unsafe fn own_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: malloc has no precondition; past the null test p is a live block, which free and
    // the backend's realloc (of a live block to a size above 0) take.
    unsafe {
        if p.is_null() {
            return own!(MALLOC as MallocFn)(size);
        }
        if size == 0 {
            // glibc frees and returns NULL (REALLOC_ZERO_BYTES_FREES).
            own!(FREE as FreeFn)(p);
            return core::ptr::null_mut();
        }
        own!(REALLOC as ReallocFn)(p, size)
    }
}

/// The `realloc` the dynamic linker gives the program, when it is not ours (a program with its
/// own malloc family); null: ours. Looked up once by the constructor below, where malloc already
/// works (dlsym may call calloc: docs/DESIGN.md, trap 2); until then, ours.
static PROGRAM_REALLOC: AtomicPtr<c_void> = AtomicPtr::new(core::ptr::null_mut());

#[used]
#[unsafe(link_section = ".init_array")]
static RESOLVE: extern "C" fn() = resolve_program_symbols;

extern "C" fn resolve_program_symbols() {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope, program first.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"realloc".as_ptr()) };
    // Not `f != realloc`: our own reference to an exported name also binds to the program's.
    if !f.is_null() && object_of(f) != object_of(resolve_program_symbols as *const c_void) {
        PROGRAM_REALLOC.store(f, Relaxed);
    }
    // SAFETY: as above; RTLD_NEXT searches the objects loaded after this one, libc's among them.
    let u = unsafe { libc::dlsym(libc::RTLD_NEXT, c"malloc_usable_size".as_ptr()) };
    // Only libc's own: a library the program links (libjemalloc) may come first with one that
    // does not know glibc's blocks.
    if !u.is_null() && object_of(u) == object_of(crate::sys::glibc::__libc_malloc as *const c_void) {
        crate::sys::glibc::GLIBC_USABLE.store(u, Relaxed);
    }
}

/// The base address of the loaded object that holds `addr`.
fn object_of(addr: *const c_void) -> *mut c_void {
    // SAFETY: all-zero is a valid Dl_info, which dladdr fills.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: a valid out-pointer; dladdr only looks the address up.
    unsafe { libc::dladdr(addr, &mut info) };
    info.dli_fbase
}

/// # Safety
/// As C's realloc: `p` is null or a live block of the malloc family.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(bytes) => match PROGRAM_REALLOC.load(Relaxed) {
            // SAFETY: the caller's contract is own_realloc's.
            f if f.is_null() => unsafe { own_realloc(p, bytes) },
            // SAFETY: the program's realloc, which has realloc's type, and whose blocks the
            // program's malloc family (the one p came from) gives.
            f => unsafe { core::mem::transmute::<*mut c_void, backend::ReallocFn>(f)(p, bytes) },
        },
        None => {
            // SAFETY: this thread's errno.
            unsafe { set_errno(libc::ENOMEM) };
            core::ptr::null_mut()
        }
    }
}

/// Up to glibc 2.37 aligned_alloc is an alias of memalign: same rounding, no size check; from
/// 2.38 an alignment that is not a power of two is EINVAL first (glibc_layout.rs).
///
/// # Safety
/// None beyond C's aligned_alloc.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // SAFETY: set_errno writes this thread's errno; memalign has no precondition.
    unsafe {
        if glibc_layout::aligned_alloc_refuses(align) {
            set_errno(libc::EINVAL);
            return core::ptr::null_mut();
        }
        own!(MEMALIGN as MemalignFn)(align, size)
    }
}

/// # Safety
/// As C's posix_memalign: `out` is valid for a write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    const W: usize = core::mem::size_of::<usize>();
    if !align.is_multiple_of(W) || !(align / W).is_power_of_two() {
        return libc::EINVAL;
    }
    // SAFETY: memalign has no precondition.
    let p = unsafe { own!(MEMALIGN as MemalignFn)(align, size) };
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: out is writable (the caller's contract).
    unsafe { *out = p };
    0
}
