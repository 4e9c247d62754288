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
//! semantics (calloc's included) hold.
//!
//! Only arenas glibc has published are touched. `_int_new_arena` writes a new arena's top a few
//! instructions before `__libc_lock_init` stores 0 over its lock word: a lock taken in between
//! would be overwritten, and glibc and the release would both own the arena. glibc links the
//! arena into main_arena's circular list (`a->next = main_arena.next; atomic_write_barrier ();
//! main_arena.next = a;`, under list_lock) only after that store, and never frees an arena, so an
//! arena reached by walking the list from main_arena has a real lock. main_arena is static in
//! libc: it is found by following `next` from a thread arena (a fresh arena's `next` reads 0
//! until it is published) to the one arena that lies in libc's read-write data mapping.
//!
//! What is read (heap_info's fields, malloc_state's lock, `top` and `next`), the lock protocol and
//! the publication order are glibc_layout.rs's table, for glibc 2.28 to 2.41. heap_info is
//! written by new_heap and `_int_new_arena` before the arena is published; its `size` changes
//! (grow_heap, shrink_heap) only under the arena's lock. A thread arena's `next` is written once,
//! before the arena is published, and never again; `top` and its chunk's size change only under
//! the arena's lock, so they are read as a hint first and read again, for what is given back,
//! under the lock held here. main_arena's own `next` changes with each publication (under
//! list_lock, after the new arena's `next` and a write barrier): read once per walk, it gives a
//! list as it stood, whose arenas are all complete.
//!
//! On a glibc outside the table, or with huge-page heaps (glibc.malloc.hugetlb >= 2, whose heaps
//! are not HEAP_MAX-aligned), the release of arena tops turns itself off (one line at
//! MEMTRIM_LOG=info) and releases are malloc_trim(0) alone. Every read is one that cannot fault
//! (peek), and an arena that does not check out is left alone.
use crate::sys::glibc_heaps::{HEAP_MAX, Vma, find_heaps, peek_words, read_maps};
use crate::sys::glibc_layout::{self, MINSIZE, NEXT_OFFSET, TOP_OFFSET};
use crate::sys::procfs::page_size;
use crate::sys::stderr;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering::*};
use memtrim_common::config::{Config, LogLevel};
/// Arenas on the list beyond those found in the mappings (published while the walk runs).
const LIST_SLACK: usize = 64;

/// The published thread arenas of this process, or none when this glibc's layout is not one
/// verified here or the list does not check out.
pub fn find(cfg: &Config) -> Vec<usize> {
    let Some(heap_info) = heap_info_size(cfg) else { return Vec::new() };
    let maps = read_maps();
    let mut heads: Vec<usize> = find_heaps(&maps, page_size()).iter().filter(|h| h.ar_ptr.wrapping_sub(h.base) == heap_info).map(|h| h.ar_ptr).collect();
    heads.sort_unstable();
    heads.dedup();
    match main_arena(&maps, &heads) {
        Some(main) => published(main, &heads),
        None => Vec::new(),
    }
}

