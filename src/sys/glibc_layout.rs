//! What the library assumes of glibc's internals, release by release (x86_64, glibc 2.28 to
//! 2.41), read from each release's own source at its tag (glibc-2.28 ... glibc-2.41), and the
//! run-time checks that decide, before each use, whether the running glibc is one of them.
//!
//! | assumption | 2.28-2.34 | 2.35-2.37 | 2.38-2.41 | source (at each tag) |
//! |---|---|---|---|---|
//! | chunk header: size word before the block, flags PREV_INUSE 1, IS_MMAPPED 2, NON_MAIN_ARENA 4; usable = chunk - 8 (in use), chunk - 16 (mmapped) | same | same | same | malloc/malloc.c: `struct malloc_chunk`, `#define PREV_INUSE`, `IS_MMAPPED`, `NON_MAIN_ARENA`, `musable` |
//! | MALLOC_ALIGNMENT 16 (2 * SIZE_SZ, the alignment of long double), MINSIZE 32 | same | same | same | sysdeps/generic/malloc-alignment.h, malloc/malloc.c `MINSIZE` |
//! | `struct malloc_state`: lock (int) at 0, `top` at 96, `next` at 2160 | same | same | same | malloc/malloc.c `struct malloc_state` (identical text at all 14 tags) |
//! | sizeof(heap_info), which the first heap's arena follows | 32 | 48 (`pagesize`, pad) | 48 | malloc/arena.c `typedef struct _heap_info` |
//! | thread heaps HEAP_MAX-aligned, HEAP_MAX = 2 * DEFAULT_MMAP_THRESHOLD_MAX = 64 MiB | always | unless glibc.malloc.hugetlb >= 2: 4 huge pages | as 2.35 | malloc/arena.c `HEAP_MAX_SIZE`, `heap_max_size`; malloc/malloc.c `DEFAULT_MMAP_THRESHOLD_MAX`, `do_set_hugetlb`; elf/dl-tunables.list |
//! | arena lock: `__libc_lock_lock` = `lll_lock`, 0 free, 1 taken, 2 taken with waiters; unlock wakes one waiter on 2 | same | same | same | sysdeps/nptl/libc-lockP.h, sysdeps/nptl/lowlevellock.h |
//! | arena publication: lock initialised, then `a->next`, write barrier, `main_arena.next = a` | same | same | same | malloc/arena.c `_int_new_arena` |
//! | memalign: <= 16 is malloc, > SIZE_MAX/2+1 EINVAL, < 32 is 32, else the next power of two | same | same | same | malloc/malloc.c `_mid_memalign` |
//! | aligned_alloc | alias of memalign | alias of memalign | EINVAL unless a power of two, then memalign | malloc/malloc.c `aligned_alloc` (2.38: a function of its own) |
//! | `__libc_malloc`, `__libc_free`, `__libc_calloc`, `__libc_realloc`, `__libc_memalign`, `__libc_valloc`, `__libc_pvalloc` exported | GLIBC_2.2.5 | same | same | malloc/Versions (libc GLIBC_2.0) |
//! | MALLOC_CHECK_ / glibc.malloc.check: hooks in libc give chunks a check byte, malloc_usable_size the size asked for | yes (2.28-2.33) | no: libc_malloc_debug.so (2.34) | no | malloc/hooks.c, malloc/malloc.c `musable`; malloc/malloc-check.c (2.34) |
//! | mallinfo2 | from 2.33 (glibc_late.rs looks it up) | yes | yes | malloc/Versions GLIBC_2.33 |
//! | malloc_info XML: `<heap nr=>` per arena with `<sizes>`, `<total type="fast"/"rest">`, `<system type="current">` | same | same | same | malloc/malloc.c `__malloc_info` (its output formats unchanged 2.28-2.41) |
//!
//! Used where they are read: the chunk header on every call (glibc.rs), checked once at the
//! backend's start against a block glibc gives, and with libc's malloc checking on (2.28-2.33)
//! not used at all (backend.rs: glibc then serves alone, nothing counted, and
//! malloc_usable_size is glibc's own); the arena layout, lock and publication by the
//! release of thread arenas' tops (arena_tops.rs), which runs only on a release in this table
//! and without huge-page heaps, and otherwise turns itself off with one line at
//! MEMTRIM_LOG=info (releases are malloc_trim(0) alone); aligned_alloc's rule by the export
//! (exports.rs), on both backends.
use crate::sys::environ;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub struct Layout {
    /// sizeof(heap_info): the first heap's arena starts this far into the heap.
    pub heap_info: usize,
    /// glibc.malloc.hugetlb exists: at 2 or more thread heaps are aligned to four huge pages,
    /// not to HEAP_MAX.
    pub hugetlb_tunable: bool,
    /// aligned_alloc fails with EINVAL on an alignment that is not a power of two (or 0).
    pub aligned_alloc_checks: bool,
    /// libc itself checks the heap under MALLOC_CHECK_ (hooks that add a check byte to each
    /// chunk and make malloc_usable_size the size asked for); from 2.34 only
    /// libc_malloc_debug.so does, which a program must preload.
    pub malloc_check_in_libc: bool,
}

