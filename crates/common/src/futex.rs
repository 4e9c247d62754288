//! Waiting and waking on a u32 of a shared file mapping across processes (FUTEX_WAIT without
//! FUTEX_PRIVATE_FLAG: the kernel keys the futex on the file and offset).
use core::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout`; returns early on a wake or a signal.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: word is a valid u32 for the duration of the call; ts lives on this stack.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const libc::timespec) };
}

pub fn wake_all(word: &AtomicU32) {
    // SAFETY: word is a valid u32.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}
