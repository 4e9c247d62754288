//! The glibc backend: its `__libc_*` entry points, bound at link time (dlsym would call calloc,
//! docs/DESIGN.md, trap 2), and the usable size of a block read from glibc's chunk header.
use core::ffi::c_void;

extern "C" {
    pub fn __libc_malloc(size: usize) -> *mut c_void;
    pub fn __libc_free(p: *mut c_void);
    pub fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    pub fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    pub fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    pub fn __libc_valloc(size: usize) -> *mut c_void;
    pub fn __libc_pvalloc(size: usize) -> *mut c_void;
}

const SIZE_SZ: usize = core::mem::size_of::<usize>();
const PREV_INUSE: usize = 1;
pub const IS_MMAPPED: usize = 2;
/// The flag bits of a chunk's size word.
pub const FLAGS: usize = 7;

/// The chunk header word before a block.
///
/// # Safety
/// `p` is a live block of this backend.
#[inline(always)]
pub unsafe fn header(p: *mut c_void) -> usize {
    *(p as *const usize).sub(1)
}

#[inline(always)]
pub fn is_mmapped(h: usize) -> bool {
    h & IS_MMAPPED != 0
}

/// What the hot path counts for a live block that is not mmapped: its chunk size, that is its
/// usable size plus one header word. The word is taken off per live block when the counters are
/// read ([`HEADER`]), which saves the hot path three instructions.
#[inline(always)]
pub fn counted_from_header(h: usize) -> usize {
    h & !FLAGS
}

/// What the hot path counts for any live block: mmapped chunks carry a second header word,
/// taken off here, off the likely path.
///
/// # Safety
/// `p` is a live block of this backend.
#[inline(always)]
pub unsafe fn counted_size(p: *mut c_void) -> usize {
    let h = header(p);
    if is_mmapped(h) {
        core::hint::cold_path();
        return (h - SIZE_SZ) & !FLAGS;
    }
    counted_from_header(h)
}

/// Whether glibc's chunk header reads as glibc_layout.rs says, on a block glibc gives now: 100
/// bytes make a chunk of request2size(100) = 112 bytes, in use, 104 usable; or, under an mmap
/// threshold below that (MALLOC_MMAP_THRESHOLD_=0), a mapping of whole pages, 16 bytes less
/// usable.
pub fn header_holds() -> bool {
    // SAFETY: glibc's own entry points; the block is only read, then freed.
    unsafe {
        let p = __libc_malloc(100);
        if p.is_null() {
            return false;
        }
        let h = header(p);
        let chunk = h & !FLAGS;
        let page = libc::getauxval(libc::AT_PAGESZ) as usize;
        let ok = if is_mmapped(h) {
            page != 0 && chunk % page == 0 && chunk >= 112 && usable_checked(p) == chunk - 2 * SIZE_SZ
        } else {
            counted_from_header(h) == 112 && usable_checked(p) == 104
        };
        __libc_free(p);
        ok
    }
}

/// glibc's own malloc_usable_size (looked up by exports.rs's constructor, where dlsym may
/// allocate); until then, or if not found, null.
pub static GLIBC_USABLE: core::sync::atomic::AtomicPtr<c_void> = core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// malloc_usable_size while glibc serves alone: glibc's own, which knows its checked chunks;
/// read from the header before the constructor has found it.
///
/// # Safety
/// `p` is NULL or a block of glibc's.
pub unsafe extern "C" fn own_usable(p: *mut c_void) -> usize {
    match GLIBC_USABLE.load(core::sync::atomic::Ordering::Relaxed) {
        f if f.is_null() => usable_checked(p),
        // SAFETY: libc's malloc_usable_size, which has this type.
        f => core::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> usize>(f)(p),
    }
}

/// The per-block difference between [`counted_size`] and `malloc_usable_size`.
pub const HEADER: u64 = SIZE_SZ as u64;

/// glibc's `malloc_usable_size` for any pointer: 0 for NULL and for a chunk that is not in use.
///
/// # Safety
/// `p` is NULL or a block of this backend.
pub unsafe fn usable_checked(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    let h = *(p as *const usize).sub(1);
    let chunk = h & !FLAGS;
    if h & IS_MMAPPED != 0 {
        return chunk - 2 * SIZE_SZ;
    }
    // In use when the next chunk says its predecessor is.
    let next_h = *((p as *const u8).sub(2 * SIZE_SZ).add(chunk + SIZE_SZ) as *const usize);
    if next_h & PREV_INUSE != 0 { chunk - SIZE_SZ } else { 0 }
}

/// What glibc's `_mid_memalign` makes of an alignment (malloc/malloc.c), which both backends
/// follow: up to MALLOC_ALIGNMENT it is plain malloc; one above the largest power of two is
/// EINVAL; any other is at least MINSIZE, rounded up to a power of two.
pub enum Alignment {
    Malloc,
    Invalid,
    To(usize),
}

pub fn memalign_alignment(align: usize) -> Alignment {
    const MALLOC_ALIGNMENT: usize = 16;
    const MINSIZE: usize = 32;
    if align <= MALLOC_ALIGNMENT {
        Alignment::Malloc
    } else if align > usize::MAX / 2 + 1 {
        Alignment::Invalid
    } else {
        Alignment::To(align.max(MINSIZE).next_power_of_two())
    }
}
