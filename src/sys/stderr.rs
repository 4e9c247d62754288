//! Lines on stderr written with one writev(2): no locks, no buffering, nothing that can block on
//! the host's own stdio.

pub fn line(msg: &str) {
    let iov = [
        libc::iovec { iov_base: msg.as_ptr() as *mut libc::c_void, iov_len: msg.len() },
        libc::iovec { iov_base: b"\n".as_ptr() as *mut libc::c_void, iov_len: 1 },
    ];
    // SAFETY: both buffers outlive the call. A failed write to stderr has nowhere to be reported.
    unsafe { libc::writev(2, iov.as_ptr(), 2) };
}
