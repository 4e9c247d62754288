//! The calling thread's errno, which the malloc family sets on failure as glibc's does.
use core::ffi::c_int;

#[inline(always)]
pub unsafe fn set_errno(e: c_int) {
    *libc::__errno_location() = e;
}
