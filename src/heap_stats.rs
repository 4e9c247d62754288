//! What the allocator holds from the system. glibc's mallinfo2 locks each arena in turn and
//! walks its free lists, so its cost grows with fragmentation: the sampler times it and spaces
//! the calls out so that it never takes more than a thousandth of the worker's time.
use std::time::{Duration, Instant};

pub struct HeapStats {
    bytes: u64,
    next: Instant,
}

impl HeapStats {
    pub fn new() -> HeapStats {
        HeapStats { bytes: 0, next: Instant::now() }
    }

    /// Arena bytes plus mmapped blocks, refreshed when due or when `now` is asked for (after a
    /// release).
    pub fn heap_bytes(&mut self, interval: Duration, fresh: bool) -> u64 {
        let now = Instant::now();
        if fresh || now >= self.next {
            // SAFETY: mallinfo2 has no preconditions.
            let m = unsafe { libc::mallinfo2() };
            self.bytes = (m.arena + m.hblkhd) as u64;
            self.next = now + interval.max(now.elapsed() * 1000);
        }
        self.bytes
    }
}
