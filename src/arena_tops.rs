//! The top chunks of thread arenas, which malloc_trim(0) leaves resident: it gives back the free
//! pages inside every arena's bins and the main arena's top, but a thread heap shrinks only in
//! free(), once its top passes M_TRIM_THRESHOLD, which freeing large blocks raises (up to
//! 64 MiB). On a gunicorn gthread worker after a load that is about 5 of its 56 MiB resident.
//!
//! A release therefore also tries each thread arena's lock (glibc's low-level lock, the arena's
//! first word: 0 free, 1 taken, 2 taken with waiters; never waited for here) and, holding it,
//! gives back the whole pages of the top chunk past its header with MADV_DONTNEED, as
//! malloc_trim does inside free chunks. glibc keeps nothing in a top chunk past its header and
//! relies on zeros there only for memory it grew fresh, which a discarded page reads as, so its
//! semantics (calloc's included) hold. The layout read (glibc 2.27 and later on 64-bit targets:
//! `top` after the lock, two ints and ten fastbins) is checked before the lock is touched and
//! again under it: the top must lie in a heap of that arena and end where that heap ends. An
//! arena that does not check out is left alone.
use crate::glibc_heaps::{find_heaps, page_size, peek_words, read_maps, HEAP_MAX};
use core::sync::atomic::{AtomicI32, Ordering::*};

/// Offset of `top` in struct malloc_state: mutex, flags, have_fastchunks (ints), fastbinsY[10].
const TOP_OFFSET: usize = 96;
/// sizeof(heap_info) with and without its `pagesize` field (glibc 2.35): an arena follows the
/// heap_info of its first heap.
const HEAP_INFO_SIZES: [usize; 2] = [32, 48];
/// glibc's MINSIZE: the top chunk's header stays.
const MINSIZE: usize = 32;

/// The thread arenas of this process: the arena of every heap that is its arena's first.
pub fn find() -> Vec<usize> {
    let mut v: Vec<usize> = find_heaps(&read_maps(), page_size())
        .iter()
        .filter(|h| HEAP_INFO_SIZES.contains(&h.ar_ptr.wrapping_sub(h.base)))
        .map(|h| h.ar_ptr)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Gives back the whole pages of each arena's top chunk past its header.
pub fn release(arenas: &[usize]) {
    let page = page_size();
    for &a in arenas.iter().filter(|&&a| top_pages(a, page).is_some()) {
        release_one(a, page);
    }
}

fn release_one(arena: usize, page: usize) {
    // SAFETY: `arena` is a checked malloc_state in the first page of a heap that glibc never
    // unmaps; its first word is the arena's lock.
    let lock = unsafe { &*(arena as *const AtomicI32) };
    if lock.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
        return;
    }
    if let Some((start, end)) = top_pages(arena, page) {
        // SAFETY: whole pages of the top chunk, which no block overlaps while the lock is held.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
    if lock.swap(0, Release) == 2 {
        // SAFETY: a private futex wake on the lock word, as glibc's lll_unlock does.
        unsafe { libc::syscall(libc::SYS_futex, lock.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1) };
    }
}

/// The whole pages of `arena`'s top chunk past its header, if the arena checks out.
fn top_pages(arena: usize, page: usize) -> Option<(usize, usize)> {
    let [lock] = peek_words::<1>(arena)?;
    let [top] = peek_words::<1>(arena + TOP_OFFSET)?;
    let heap = top & !(HEAP_MAX - 1);
    let [ar_ptr, _prev, heap_size, _mprotect] = peek_words::<4>(heap)?;
    let [_prev_size, size] = peek_words::<2>(top)?;
    let end = heap + heap_size;
    let ok = (lock as u32) <= 2
        && ar_ptr == arena
        && heap_size <= HEAP_MAX
        && top > heap
        && size & 1 == 1
        && top.checked_add(size & !7) == Some(end);
    let start = (top + MINSIZE).next_multiple_of(page);
    (ok && end / page * page > start).then_some((start, end / page * page))
}
