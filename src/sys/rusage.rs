//! The whole process's CPU time and page faults (getrusage), the base of the busy-time budget.

pub struct Usage {
    pub cpu_us: u64,
    pub minor_faults: u64,
}

pub fn process() -> Usage {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut u: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: u is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Usage { cpu_us: us(u.ru_utime) + us(u.ru_stime), minor_faults: u.ru_minflt as u64 }
}
