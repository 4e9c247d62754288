//! Giving retained memory back to the kernel, measured by the resident set before and after.

/// Resident bytes of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// `malloc_trim(0)` on every arena; returns how much the resident set shrank.
pub fn trim_now() -> usize {
    let before = rss_bytes();
    // SAFETY: malloc_trim may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) };
    before.saturating_sub(rss_bytes()) as usize
}
