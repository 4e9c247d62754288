//! Waiting and waking on a u32 of a shared file mapping across processes (FUTEX_WAIT without
//! FUTEX_PRIVATE_FLAG: the kernel keys the futex on the file and offset).
use core::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout`; returns early on a wake or a signal.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    wait_at(word.as_ptr() as usize, expected, timeout);
}

pub fn wake_all(word: &AtomicU32) {
    wake_all_at(word.as_ptr() as usize);
}

/// `wait` on the u32 at an address this process never reads itself (in a mapping of a file
/// another user may truncate: the kernel then answers EFAULT where a read would be SIGBUS).
pub fn wait_at(word: usize, expected: u32, timeout: Duration) {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: the kernel checks the address; ts lives on this stack.
    unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAIT, expected, &ts as *const libc::timespec) };
}

/// `wake_all` on such an address.
pub fn wake_all_at(word: usize) {
    // SAFETY: the kernel checks the address.
    unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, i32::MAX) };
}
