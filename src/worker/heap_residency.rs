//! glibc's heaps and which of their pages are resident: the figure the release policy counts new
//! retained memory in, and the pages a release made non-resident, looked at again later for
//! those that came straight back. The heaps are the main heap (`[heap]`, up to the break) and the
//! thread heaps (glibc_heaps.rs); CPython's arenas, file pages, stacks and large mmapped blocks
//! lie outside them, so their growth is not taken for retained memory, and a page a release gave
//! back reads as non-resident until the host touches it again (mincore: no page-table entry).
use crate::sys::glibc_heaps::{HEAP_MAX, find_heaps, read_maps};
use crate::sys::procfs::page_size;
use crate::worker::residency::Residency;
use std::time::{Duration, Instant};

/// Heaps grow, shrink and appear without telling: the list is read again this often, and before
/// every release.
const REFRESH: Duration = Duration::from_secs(10);
/// Snapshots stop at this many pages (16 GiB of heap): one byte each, twice.
const MAX_PAGES: usize = 1 << 22;

pub struct Heaps {
    /// Where the main heap starts (`[heap]`); it ends at the break, read at every use.
    main: Option<usize>,
    /// Thread heaps, each its whole HEAP_MAX mapping (what lies past its size is not resident).
    threads: Vec<usize>,
    next_refresh: Instant,
    res: Residency,
    /// The host's allocations and frees at the last figure, and that figure.
    last: Option<(u64, Option<u64>)>,
}

impl Heaps {
    pub fn new() -> Heaps {
        Heaps { main: None, threads: Vec::new(), next_refresh: Instant::now(), res: Residency::new(page_size()), last: None }
    }

    fn refresh(&mut self, now: Instant) {
        let maps = read_maps();
        self.main = maps.iter().find(|m| m.path == "[heap]").map(|m| m.start);
        self.threads = find_heaps(&maps, page_size()).iter().map(|h| h.base).collect();
        self.next_refresh = now + REFRESH;
    }

    fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        // SAFETY: sbrk(0) only reads the current break.
        let brk = unsafe { libc::sbrk(0) } as usize;
        let main = self.main.filter(|&start| brk > start).map(|start| (start, brk.next_multiple_of(page_size())));
        main.into_iter().chain(self.threads.iter().map(|&base| (base, base + HEAP_MAX)))
    }

    /// Resident bytes of the heaps; None where no heap is known (the policy then goes by glibc's
    /// own figures). `ops`, the host's allocations and frees so far (None after a release): while
    /// they stand still (an idle host) the heaps cannot have moved, and the last figure stands
    /// until the next refresh of the list, which spares an idle host a walk of its page tables
    /// every sample.
    pub fn resident(&mut self, now: Instant, ops: Option<u64>) -> Option<u64> {
        if now >= self.next_refresh {
            self.refresh(now);
        } else if let Some((_, bytes)) = self.last.filter(|&(at, _)| Some(at) == ops) {
            return bytes;
        }
        let ranges: Vec<_> = self.ranges().collect();
        let bytes = (!ranges.is_empty()).then(|| ranges.iter().map(|&(a, b)| self.res.bytes(a, b)).sum());
        self.last = ops.map(|ops| (ops, bytes));
        bytes
    }

    /// Buffers for the snapshots around a release, over the heaps as they are now.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        self.refresh(Instant::now());
        let ranges: Vec<_> = self.ranges().collect();
        let pages: usize = ranges.iter().map(|&(a, b)| (b - a) / page_size()).sum();
        (pages > 0 && pages <= MAX_PAGES).then(|| Snapshot { ranges, before: vec![0; pages], after: vec![0; pages] })
    }
}

/// The heaps' residency just before and just after one release.
pub struct Snapshot {
    ranges: Vec<(usize, usize)>,
    before: Vec<u8>,
    after: Vec<u8>,
}

impl Snapshot {
    /// Allocates nothing: runs while the host's allocations are diverted.
    pub fn take(&mut self, after: bool) {
        let buf = if after { &mut self.after } else { &mut self.before };
        fill(&self.ranges, buf);
    }

    /// The pages resident before and not after.
    pub fn released(mut self) -> Released {
        let mut pages = 0;
        for (b, a) in self.before.iter_mut().zip(&self.after) {
            *b = (*b & 1 != 0 && *a & 1 == 0) as u8;
            pages += *b as u64;
        }
        Released { ranges: self.ranges, flags: self.before, pages }
    }
}

/// The pages of the heaps one release made non-resident.
pub struct Released {
    ranges: Vec<(usize, usize)>,
    /// One byte per page of the ranges, 1 where released.
    flags: Vec<u8>,
    pub pages: u64,
}

impl Released {
    /// Released pages outside any mapping, for the cost model's tests.
    #[cfg(test)]
    pub fn counted(pages: u64) -> Released {
        Released { ranges: Vec::new(), flags: Vec::new(), pages }
    }

    /// How many of the released pages are resident again (a heap gone since reads as not).
    pub fn resident_again(&self) -> u64 {
        let mut now = vec![0u8; self.flags.len()];
        fill(&self.ranges, &mut now);
        self.flags.iter().zip(&now).filter(|(f, n)| **f != 0 && **n & 1 != 0).count() as u64
    }
}

fn fill(ranges: &[(usize, usize)], buf: &mut [u8]) {
    let page = page_size();
    let mut at = 0;
    for &(a, b) in ranges {
        let n = (b - a) / page;
        Residency::fill(a, &mut buf[at..at + n]);
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of a mapping of ours, discarded and touched again, read as released and then as
    /// resident again; pages never touched and pages left alone are neither.
    #[test]
    fn released_pages_and_those_that_come_back() {
        let page = page_size();
        // SAFETY: a fresh private anonymous mapping of 16 pages, unmapped at the end.
        let base = unsafe { libc::mmap(core::ptr::null_mut(), 16 * page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(base, libc::MAP_FAILED);
        let a = base as usize;
        let touch = |i: usize| {
            // SAFETY: page i of the mapping above.
            unsafe { ((a + i * page) as *mut u8).write_volatile(1) }
        };
        (0..12).for_each(touch);
        let mut s = Snapshot { ranges: vec![(a, a + 16 * page)], before: vec![0; 16], after: vec![0; 16] };
        s.take(false);
        // SAFETY: pages 4..10 of the mapping above.
        unsafe { libc::madvise((a + 4 * page) as *mut libc::c_void, 6 * page, libc::MADV_DONTNEED) };
        s.take(true);
        let r = s.released();
        assert_eq!(r.pages, 6, "pages 4..10 were resident and are not");
        assert_eq!(r.resident_again(), 0);
        touch(5);
        touch(6);
        touch(14);
        assert_eq!(r.resident_again(), 2, "pages 5 and 6 came back; 14 was never released");
        // SAFETY: the mapping above, no longer used.
        unsafe { libc::munmap(base, 16 * page) };
        assert_eq!(r.resident_again(), 0, "an unmapped heap has nothing resident");
    }
}
