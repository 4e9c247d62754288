//! One arena's pools, measured and, on a release, emptied ones given back. Runs only in the
//! interpreter's main thread holding its lock (pymalloc.rs), so no pool changes meanwhile; it
//! allocates nothing and takes no lock. An empty pool keeps its first page (the header: the
//! arena's free-pool list runs through it) and gets the size class no request has, so that the
//! allocator initialises it afresh when it takes it again instead of following its old free list
//! into the pages given back.
use crate::python::layout::{self as layout, Layout};
use std::time::Instant;

const PAGE: usize = 4096;
const MAX_PAGES: usize = (1 << 20) / PAGE;

/// What a walk saw and did.
#[derive(Clone, Copy, Default, Debug)]
pub struct Tally {
    pub arenas: u64,
    /// Resident bytes of the arenas.
    pub resident: u64,
    pub used_pools: u64,
    /// Empty pools still holding pages past their header, and those pages' resident bytes.
    pub empty_pools: u64,
    pub empty_bytes: u64,
    /// Empty pools whose pages were given back (now or before).
    pub returned_pools: u64,
    /// Pools never carved, or whose header page is not resident.
    pub fresh_pools: u64,
    /// Bytes in the blocks of used pools, and in their free blocks.
    pub allocated: u64,
    pub free_in_used: u64,
    /// What this walk gave back.
    pub released_pools: u64,
    pub released_bytes: u64,
}

/// What a walk found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An arena, measured (and released).
    Arena,
    /// An arena, walked up to this pool when the deadline came.
    Partial(usize),
    /// A block of an arena's size that is not one (a frame data stack chunk, say), or whose
    /// headers cannot all be read now: left untouched.
    NotArena,
    /// Not mapped: the list is wrong, and nothing may be touched again.
    Unmapped,
}

/// A pool header's words that memtrim reads.
struct Header {
    count: u32,
    arenaindex: u32,
    szidx: u32,
    nextoffset: u32,
    maxnextoffset: u32,
}

impl Header {
    /// # Safety
    /// `pool` is readable for POOL_OVERHEAD bytes.
    unsafe fn read(pool: usize) -> Header {
        // SAFETY: every field lies within POOL_OVERHEAD bytes of the pool's start.
        let word = |at: usize| unsafe { ((pool + at) as *const u32).read_volatile() };
        Header {
            count: word(layout::COUNT),
            arenaindex: word(layout::ARENAINDEX),
            szidx: word(layout::SZIDX),
            nextoffset: word(layout::NEXTOFFSET),
            maxnextoffset: word(layout::MAXNEXTOFFSET),
        }
    }

    fn carved(&self) -> bool {
        self.maxnextoffset != 0
    }

    /// Whether the header is one obmalloc can have written: a size class whose block size
    /// gives maxnextoffset, a bump offset on a block boundary within the pool, a count the pool
    /// can hold; or, for a pool memtrim gave back, count 0 and the size class no request has.
    fn consistent(&self, layout: Layout) -> bool {
        let pool = layout.pool_size as u32;
        let class = (pool.wrapping_sub(self.maxnextoffset) / layout::ALIGNMENT).wrapping_sub(1);
        if class >= layout::SIZE_CLASSES || self.maxnextoffset != pool - Layout::block_size(class) {
            return false;
        }
        let size = Layout::block_size(class);
        let bump = self.nextoffset >= layout::POOL_OVERHEAD + size
            && self.nextoffset <= self.maxnextoffset + size
            && (self.nextoffset - layout::POOL_OVERHEAD).is_multiple_of(size);
        let class_ok = self.szidx == class || (self.szidx == layout::DUMMY_SIZE_IDX && self.count == 0);
        bump && class_ok && self.count <= layout.blocks_per_pool(class)
    }
}