/// The releases above: 2.FIRST + index.
const FIRST: u32 = 28;
const TABLE: [Layout; 14] = {
    const HOOKS: Layout = Layout { heap_info: 32, hugetlb_tunable: false, aligned_alloc_checks: false, malloc_check_in_libc: true };
    const OLD: Layout = Layout { heap_info: 32, hugetlb_tunable: false, aligned_alloc_checks: false, malloc_check_in_libc: false };
    const HUGETLB: Layout = Layout { heap_info: 48, hugetlb_tunable: true, aligned_alloc_checks: false, malloc_check_in_libc: false };
    const C17: Layout = Layout { heap_info: 48, hugetlb_tunable: true, aligned_alloc_checks: true, malloc_check_in_libc: false };
    [HOOKS, HOOKS, HOOKS, HOOKS, HOOKS, HOOKS, OLD, HUGETLB, HUGETLB, HUGETLB, C17, C17, C17, C17]
};
/// Offset of `top` in struct malloc_state: mutex, flags, have_fastchunks (ints), fastbinsY[10].
pub const TOP_OFFSET: usize = 96;
/// Offset of `next` in struct malloc_state (after last_remainder, bins[254] and binmap[4]).
pub const NEXT_OFFSET: usize = 2160;
/// glibc's MINSIZE.
pub const MINSIZE: usize = 32;

/// The running glibc's minor version (2.N), parsed without allocating; 0 if it is not 2.N.
pub fn minor() -> u32 {
    static MINOR: AtomicU32 = AtomicU32::new(u32::MAX);
    let m = MINOR.load(Relaxed);
    if m != u32::MAX {
        return m;
    }
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let v = unsafe { core::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_bytes();
    let m = v
        .strip_prefix(b"2.")
        .map(|r| r.iter().take_while(|c| c.is_ascii_digit()).fold(0u32, |n, &c| n.saturating_mul(10).saturating_add(u32::from(c - b'0'))))
        .unwrap_or(0);
    MINOR.store(m, Relaxed);
    m
}

/// The running glibc's row of the table, if it has one.
pub fn running() -> Option<&'static Layout> {
    TABLE.get(minor().checked_sub(FIRST)? as usize)
}

/// The releases the table covers, for messages.
pub fn covered() -> (u32, u32) {
    (FIRST, FIRST + TABLE.len() as u32 - 1)
}

/// Whether aligned_alloc must refuse `align` with EINVAL, as the running glibc does. A glibc
/// newer than the table keeps 2.38's rule, which ISO C17 requires.
#[inline]
pub fn aligned_alloc_refuses(align: usize) -> bool {
    !align.is_power_of_two() && running().map_or(minor() > covered().1, |l| l.aligned_alloc_checks)
}

/// Whether this glibc checks its heap in libc and was asked to (MALLOC_CHECK_ or
/// glibc.malloc.check set and not 0): its chunks are then not the ones the glibc backend reads.
/// Reads the environment without allocating (it runs at the first allocation).
pub fn malloc_checking() -> bool {
    if !running().is_some_and(|l| l.malloc_check_in_libc) {
        return false;
    }
    let set = |v: &[u8]| !v.is_empty() && v != b"0";
    environ::pairs().any(|(k, v)| match k {
        b"MALLOC_CHECK_" => set(v),
        b"GLIBC_TUNABLES" => v.split(|&b| b == b':').filter_map(|kv| kv.strip_prefix(b"glibc.malloc.check=")).any(set),
        _ => false,
    })
}

/// Whether glibc.malloc.hugetlb is 2 or more in this process's tunables (every GLIBC_TUNABLES
/// as the process started: glibc reads them all).
pub fn hugetlb_heaps() -> bool {
    let Ok(env) = std::fs::read("/proc/self/environ") else { return true };
    env.split(|&b| b == 0)
        .filter_map(|e| e.strip_prefix(b"GLIBC_TUNABLES="))
        .flat_map(|t| t.split(|&b| b == b':'))
        .filter_map(|kv| kv.strip_prefix(b"glibc.malloc.hugetlb="))
        .any(|v| v != b"0" && v != b"1")
}