/// sizeof(heap_info) on this glibc when its layout is one the table describes and its thread
/// heaps are HEAP_MAX-aligned; says once, at MEMTRIM_LOG=info, why not.
fn heap_info_size(cfg: &Config) -> Option<usize> {
    static KNOWN: AtomicUsize = AtomicUsize::new(usize::MAX); // MAX: not asked yet, 0: off
    match KNOWN.load(Relaxed) {
        usize::MAX => {}
        0 => return None,
        n => return Some(n),
    }
    let (first, last) = glibc_layout::covered();
    let why = match glibc_layout::running() {
        None => Some(format!("is not one whose arena layout is known (2.{first} to 2.{last})")),
        Some(l) if l.hugetlb_tunable && glibc_layout::hugetlb_heaps() => Some("makes huge-page heaps (glibc.malloc.hugetlb), not HEAP_MAX-aligned".to_string()),
        Some(_) => None,
    };
    let size = glibc_layout::running().filter(|_| why.is_none()).map_or(0, |l| l.heap_info);
    if KNOWN.swap(size, Relaxed) == usize::MAX
        && let Some(why) = why.filter(|_| cfg.log >= LogLevel::Info)
    {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let version = unsafe { core::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy();
        stderr::line(&format!("memtrim: glibc {version} {why}: releases use malloc_trim alone"));
    }
    (size != 0).then_some(size)
}

fn next_of(arena: usize) -> Option<usize> {
    peek_words::<1>(arena + NEXT_OFFSET).map(|[n]| n)
}

/// main_arena: where `next`, followed from a published thread arena, reaches libc's read-write
/// data (the mapping of libc's file that holds its initialised data).
fn main_arena(maps: &[Vma], heads: &[usize]) -> Option<usize> {
    // A function of libc lies in a mapping of libc's file, whose path names libc.
    let anchor = libc::gnu_get_libc_version as *const () as usize;
    let libc_path = &maps.iter().find(|m| m.start <= anchor && anchor < m.end && !m.path.is_empty())?.path;
    let in_libc_data = |a: usize| {
        maps.iter().any(|m| &m.path == libc_path && &m.perms == b"rw-p" && m.start <= a && a.checked_add(NEXT_OFFSET + 8).is_some_and(|e| e <= m.end))
    };
    for &start in heads {
        let Some(mut a) = next_of(start) else { continue };
        for _ in 0..heads.len() + LIST_SLACK {
            if a == 0 || a % 8 != 0 {
                break;
            }
            if in_libc_data(a) {
                let [lock] = peek_words::<1>(a)?;
                return ((lock as u32) <= 2).then_some(a);
            }
            match next_of(a) {
                Some(n) => a = n,
                None => break,
            }
        }
    }
    None
}

/// The thread arenas found in the mappings that are on main_arena's list; none if the walk does
/// not come back round to main_arena.
fn published(main: usize, heads: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut a = main;
    for _ in 0..heads.len() + LIST_SLACK {
        let Some(next) = next_of(a).filter(|&n| n != 0 && n % 8 == 0) else { return Vec::new() };
        if next == main {
            return out;
        }
        if heads.binary_search(&next).is_ok() {
            out.push(next);
        }
        a = next;
    }
    Vec::new()
}

/// Gives back the whole pages of each arena's top chunk past its header.
pub fn release(arenas: &[usize]) {
    let page = page_size();
    for &a in arenas.iter().filter(|&&a| top_pages(a, page).is_some()) {
        release_one(a, page);
    }
}

/// At most this much is given back per hold of an arena's lock, and none after a hold a host
/// thread waited on: it waits for one madvise at most (a busy-time release of the tops runs
/// undiverted).
const PIECE: usize = 1 << 20;

fn release_one(arena: usize, page: usize) {
    // SAFETY: `arena` is a checked malloc_state in the first page of a heap that glibc never
    // unmaps; its first word is the arena's lock.
    let lock = unsafe { &*(arena as *const AtomicI32) };
    let mut from = 0;
    loop {
        if lock.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
            return;
        }
        // the top is read again under each hold: the host may have moved it meanwhile
        let piece = top_pages(arena, page).map(|(start, end)| (start.max(from), end)).filter(|(a, end)| a < end);
        if let Some((a, end)) = piece {
            from = (a + PIECE).min(end);
            // SAFETY: whole pages of the top chunk, which no block overlaps while the lock is held.
            unsafe { libc::madvise(a as *mut libc::c_void, from - a, libc::MADV_DONTNEED) };
        }
        if lock.swap(0, Release) == 2 {
            // SAFETY: a private futex wake on the lock word, as glibc's lll_unlock does.
            unsafe { libc::syscall(libc::SYS_futex, lock.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, 1) };
            // a host thread waits for the arena: taking the lock again at once would make it
            // wait for every piece; the rest is for the next release
            return;
        }
        if piece.is_none() {
            return;
        }
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
    let ok = (lock as u32) <= 2 && ar_ptr == arena && heap_size <= HEAP_MAX && top > heap && size & 1 == 1 && top.checked_add(size & !7) == Some(end);
    let start = (top + MINSIZE).next_multiple_of(page);
    (ok && end / page * page > start).then_some((start, end / page * page))
}
