//! What one page fault costs on this machine: a page a release gave back and the host touches
//! again costs the host a fault (kernel entry, a zeroed page, the page-table update), which the
//! busy-time budget charges to the release. Measured once, at the worker's start, on 256 pages
//! of a mapping of its own (under a millisecond); not under a finite RLIMIT_AS.
use crate::alloc::divert;
use crate::sys::clock::thread_cpu_ns;

const PAGES: usize = 256;

/// CPU time of one fault on a page given back with MADV_DONTNEED, in ns (1000 when it cannot be
/// measured: a common figure for a 4 KiB zero-fill fault).
pub fn measure() -> u64 {
    const FALLBACK: u64 = 1000;
    if divert::address_space_limited() {
        return FALLBACK;
    }
    let page = crate::sys::procfs::page_size();
    let len = PAGES * page;
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let base = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if base == libc::MAP_FAILED {
        return FALLBACK;
    }
    let touch = || {
        for i in 0..PAGES {
            // SAFETY: page i of the mapping above.
            unsafe { base.cast::<u8>().add(i * page).write_volatile(1) };
        }
    };
    touch();
    // SAFETY: the mapping above.
    unsafe { libc::madvise(base, len, libc::MADV_DONTNEED) };
    let t0 = thread_cpu_ns();
    touch();
    let spent = thread_cpu_ns().saturating_sub(t0);
    // SAFETY: the mapping above, no longer used.
    unsafe { libc::munmap(base, len) };
    match spent / PAGES as u64 {
        0 => FALLBACK,
        ns => ns,
    }
}

#[cfg(test)]
mod tests {
    /// Catches a unit error: a fault costs between 0.05 and 100 µs on any machine this runs on.
    #[test]
    fn a_measured_fault_costs_a_plausible_time() {
        let ns = super::measure();
        assert!((50..=100_000).contains(&ns), "one fault measured at {ns} ns");
    }
}
