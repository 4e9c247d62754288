//! The calling thread's errno, which the malloc family sets on failure as glibc's does.
use core::ffi::c_int;

/// # Safety
/// None: errno is this thread's. Unsafe so that the malloc family's calls read as what they
/// are, a write through libc's pointer.
#[inline(always)]
pub unsafe fn set_errno(e: c_int) {
    // SAFETY: __errno_location gives this thread's errno, valid for the thread's life.
    unsafe { *libc::__errno_location() = e };
}
