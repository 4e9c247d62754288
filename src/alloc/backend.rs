//! Which allocator serves the host: chosen once, at the first allocation (before any
//! constructor), from MEMTRIM_ALLOCATOR, and never changed. The exports jump through one
//! function pointer each; until the choice is made the pointers lead to `boot`, which makes it.
use crate::alloc::{accounting, glibc_family, jemalloc_family};
use crate::sys::{environ, glibc, glibc_layout};
use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering::*};
use memtrim_common::config::{Allocator, MEMTRIM_ALLOCATOR, MEMTRIM_DISABLE};

pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
pub type MemalignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
pub type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

macro_rules! table {
    ($($slot:ident: $ty:ty = $boot:ident ($($a:ident: $at:ty),*) -> $r:ty, $field:ident;)*) => {
        $(
            pub static $slot: AtomicPtr<()> = AtomicPtr::new($boot as *mut ());
            /// The slot's first call: chooses the backend, then calls its function.
            ///
            /// # Safety
            /// The contract of the slot's export.
            unsafe extern "C" fn $boot($($a: $at),*) -> $r {
                choose();
                // SAFETY: choose() stored a function of this type, whose contract is the caller's.
                unsafe { core::mem::transmute::<*mut (), $ty>($slot.load(Acquire))($($a),*) }
            }
        )*
        struct Family { $($field: $ty),* }
        fn install(f: &Family) {
            $( $slot.store(f.$field as *mut (), Release); )*
        }
    };
}

table! {
    MALLOC: MallocFn = boot_malloc(n: usize) -> *mut c_void, malloc;
    FREE: FreeFn = boot_free(p: *mut c_void) -> (), free;
    CALLOC: CallocFn = boot_calloc(n: usize, m: usize) -> *mut c_void, calloc;
    REALLOC: ReallocFn = boot_realloc(p: *mut c_void, n: usize) -> *mut c_void, realloc;
    MEMALIGN: MemalignFn = boot_memalign(a: usize, n: usize) -> *mut c_void, memalign;
    VALLOC: MallocFn = boot_valloc(n: usize) -> *mut c_void, valloc;
    PVALLOC: MallocFn = boot_pvalloc(n: usize) -> *mut c_void, pvalloc;
    USABLE: UsableFn = boot_usable(p: *mut c_void) -> usize, usable;
}

const GLIBC: Family = Family {
    malloc: glibc_family::malloc,
    free: glibc_family::free,
    calloc: glibc_family::calloc,
    realloc: glibc_family::realloc,
    memalign: glibc_family::memalign,
    valloc: glibc_family::valloc,
    pvalloc: glibc_family::pvalloc,
    usable: glibc_family::malloc_usable_size,
};

const JEMALLOC: Family = Family {
    malloc: jemalloc_family::malloc,
    free: jemalloc_family::free,
    calloc: jemalloc_family::calloc,
    realloc: jemalloc_family::realloc,
    memalign: jemalloc_family::memalign,
    valloc: jemalloc_family::valloc,
    pvalloc: jemalloc_family::pvalloc,
    usable: jemalloc_family::malloc_usable_size,
};

/// MEMTRIM_DISABLE=1, or a glibc the backend must not count on: glibc's own entry points,
/// nothing counted; an export costs one jump.
const PASSTHROUGH: Family = Family {
    malloc: glibc::__libc_malloc,
    free: glibc::__libc_free,
    calloc: glibc::__libc_calloc,
    realloc: glibc::__libc_realloc,
    memalign: glibc::__libc_memalign,
    valloc: glibc::__libc_valloc,
    pvalloc: glibc::__libc_pvalloc,
    usable: glibc::own_usable,
};

static CHOSEN: AtomicU8 = AtomicU8::new(0);
/// Why the glibc backend let glibc serve alone: 0 it did not, else a [`GlibcAlone`] + 1.
static ALONE: AtomicU8 = AtomicU8::new(0);

#[derive(Clone, Copy)]
pub enum GlibcAlone {
    /// glibc's chunk header did not read as expected (glibc::header_holds).
    Header,
    /// glibc 2.28-2.33 checks its heap (MALLOC_CHECK_): its chunks carry a check byte.
    MallocCheck,
}

/// Reads MEMTRIM_ALLOCATOR and MEMTRIM_DISABLE without allocating (MEMTRIM_DISABLE=1 means
/// glibc's own entry points; a bad value is reported by the constructor, which reads them by
/// the same rows of the configuration table). Under AT_SECURE (setuid and the like) the environment belongs
/// to a less trusted user: nothing of it is read, as in the constructor. Threads racing here
/// all reach the same answer.
fn choose() {
    // SAFETY: getauxval has no preconditions.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    let var = |name: &str| if secure { None } else { environ::get(name) };
    let disabled = var(MEMTRIM_DISABLE.name).and_then(|v| MEMTRIM_DISABLE.read(v)).unwrap_or(false);
    let chosen = match var(MEMTRIM_ALLOCATOR.name).and_then(|v| MEMTRIM_ALLOCATOR.read(v)) {
        Some(Allocator::Jemalloc) if !disabled => Allocator::Jemalloc,
        _ => Allocator::Glibc,
    };
    if chosen == Allocator::Jemalloc {
        accounting::borrow_jemalloc_counters();
    }
    let alone = match chosen {
        Allocator::Glibc if !disabled && glibc_layout::malloc_checking() => Some(GlibcAlone::MallocCheck),
        Allocator::Glibc if !disabled && !glibc::header_holds() => Some(GlibcAlone::Header),
        _ => None,
    };
    ALONE.store(alone.map_or(0, |a| a as u8 + 1), Relaxed);
    CHOSEN.store(chosen as u8 + 1, Release);
    install(match chosen {
        Allocator::Jemalloc => &JEMALLOC,
        Allocator::Glibc if disabled || alone.is_some() => &PASSTHROUGH,
        Allocator::Glibc => &GLIBC,
    });
}

/// Why the glibc backend lets glibc serve alone and counts nothing, if it does.
pub fn glibc_alone() -> Option<GlibcAlone> {
    active();
    match ALONE.load(Relaxed) {
        1 => Some(GlibcAlone::Header),
        2 => Some(GlibcAlone::MallocCheck),
        _ => None,
    }
}

/// The backend serving the host, choosing it if no allocation has yet.
pub fn active() -> Allocator {
    if CHOSEN.load(Acquire) == 0 {
        choose();
    }
    if CHOSEN.load(Acquire) == Allocator::Jemalloc as u8 + 1 { Allocator::Jemalloc } else { Allocator::Glibc }
}
