//! What the allocator holds from the system. jemalloc's figures are cheap; glibc's mallinfo2
//! locks each arena in turn and walks its free lists, so its cost grows with fragmentation
//! (0.2 ms on a 100 MiB Ruby heap, the largest part of an idle worker's CPU): each call is timed
//! and the next routine one spaced out so that they take at most 1/20000 of the time (50 µs a
//! second). A big move of the live bytes, or of the heaps' resident bytes (a heap that grows or
//! shrinks while live bytes hold), refreshes at the next sample: the policy caps new retained
//! memory at these figures, and a release must not wait for a stale one.
use crate::alloc::backend;
use crate::sys::{glibc_late, jemalloc_ctl};
use memtrim_common::config::Allocator;
use std::time::{Duration, Instant};

pub struct HeapStats {
    bytes: u64,
    /// glibc's mmapped blocks, at the same refresh: live bytes outside its heaps.
    mmapped: u64,
    next: Instant,
    /// Live bytes and the heaps' resident bytes at the last refresh: a big move of either since
    /// makes the figure stale.
    live_then: u64,
    resident_then: u64,
}

impl HeapStats {
    pub fn new() -> HeapStats {
        HeapStats { bytes: 0, mmapped: 0, next: Instant::now(), live_then: 0, resident_then: 0 }
    }

    /// glibc: arena bytes plus mmapped blocks; jemalloc: resident bytes. Refreshed when due,
    /// when `fresh` is asked for (after a release), or when live bytes or the heaps' `resident`
    /// bytes (glibc; 0 where unknown) moved by more than an eighth (or a MiB) since the last one.
    pub fn heap_bytes(&mut self, interval: Duration, fresh: bool, live: u64, resident: u64) -> u64 {
        let now = Instant::now();
        let far = |v: u64, then: u64| v.abs_diff(then) > (then / 8).max(1 << 20);
        let moved = far(live, self.live_then) || far(resident, self.resident_then);
        if fresh || moved || now >= self.next {
            (self.live_then, self.resident_then) = (live, resident);
            (self.bytes, self.mmapped) = match backend::active() {
                Allocator::Glibc => glibc_late::heap_bytes(live),
                Allocator::Jemalloc => (jemalloc_ctl::resident(), 0),
            };
            self.next = now + interval.max(now.elapsed() * 20_000);
        }
        self.bytes
    }

    /// glibc's mmapped blocks at the last refresh.
    pub fn mmapped(&self) -> u64 {
        self.mmapped
    }
}
