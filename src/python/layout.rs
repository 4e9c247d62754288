//! What memtrim assumes of CPython's small-object allocator (Objects/obmalloc.c; 3.12+ also
//! Include/internal/pycore_obmalloc.h), per version, for default (GIL) builds on 64-bit Linux.
//! A version missing here is left alone. Read from the sources of 3.9.13, 3.10.7, 3.11.11,
//! 3.12.5 and 3.13.0 (line numbers of those releases):
//! - ARENA_SIZE 256 KiB and POOL_SIZE 4 KiB (the system page) in 3.9 (obmalloc.c:885, 910, 920);
//!   1 MiB and 16 KiB from 3.10, where the radix tree is on by default and brings
//!   USE_LARGE_ARENAS / USE_LARGE_POOLS (3.10:897-909, 926-946; 3.11:928-977;
//!   pycore_obmalloc.h:181-230 in 3.12 and 3.13).
//! - ALIGNMENT 16, SMALL_REQUEST_THRESHOLD 512, DUMMY_SIZE_IDX 0xffff in all (3.11:878-905,
//!   1058; pycore_obmalloc.h:131-158, 311).
//! - struct pool_header (3.9:938-948; 3.11:1001-1011; pycore_obmalloc.h:254-264), POOL_OVERHEAD
//!   its size rounded to ALIGNMENT.
//! - carving and initialising a pool in one call (allocate_from_new_pool, 3.11:1887-1935), the
//!   reuse test `pool->szidx == size` (3.11:1914), an empty pool onto the arena's freepools
//!   (insert_to_freepool, 3.11:2048), the first pool at the arena's address rounded up to
//!   POOL_SIZE (new_arena, 3.11:1666-1675).
//!
//! The pool header is the same in every listed version:
//! `union { block *_padding; uint count; } ref` at 0, `freeblock` 8, `nextpool` 16, `prevpool`
//! 24, `uint arenaindex` 32, `uint szidx` 36, `uint nextoffset` 40, `uint maxnextoffset` 44;
//! POOL_OVERHEAD 48. A pool is carved from its arena and initialised in one call under the
//! interpreter lock, which leaves `maxnextoffset` = POOL_SIZE - block size, never 0; a part of
//! an arena never carved is still the zero pages mmap gave. A pool whose count falls to 0 goes
//! on its arena's `freepools` list with its header (and stale free list) as they were; taken
//! again, it is re-initialised unless `szidx` equals the size class asked for.

pub const COUNT: usize = 0;
pub const ARENAINDEX: usize = 32;
pub const SZIDX: usize = 36;
pub const NEXTOFFSET: usize = 40;
pub const MAXNEXTOFFSET: usize = 44;
/// The size class no request has: a pool with it is initialised afresh when taken again.
pub const DUMMY_SIZE_IDX: u32 = 0xffff;
/// Blocks are multiples of this (ALIGNMENT, 16 since 3.8 on 64-bit).
pub const ALIGNMENT: u32 = 16;
/// Size classes: SMALL_REQUEST_THRESHOLD 512 / ALIGNMENT.
pub const SIZE_CLASSES: u32 = 32;
pub const POOL_OVERHEAD: u32 = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub arena_size: usize,
    pub pool_size: usize,
}

/// The layout of CPython `major.minor`, if known.
pub fn of(version: (u8, u8)) -> Option<Layout> {
    match version {
        // 256 KiB arenas of page-sized pools: a pool's only page holds its header
        (3, 9) => Some(Layout { arena_size: 256 << 10, pool_size: 4 << 10 }),
        // the radix tree's large arenas and pools (USE_LARGE_ARENAS, USE_LARGE_POOLS)
        (3, 10..=13) => Some(Layout { arena_size: 1 << 20, pool_size: 16 << 10 }),
        _ => None,
    }
}

impl Layout {
    /// Bytes of a block of size class `szidx`.
    pub fn block_size(szidx: u32) -> u32 {
        (szidx + 1) * ALIGNMENT
    }

    /// Blocks a pool of size class `szidx` holds.
    pub fn blocks_per_pool(self, szidx: u32) -> u32 {
        (self.pool_size as u32 - POOL_OVERHEAD) / Self::block_size(szidx)
    }
}
