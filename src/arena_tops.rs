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
//! What is read, on 64-bit targets, for glibc 2.28 to 2.41 (checked against each release's
//! malloc/malloc.c and malloc/arena.c, and with gdb `ptype /o` on glibc 2.36):
//! - heap_info, at each HEAP_MAX-aligned heap start: `ar_ptr` at 0, `prev` at 8, `size` at 16,
//!   `mprotect_size` at 24; 32 bytes long up to 2.34, 48 from 2.35 (`pagesize` and padding), and
//!   the first heap's arena follows it. Written by new_heap and `_int_new_arena` before the
//!   arena is published; `size` changes (grow_heap, shrink_heap) only under the arena's lock.
//! - struct malloc_state: the lock (an int) at 0, `top` at 96 (after `flags`, `have_fastchunks`
//!   and fastbinsY[10]), `next` at 2160 (after last_remainder, bins[254] and binmap[4]). A thread
//!   arena's `next` is written once, before the arena is published, and never again; `top` and
//!   its chunk's size change only under the arena's lock, so they are read as a hint first and
//!   read again, for what is given back, under the lock held here. main_arena's own `next`
//!   changes with each publication (under list_lock, after the new arena's `next` and a write
//!   barrier): read once per walk, it gives a list as it stood, whose arenas are all complete.
//!
//! On any other glibc the release of arena tops turns itself off (one line at MEMTRIM_LOG=info)
//! and releases are malloc_trim(0) alone. Every read is one that cannot fault (peek), and an
//! arena that does not check out is left alone.
use crate::glibc_heaps::{find_heaps, page_size, peek_words, read_maps, Vma, HEAP_MAX};
use crate::{init, stderr};
use core::sync::atomic::{AtomicI32, AtomicU8, Ordering::*};
use memtrim_common::config::LogLevel;

/// The glibc releases whose layout is described above: 2.FIRST to 2.LAST.
const VERIFIED: core::ops::RangeInclusive<u32> = 28..=41;
/// Offset of `top` in struct malloc_state: mutex, flags, have_fastchunks (ints), fastbinsY[10].
const TOP_OFFSET: usize = 96;
/// Offset of `next` in struct malloc_state.
const NEXT_OFFSET: usize = 2160;
/// sizeof(heap_info) with and without its `pagesize` field (glibc 2.35): an arena follows the
/// heap_info of its first heap.
const HEAP_INFO_SIZES: [usize; 2] = [32, 48];
/// glibc's MINSIZE: the top chunk's header stays.
const MINSIZE: usize = 32;
/// Arenas on the list beyond those found in the mappings (published while the walk runs).
const LIST_SLACK: usize = 64;

/// The published thread arenas of this process, or none when this glibc's layout is not one
/// verified here or the list does not check out.
pub fn find() -> Vec<usize> {
    if !layout_verified() {
        return Vec::new();
    }
    let maps = read_maps();
    let mut heads: Vec<usize> = find_heaps(&maps, page_size())
        .iter()
        .filter(|h| HEAP_INFO_SIZES.contains(&h.ar_ptr.wrapping_sub(h.base)))
        .map(|h| h.ar_ptr)
        .collect();
    heads.sort_unstable();
    heads.dedup();
    match main_arena(&maps, &heads) {
        Some(main) => published(main, &heads),
        None => Vec::new(),
    }
}

/// Whether this glibc is one whose layout the module doc describes; says once when it is not.
fn layout_verified() -> bool {
    static KNOWN: AtomicU8 = AtomicU8::new(0); // 0 not asked yet, 1 verified, 2 not
    match KNOWN.load(Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let version = libc_version();
    let minor = version.strip_prefix("2.").and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u32>().ok());
    let ok = minor.is_some_and(|m| VERIFIED.contains(&m));
    if KNOWN.swap(if ok { 1 } else { 2 }, Relaxed) == 0 && !ok && init::config().is_some_and(|c| c.log >= LogLevel::Info) {
        stderr::line(&format!(
            "memtrim: glibc {version} is not one whose arena layout is known (2.{} to 2.{}): releases use malloc_trim alone",
            VERIFIED.start(),
            VERIFIED.end()
        ));
    }
    ok
}

fn libc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    unsafe { core::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy().into_owned()
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