/// Walks the block at `base` from pool `from` on, until `deadline`; if it is an arena,
/// measures it and, with `release`, gives back the pages of its empty pools. Every pool is checked before any is written: the carved
/// pools are a prefix of the arena, their headers consistent and naming one arena index, the
/// first one carved, the block not a data stack chunk (whose `size` word at 8 is its size).
///
/// # Safety
/// `base` is a block of `layout.arena_size` bytes from the interpreter's arena allocator, and
/// the caller holds the interpreter's lock in the only interpreter.
pub unsafe fn walk(base: usize, layout: Layout, release: bool, from: usize, deadline: Instant, t: &mut Tally) -> Verdict {
    let pages = layout.arena_size / PAGE;
    let mut resident = [0u8; MAX_PAGES];
    // SAFETY: one byte of `resident` per page of the range (checked first); mincore only reads
    // the page tables.
    if pages > MAX_PAGES || unsafe { libc::mincore(base as *mut _, layout.arena_size, resident.as_mut_ptr()) } != 0 {
        return Verdict::Unmapped;
    }
    let is_resident = |page: usize| resident[page] & 1 == 1;
    let first = base.next_multiple_of(layout.pool_size);
    let pools = (base + layout.arena_size - first) / layout.pool_size;
    let page_of = |i: usize| (first + i * layout.pool_size - base) / PAGE;
    // SAFETY: pool i lies inside the block, and its header is on a resident page of it.
    let header = |i: usize| is_resident(page_of(i)).then(|| unsafe { Header::read(first + i * layout.pool_size) });
    let Some(h0) = header(0).filter(|h| h.carved()) else { return Verdict::NotArena };
    // SAFETY: the block's second word, on its first page, resident.
    if is_resident(0) && unsafe { (base as *const usize).add(1).read_volatile() } == layout.arena_size {
        return Verdict::NotArena;
    }
    // a header not resident is a pool never carved, or one swapped out: either way the end of
    // what is walked
    let mut carved = 0;
    for i in 0..pools {
        match header(i) {
            Some(h) if h.carved() => {
                if carved != i || h.arenaindex != h0.arenaindex || !h.consistent(layout) {
                    return Verdict::NotArena;
                }
                carved += 1;
            }
            _ => {}
        }
    }
    if from == 0 {
        t.arenas += 1;
        t.resident += (0..pages).filter(|&p| is_resident(p)).count() as u64 * PAGE as u64;
        t.fresh_pools += (pools - carved) as u64;
    }
    let pool_pages = layout.pool_size / PAGE;
    for i in from..carved {
        if i > from && i % 4 == 0 && Instant::now() >= deadline {
            return Verdict::Partial(i);
        }
        let pool = first + i * layout.pool_size;
        // SAFETY: a carved pool inside the block, its header read once already.
        let h = unsafe { Header::read(pool) };
        if h.count != 0 {
            let block = Layout::block_size(h.szidx) as u64;
            t.used_pools += 1;
            t.allocated += h.count as u64 * block;
            t.free_in_used += (layout.blocks_per_pool(h.szidx) - h.count) as u64 * block;
            continue;
        }
        let body = (page_of(i) + 1..page_of(i) + pool_pages).filter(|&p| is_resident(p)).count() as u64 * PAGE as u64;
        if body == 0 {
            // given back, or (a one-page pool) nothing to give
            let returned = h.szidx == layout::DUMMY_SIZE_IDX;
            t.returned_pools += u64::from(returned);
            t.empty_pools += u64::from(!returned);
            continue;
        }
        if !release {
            t.empty_pools += 1;
            t.empty_bytes += body;
            continue;
        }
        // SAFETY: an empty pool of an arena checked above, under the interpreter's lock (the
        // caller's contract): obmalloc reads nothing of it but its header until it is carved
        // again, and the marked size class sends that through its full re-initialisation.
        unsafe {
            ((pool + layout::SZIDX) as *mut u32).write_volatile(layout::DUMMY_SIZE_IDX);
            libc::madvise((pool + PAGE) as *mut _, layout.pool_size - PAGE, libc::MADV_DONTNEED);
        }
        t.returned_pools += 1;
        t.released_pools += 1;
        t.released_bytes += body;
    }
    Verdict::Arena
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Layout = Layout { arena_size: 1 << 20, pool_size: 16 << 10 };

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn map() -> usize {
        // SAFETY: a fresh private mapping for the test.
        unsafe { libc::mmap(core::ptr::null_mut(), L.arena_size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as usize }
    }

    /// Writes pool `i`'s header as obmalloc does: `count` blocks of size class `szidx` handed out.
    fn pool(base: usize, i: usize, count: u32, szidx: u32) -> *mut u32 {
        let h = (base.next_multiple_of(L.pool_size) + i * L.pool_size) as *mut u32;
        let size = Layout::block_size(szidx);
        // SAFETY: inside the mapping.
        unsafe {
            h.write(count);
            h.add(8).write(7);
            h.add(9).write(szidx);
            h.add(10).write(layout::POOL_OVERHEAD + size * count.max(1) + size);
            h.add(11).write(L.pool_size as u32 - size);
        }
        h
    }

    /// Pool 0 in use (3 blocks of 32 bytes), pool 1 empty with its body written, the rest never
    /// carved.
    fn arena() -> usize {
        let a = map();
        pool(a, 0, 3, 1);
        let p1 = pool(a, 1, 0, 1) as usize;
        // SAFETY: the body of pool 1, inside the mapping.
        unsafe { core::ptr::write_bytes((p1 + PAGE) as *mut u8, 0xab, L.pool_size - PAGE) };
        a
    }

    #[test]
    fn an_empty_pool_is_measured_then_given_back_once() {
        let a = arena();
        let mut seen = Tally::default();
        // SAFETY: the test's arena, no other thread.
        assert_eq!(unsafe { walk(a, L, false, 0, far(), &mut seen) }, Verdict::Arena);
        assert_eq!((seen.used_pools, seen.empty_pools, seen.empty_bytes, seen.allocated), (1, 1, 12 << 10, 96));
        assert_eq!(seen.free_in_used, (L.blocks_per_pool(1) as u64 - 3) * 32);
        let mut done = Tally::default();
        // SAFETY: as above.
        assert_eq!(unsafe { walk(a, L, true, 0, far(), &mut done) }, Verdict::Arena);
        assert_eq!((done.released_pools, done.released_bytes, done.empty_pools), (1, 12 << 10, 0));
        let pool1 = a.next_multiple_of(L.pool_size) + L.pool_size;
        // SAFETY: inside the mapping.
        unsafe {
            assert_eq!((pool1 as *const u32).add(9).read(), layout::DUMMY_SIZE_IDX);
            assert_eq!((pool1 as *const u32).add(8).read(), 7, "the rest of the header is kept");
        }
        let mut again = Tally::default();
        // SAFETY: as above.
        assert_eq!(unsafe { walk(a, L, true, 0, far(), &mut again) }, Verdict::Arena);
        assert_eq!((again.released_pools, again.returned_pools), (0, 1));
        // SAFETY: inside the mapping.
        assert_eq!(unsafe { ((pool1 + PAGE) as *const u8).read() }, 0, "the body reads as given back");
    }

    /// Nothing is written unless every header is one obmalloc could have written.
    #[test]
    fn a_block_that_is_not_an_arena_is_left_untouched() {
        let spoil: [&dyn Fn(usize); 5] = [
            // SAFETY: a header word of a pool inside the test's mapping.
            &|a| unsafe { pool(a, 2, 1, 3).add(9).write(77) },
            // SAFETY: as above.
            &|a| unsafe { pool(a, 2, 1, 3).add(8).write(8) },
            // SAFETY: as above.
            &|a| unsafe { pool(a, 2, 1, 3).add(10).write(50) },
            &|a| {
                pool(a, 3, 1, 3);
            },
            // a data stack chunk: its size at offset 8
            // SAFETY: the second word of the test's mapping.
            &|a| unsafe { (a as *mut usize).add(1).write(L.arena_size) },
        ];
        for (n, f) in spoil.iter().enumerate() {
            let a = arena();
            f(a);
            let mut t = Tally::default();
            // SAFETY: the test's block.
            assert_eq!(unsafe { walk(a, L, true, 0, far(), &mut t) }, Verdict::NotArena, "case {n}");
            let body = a.next_multiple_of(L.pool_size) + L.pool_size + PAGE;
            // SAFETY: inside the mapping.
            assert_eq!(unsafe { (body as *const u8).read() }, 0xab, "case {n}: written to");
        }
    }

    /// A walk that meets its deadline says where it stopped, and goes on from there.
    #[test]
    fn a_walk_past_its_deadline_resumes_where_it_stopped() {
        let a = map();
        for i in 0..40 {
            pool(a, i, u32::from(i % 2 == 0), 1);
        }
        let mut t = Tally::default();
        // SAFETY: the test's arena, no other thread.
        let v = unsafe { walk(a, L, false, 0, Instant::now(), &mut t) };
        assert_eq!(v, Verdict::Partial(4));
        let mut rest = t;
        // SAFETY: as above.
        assert_eq!(unsafe { walk(a, L, false, 4, far(), &mut rest) }, Verdict::Arena);
        assert_eq!((rest.arenas, rest.used_pools + rest.empty_pools), (1, 40));
    }

    #[test]
    fn an_unmapped_block_is_said() {
        let a = map();
        // SAFETY: the test's own mapping.
        unsafe { libc::munmap(a as *mut _, L.arena_size) };
        // SAFETY: mincore reads no memory.
        assert_eq!(unsafe { walk(a, L, true, 0, far(), &mut Tally::default()) }, Verdict::Unmapped);
    }
}
