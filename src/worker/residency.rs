//! Which pages of an address range of this process are resident (mincore(2): reads no memory,
//! and answers ENOMEM rather than faulting where nothing is mapped). For the report and for the
//! heaps' residency the release policy watches.
use core::ffi::c_void;

pub struct Residency {
    vec: Vec<u8>,
    page: usize,
    /// mincore calls made, for the report's cost.
    pub calls: u64,
}

impl Residency {
    pub fn new(page: usize) -> Residency {
        Residency { vec: Vec::new(), page, calls: 0 }
    }

    /// One byte per page of [start, end) (`start` page-aligned), bit 0 set where resident; None
    /// where part of the range is not mapped.
    pub fn pages(&mut self, start: usize, end: usize) -> Option<&[u8]> {
        let len = end.saturating_sub(start);
        self.vec.resize(len / self.page, 0);
        self.calls += 1;
        // SAFETY: vec holds one byte per page of [start, end); start is page-aligned.
        (unsafe { libc::mincore(start as *mut c_void, len, self.vec.as_mut_ptr()) } == 0).then_some(&self.vec[..])
    }

    /// Fills `out` with one byte per page from `start` (page-aligned), bit 0 set where resident;
    /// where part of the range is not mapped (a heap that shrank), piece by piece of 64 pages,
    /// 0 for a piece not wholly mapped. Allocates nothing: it runs while the host's allocations
    /// are diverted.
    pub fn fill(start: usize, out: &mut [u8]) {
        let page = crate::sys::procfs::page_size();
        // SAFETY: out holds one byte per page of the range.
        if unsafe { libc::mincore(start as *mut c_void, out.len() * page, out.as_mut_ptr()) } == 0 {
            return;
        }
        for (i, piece) in out.chunks_mut(64).enumerate() {
            // SAFETY: piece holds one byte per page of its part of the range.
            if unsafe { libc::mincore((start + i * 64 * page) as *mut c_void, piece.len() * page, piece.as_mut_ptr()) } != 0 {
                piece.fill(0);
            }
        }
    }

    /// Resident bytes in [start, end) (page-rounded; 0 where nothing is mapped).
    pub fn bytes(&mut self, start: usize, end: usize) -> u64 {
        let p = self.page;
        let (mut a, end) = (start & !(p - 1), (end + p - 1) & !(p - 1));
        let mut total = 0u64;
        while a < end {
            let len = (end - a).min(1 << 30);
            if let Some(v) = self.pages(a, a + len) {
                total += resident_pages(v) * p as u64;
            } else {
                // Part of the range is unmapped: page by page for this piece is too slow on big
                // ranges; count it in 2 MiB steps instead.
                let mut b = a;
                while b < a + len {
                    let l = (a + len - b).min(2 << 20);
                    total += self.pages(b, b + l).map_or(0, resident_pages) * p as u64;
                    b += l;
                }
            }
            a += len;
        }
        total
    }
}

fn resident_pages(v: &[u8]) -> u64 {
    v.iter().filter(|&&b| b & 1 != 0).count() as u64
}
