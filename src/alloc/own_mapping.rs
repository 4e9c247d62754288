//! Blocks in a mapping of their own, for what a release's side pool cannot serve (beyond its
//! largest class, or with the pool full): no arena lock, as glibc's own mmapped chunks. They are
//! recognised on free and unmapped here, so that glibc's mmap statistics and dynamic mmap
//! threshold, which never counted them, stay as they are. The block's header says IS_MMAPPED,
//! with prev_size the offset back to the start of the mapping, as in glibc's mmapped memalign
//! chunks, so glibc's usable-size arithmetic holds; the mapping starts with a mark, where
//! glibc's own mmapped chunks (on 64-bit) have a zero prev_size word.
use crate::sys::glibc::IS_MMAPPED;
use core::ffi::c_void;

const MARK: usize = 0x216d_6972_746d_656d; // "memtrim!"
const HEADER: usize = 16;
/// The mark and the mapping's length come first.
const PREFIX: usize = 16;
/// Lengths are whole pages of at least this size (mmap rounds up to its own).
const PAGE: usize = 4096;

/// A block of at least `size` usable bytes at a multiple of `align` (a power of two of at
/// least 16); NULL when the system refuses the mapping.
pub fn alloc(align: usize, size: usize) -> *mut c_void {
    let slack = if align > HEADER { align } else { 0 };
    let Some(len) = size.checked_add(PREFIX + HEADER + slack + PAGE - 1).map(|n| n & !(PAGE - 1)) else { return core::ptr::null_mut() };
    // SAFETY: a fresh anonymous mapping.
    let map = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if map == libc::MAP_FAILED {
        return core::ptr::null_mut();
    }
    let map = map as usize;
    let p = (map + PREFIX + HEADER + align - 1) & !(align - 1);
    let chunk = p - HEADER;
    // SAFETY: every word written lies inside the new mapping.
    unsafe {
        *(map as *mut usize) = MARK;
        *((map + 8) as *mut usize) = len;
        *(chunk as *mut usize) = chunk - map;
        *((chunk + 8) as *mut usize) = (map + len - chunk) | IS_MMAPPED;
    }
    p as *mut c_void
}

/// Whether an mmapped block is one of these.
///
/// # Safety
/// `p` is a live block whose header says IS_MMAPPED, and not of the side pool.
pub unsafe fn owns(p: *mut c_void) -> bool {
    let chunk = p as usize - HEADER;
    let back = *(chunk as *const usize);
    // glibc's prev_size of an mmapped chunk also leads back to its mapping's start.
    back != 0 && *((chunk - back) as *const usize) == MARK
}

/// # Safety
/// `p` is a live block of this module.
pub unsafe fn free(p: *mut c_void) {
    let chunk = p as usize - HEADER;
    let map = chunk - *(chunk as *const usize);
    libc::munmap(map as *mut c_void, *((map + 8) as *const usize));
}
