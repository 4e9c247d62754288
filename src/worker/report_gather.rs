//! `memtrim report`, the library's half: on the worker thread, when the page's report_requested
//! moves, the allocator's own view of the heap is gathered and written next to the page (in its
//! per-user directory) as `<page>.report` (JSON written by hand, 0600, through a temporary name
//! created with O_EXCL|O_NOFOLLOW and renamed over the final one). The CLI (src/cli/report.rs) reads it and
//! adds the kernel's view from /proc/PID/smaps.
//!
//! What is gathered, and how it stays safe on a live server:
//! - glibc (always: under the jemalloc backend glibc's arenas hold memtrim's own allocations):
//!   malloc_info(3) for every arena (free chunk histogram, fast and other free totals, system
//!   bytes, address space) and the mmapped-block totals. glibc prints an arena's
//!   `<heap nr=..><sizes>` before it takes that arena's lock and its next line after releasing it;
//!   the stream is an unbuffered fopencookie whose write callback timestamps each piece, so the
//!   gap is how long that arena's lock was waited for and held (`lock_us`), reported per arena.
//!   The walk itself cannot be cut short (each lock is held for one walk of that arena's free
//!   lists, as for the mallinfo2 the sampler takes anyway); everything after it is bounded.
//! - Thread arenas' heaps by address: every 64 MiB-aligned address in a private anonymous
//!   read-write mapping whose first words are a plausible heap_info (arena pointer, previous heap,
//!   size, mprotect size). They are read with process_vm_readv on this process, so a mapping
//!   unmapped meanwhile gives an error, never a fault. Heaps are grouped by arena pointer and
//!   matched to malloc_info's arenas by address-space total and heap count (`match`: exact,
//!   ambiguous when equal totals make the order a guess, nearest when the arena moved between
//!   the two reads).
//! - Large mmapped blocks by address: glibc mmapped chunk headers (prev_size 0, size a page
//!   multiple with IS_MMAPPED that fits the mapping) are looked for first at the start of each
//!   private anonymous mapping and right after each block found there (the kernel merges a new
//!   mapping into the one above it, so the newest block starts the merged mapping), then, if
//!   glibc's count is not reached, at every resident page start of those mappings. The words are
//!   read through a pipe (writev from the probed addresses: EFAULT, never a fault, for an
//!   address unmapped meanwhile; about 0.25 µs a probe, a quarter of process_vm_readv's). Stops
//!   when glibc's count is found, or at [`PROBE_LIMIT`] probes or [`PROBE_BUDGET`].
//! - Residency: mincore(2) over the main heap, each thread heap, each arena's top chunk and each
//!   mmapped block.
//! - jemalloc (its backend): per arena through mallctl after an `epoch` refresh: pactive, pdirty,
//!   pmuzzy, mapped, retained, resident, small and large allocated, threads.
//!
//! The prediction of what a release returns (`release_bytes`):
//! - glibc, per arena: malloc_trim madvises the whole pages inside each free chunk of the bins,
//!   [chunk + 48, chunk + size), and gives the main arena's top back through sbrk. From the
//!   histogram the expected whole pages of a chunk of size s at a random alignment are
//!   max(0, (s - 48) / page - 1). glibc does not record which free pages it already gave back,
//!   so after a release that figure overstates: the resident free bytes of the arena are
//!   measured instead (mincore over its heaps, less the bytes in use and its top chunk), less the
//!   free bytes that are not in whole pages (about a page plus 48 bytes per free chunk, all of a
//!   small one); the prediction is the smaller of the two. Bytes in use that were never touched
//!   (a calloc from fresh top) make the resident estimate, and so the prediction, low by as much.
//!   Each arena's top adds its resident part above `top - 33` rounded down to pages: the main
//!   arena's through malloc_trim's sbrk, the thread arenas' through arena_tops.rs (malloc_trim
//!   leaves those).
//! - jemalloc: its dirty and muzzy pages (muzzy pages already given back lazily still count in
//!   RSS until the kernel reclaims them, so they count here too). jemalloc has no addresses to
//!   give, so no residency check: dirty pages it never handed out touched (the cache-oblivious
//!   page of each large block, the rest of a fresh mapping) make the figure high by them, about
//!   8 % on tests/c/report_layout.c.
use crate::sys::glibc_heaps::{find_heaps, page_size, peek_words, read_maps, Heap, Vma, HEAP_MAX};
use crate::alloc::{accounting, backend, side_pool};
use crate::python::{arenas as pymalloc_arenas, pymalloc};
use crate::sys::clock;
use core::ffi::{c_char, c_int, c_void};
use memtrim_common::config::Allocator;
use memtrim_common::page::{self, Stats};
use std::ffi::CString;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The report file's format version (the CLI rejects another).
pub const VERSION: u32 = 1;
/// Bytes before the first page glibc's malloc_trim may release inside a free chunk
/// (sizeof(struct malloc_chunk)).
const CHUNK_HEAD: u64 = 48;
/// glibc's MINSIZE + 1: what a release keeps of an arena's top.
const TOP_KEEP: u64 = 33;
const PROBE_LIMIT: u64 = 200_000;
const PROBE_BUDGET: Duration = Duration::from_millis(150);
const IS_MMAPPED: usize = 2;

/// The report file of the page of (pid, start) in `dir`: beside the page, in its per-user
/// directory.
pub fn path(dir: &str, pid: u32, start_ticks: u64) -> String {
    format!("{}/{}.report", crate::worker::page_file::user_dir(dir), page::file_name(pid, start_ticks))
}

/// Gathers the report for request number `request` and writes it; on failure writes a report
/// that says why (so that the CLI never waits for nothing). Runs on the worker thread.
pub fn serve(dir: &str, pid: u32, start_ticks: u64, request: u32) {
    let text = gather(pid, start_ticks, request);
    if let Err(e) = write_file(&path(dir, pid, start_ticks), text.as_bytes())
        && crate::init::config().is_some_and(|c| c.log >= memtrim_common::config::LogLevel::Warn)
    {
        crate::sys::stderr::line(&format!("memtrim: cannot write the report: {e}"));
    }
}

/// Resident bytes in [start, end) (mincore, page-rounded; 0 where nothing is mapped).
struct Residency {
    vec: Vec<u8>,
    page: usize,
    calls: u64,
}

impl Residency {
    fn bytes(&mut self, start: usize, end: usize) -> u64 {
        let p = self.page;
        let (mut a, end) = (start & !(p - 1), (end + p - 1) & !(p - 1));
        let mut total = 0u64;
        while a < end {
            let len = (end - a).min(1 << 30);
            let pages = len / p;
            self.vec.resize(pages, 0);
            self.calls += 1;
            // SAFETY: vec holds one byte per page of [a, a + len); a is page-aligned.
            if unsafe { libc::mincore(a as *mut c_void, len, self.vec.as_mut_ptr()) } == 0 {
                total += self.vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * p as u64;
            } else {
                // Part of the range is unmapped: page by page for this piece is too slow on big
                // ranges; count it in 2 MiB steps instead.
                let mut b = a;
                while b < a + len {
                    let l = (a + len - b).min(2 << 20);
                    self.vec.resize(l / p, 0);
                    // SAFETY: as above.
                    if unsafe { libc::mincore(b as *mut c_void, l, self.vec.as_mut_ptr()) } == 0 {
                        total += self.vec.iter().filter(|&&x| x & 1 != 0).count() as u64 * p as u64;
                    }
                    b += l;
                }
            }
            a += len;
        }
        total
    }
}

// ---------------------------------------------------------------------------------------------
// glibc: malloc_info through a timestamping stream

#[repr(C)]
struct CookieIo {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

unsafe extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, funcs: CookieIo) -> *mut libc::FILE;
}

struct Capture {
    buf: Vec<u8>,
    /// (end offset in buf, time) of every write glibc made.
    marks: Vec<(usize, Instant)>,
}

/// # Safety
/// `cookie` is the stream's Capture, not otherwise borrowed; `data` holds `n` bytes.
unsafe extern "C" fn capture_write(cookie: *mut c_void, data: *const c_char, n: usize) -> isize {
    // SAFETY: the cookie is the Capture that outlives the stream; data holds n bytes.
    let (cap, data) = unsafe { (&mut *(cookie as *mut Capture), core::slice::from_raw_parts(data as *const u8, n)) };
    cap.buf.extend_from_slice(data);
    cap.marks.push((cap.buf.len(), Instant::now()));
    n as isize
}

/// malloc_info's text and the lock time of each arena (µs, in heap order), and its duration.
fn malloc_info_timed() -> Option<(String, Vec<u64>, u64)> {
    let mut cap = Box::new(Capture { buf: Vec::with_capacity(64 << 10), marks: Vec::with_capacity(4096) });
    let funcs = CookieIo { read: None, write: Some(capture_write), seek: None, close: None };
    let t0 = Instant::now();
    // SAFETY: the cookie outlives the stream, which is closed below; unbuffered, so each of
    // glibc's fprintf calls reaches capture_write as it happens.
    unsafe {
        let fp = fopencookie(&mut *cap as *mut Capture as *mut c_void, c"w".as_ptr(), funcs);
        if fp.is_null() {
            return None;
        }
        libc::setvbuf(fp, core::ptr::null_mut(), libc::_IONBF, 0);
        libc::malloc_info(0, fp);
        libc::fclose(fp);
    }
    let us = t0.elapsed().as_micros() as u64;
    let mut locks = Vec::new();
    for (i, &(end, t)) in cap.marks.iter().enumerate() {
        if cap.buf[..end].ends_with(b"<sizes>\n") {
            let next = cap.marks.get(i + 1).map_or(t, |m| m.1);
            locks.push(next.duration_since(t).as_micros() as u64);
        }
    }
    let text = String::from_utf8_lossy(&cap.buf).into_owned();
    Some((text, locks, us))
}

#[derive(Clone, Copy, Default)]
struct Bin {
    from: u64,
    to: u64,
    total: u64,
    count: u64,
    fast: bool,
    unsorted: bool,
}

#[derive(Default)]
struct GArena {
    nr: u32,
    bins: Vec<Bin>,
    fast_count: u64,
    fast_bytes: u64,
    rest_count: u64,
    rest_bytes: u64,
    system: u64,
    max_system: u64,
    aspace: u64,
    subheaps: u64,
    lock_us: u64,
    // derived
    heaps: Vec<Heap>,
    matched: &'static str,
    top: u64,
    in_use: u64,
    resident: u64,
    top_resident: u64,
    whole_free: u64,
    slack: u64,
    release: u64,
    /// The main arena's address range (the brk heap).
    range: Option<(usize, usize)>,
}

#[derive(Default)]
struct MallocInfo {
    arenas: Vec<GArena>,
    mmap_count: u64,
    mmap_bytes: u64,
}

fn attr(line: &str, name: &str) -> u64 {
    let key = format!("{name}=\"");
    line.find(&key)
        .and_then(|i| {
            let rest = &line[i + key.len()..];
            rest[..rest.find('"')?].parse().ok()
        })
        .unwrap_or(0)
}

fn parse_malloc_info(text: &str, locks: &[u64]) -> MallocInfo {
    let mut mi = MallocInfo::default();
    let mut cur: Option<GArena> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("<heap nr=") {
            let nr = attr(l, "nr") as u32;
            cur = Some(GArena { nr, lock_us: locks.get(mi.arenas.len()).copied().unwrap_or(0), ..Default::default() });
            continue;
        }
        let Some(a) = cur.as_mut() else {
            if l.starts_with("<total type=\"mmap\"") {
                mi.mmap_count = attr(l, "count");
                mi.mmap_bytes = attr(l, "size");
            }
            continue;
        };
        if l.starts_with("<size ") || l.starts_with("<unsorted ") {
            a.bins.push(Bin {
                from: attr(l, "from"),
                to: attr(l, "to"),
                total: attr(l, "total"),
                count: attr(l, "count"),
                fast: false,
                unsorted: l.starts_with("<unsorted"),
            });
        } else if l.starts_with("<total type=\"fast\"") {
            a.fast_count = attr(l, "count");
            a.fast_bytes = attr(l, "size");
        } else if l.starts_with("<total type=\"rest\"") {
            a.rest_count = attr(l, "count");
            a.rest_bytes = attr(l, "size");
        } else if l.starts_with("<system type=\"current\"") {
            a.system = attr(l, "size");
        } else if l.starts_with("<system type=\"max\"") {
            a.max_system = attr(l, "size");
        } else if l.starts_with("<aspace type=\"total\"") {
            a.aspace = attr(l, "size");
        } else if l.starts_with("<aspace type=\"subheaps\"") {
            a.subheaps = attr(l, "size");
        } else if l.starts_with("</heap>") {
            let mut a = cur.take().unwrap_or_default();
            // glibc prints the fast bins first: the leading entries whose counts make up the
            // fast total.
            let mut fast_left = a.fast_count;
            for b in a.bins.iter_mut() {
                if fast_left == 0 || b.unsorted || b.count > fast_left {
                    break;
                }
                b.fast = true;
                fast_left -= b.count;
            }
            let binned: u64 = a.bins.iter().filter(|b| !b.fast).map(|b| b.total).sum();
            // "rest" counts the top chunk, which is in no bin.
            a.top = a.rest_bytes.saturating_sub(binned);
            a.in_use = a.system.saturating_sub(a.fast_bytes + a.rest_bytes);
            mi.arenas.push(a);
        }
    }
    mi
}

/// Expected whole pages (in bytes) malloc_trim can release from the chunks of one histogram
/// entry, at a random alignment of each chunk: max(0, (s - 48) / page - 1) pages per chunk.
fn whole_pages(b: &Bin, page: u64) -> u64 {
    if b.fast || b.count == 0 || b.to < page + CHUNK_HEAD {
        return 0;
    }
    if b.from >= page + CHUNK_HEAD {
        return b.total - b.count * (page + CHUNK_HEAD);
    }
    // Chunks on both sides of the limit: the average chunk stands for all.
    let avg = b.total / b.count;
    avg.saturating_sub(page + CHUNK_HEAD) * b.count
}

/// Gives each thread arena of malloc_info its heaps.
fn match_heaps(arenas: &mut [GArena], heaps: &[Heap]) {
    // Groups by arena pointer: (ar_ptr, total size, heap indices).
    let mut groups: Vec<(usize, u64, Vec<usize>)> = Vec::new();
    for (i, h) in heaps.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == h.ar_ptr) {
            Some(g) => {
                g.1 += h.size as u64;
                g.2.push(i);
            }
            None => groups.push((h.ar_ptr, h.size as u64, vec![i])),
        }
    }
    let mut taken = vec![false; groups.len()];
    // Exact matches first (address-space total and heap count), then the nearest total.
    for pass in 0..2 {
        for a in arenas.iter_mut().filter(|a| a.nr != 0 && a.heaps.is_empty()) {
            let cands: Vec<usize> = (0..groups.len())
                .filter(|&g| !taken[g])
                .filter(|&g| pass == 1 || (groups[g].1 == a.aspace && groups[g].2.len() as u64 == a.subheaps.max(1)))
                .collect();
            let pick = if pass == 0 {
                cands.first().copied()
            } else {
                cands.iter().copied().min_by_key(|&g| groups[g].1.abs_diff(a.aspace))
            };
            let Some(g) = pick else { continue };
            if pass == 1 && groups[g].1.abs_diff(a.aspace) > (a.aspace / 4).max(1 << 20) {
                continue;
            }
            taken[g] = true;
            a.matched = if pass == 1 {
                "nearest"
            } else if cands.len() > 1 {
                "ambiguous"
            } else {
                "exact"
            };
            a.heaps = groups[g].2.iter().map(|&i| heaps[i]).collect();
        }
    }
}

/// Residency and the release prediction of each glibc arena.
fn glibc_predict(mi: &mut MallocInfo, maps: &[Vma], res: &mut Residency, page: u64) {
    // SAFETY: sbrk(0) only reads the current break.
    let brk = unsafe { libc::sbrk(0) } as usize;
    let main_vma = maps.iter().find(|m| m.path == "[heap]");
    for a in mi.arenas.iter_mut() {
        a.whole_free = a.bins.iter().map(|b| whole_pages(b, page)).sum();
        let binned: u64 = a.bins.iter().filter(|b| !b.fast).map(|b| b.total).sum();
        a.slack = (binned + a.fast_bytes).saturating_sub(a.whole_free);
        // The top chunk ends the main heap at the break, or a thread arena's newest heap (the
        // one no other heap names as previous); a release gives back its whole pages past the
        // header (malloc_trim for the main arena, arena_tops.rs for the others).
        let top_end = if a.nr == 0 {
            a.matched = "brk";
            let Some(m) = main_vma.filter(|m| brk > m.start && brk <= m.end) else {
                a.matched = "none";
                continue;
            };
            a.range = Some((m.start, brk));
            a.resident = res.bytes(m.start, brk);
            brk
        } else {
            let Some(h) = a.heaps.iter().find(|h| !a.heaps.iter().any(|o| o.prev == h.base)) else {
                a.matched = "none";
                continue;
            };
            a.resident = a.heaps.iter().map(|h| res.bytes(h.base, h.base + h.size)).sum();
            h.base + h.size
        };
        a.top_resident = res.bytes(top_end.saturating_sub(a.top as usize).next_multiple_of(page as usize), top_end);
        let top_extra = a.top.saturating_sub(TOP_KEEP) / page * page;
        let top_release = res.bytes(top_end.saturating_sub(top_extra as usize), top_end);
        let resident_free = a.resident.saturating_sub(a.in_use + a.top_resident);
        a.release = resident_free.saturating_sub(a.slack).min(a.whole_free) + top_release;
        a.whole_free += top_extra;
    }
}

// ---------------------------------------------------------------------------------------------
// Large mmapped blocks

/// Reads the two words at each of `addrs` (at most 1024) into `out` (None where unreadable).
/// The words go through a pipe: writev from those addresses copies them in the kernel, which
/// answers EFAULT for an address unmapped meanwhile instead of faulting, and costs far less
/// per read than process_vm_readv (which pins each page).
fn peek_pairs(addrs: &[usize], out: &mut Vec<Option<[usize; 2]>>) {
    let n = addrs.len().min(1024);
    out.clear();
    out.resize(addrs.len(), None);
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        for i in 0..n {
            out[i] = peek_words::<2>(addrs[i]);
        }
        return;
    }
    // 1024 reads of 16 bytes fill a quarter of a default pipe.
    let remote: Vec<libc::iovec> = addrs[..n].iter().map(|&a| libc::iovec { iov_base: a as *mut c_void, iov_len: 16 }).collect();
    let mut buf = vec![0u8; n * 16];
    let mut s = 0;
    while s < n {
        // SAFETY: writev only reads the iovecs' memory, and fails with EFAULT where it is
        // not mapped.
        let w = unsafe { libc::writev(fds[1], remote[s..].as_ptr(), (n - s) as c_int) };
        let done = if w > 0 { w as usize } else { 0 };
        let mut got = 0;
        while got < done {
            // SAFETY: buf has room for n * 16 bytes; s * 16 + done <= n * 16.
            let r = unsafe { libc::read(fds[0], buf[s * 16 + got..].as_mut_ptr() as *mut c_void, done - got) };
            if r <= 0 {
                break;
            }
            got += r as usize;
        }
        for i in s..s + got / 16 {
            let b = &buf[i * 16..i * 16 + 16];
            out[i] = Some([usize::from_ne_bytes(b[..8].try_into().unwrap_or_default()), usize::from_ne_bytes(b[8..].try_into().unwrap_or_default())]);
        }
        if got < done {
            break;
        }
        // The read at s + done / 16 failed (or nothing was written): skip it.
        s += done / 16 + 1;
    }
    // SAFETY: both ends are ours.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

/// Finds glibc mmapped chunks: (start, length). Probes the start of every resident page of the
/// private anonymous mappings outside the known heaps (a window of 1024 pages per read); a block
/// found is skipped whole.
fn find_mmapped(maps: &[Vma], skip: &[(usize, usize)], want: u64, page: usize, res: &mut Residency) -> (Vec<(usize, usize)>, u64, bool) {
    const WINDOW: usize = 1024;
    let t0 = Instant::now();
    let looks_like = |w: Option<[usize; 2]>, at: usize, end: usize| -> Option<usize> {
        let [prev_size, head] = w?;
        let len = head & !7;
        (prev_size == 0 && head & 7 == IS_MMAPPED && len >= page && len % page == 0 && at + len <= end).then_some(len)
    };
    // First the mappings' starts and the chains of blocks that follow them: the kernel puts
    // a new mapping below the last one and merges it with it, so the newest block starts its
    // mapping. Usually that finds them all at the cost of a read per mapping.
    let mut found: Vec<(usize, usize)> = Vec::new();
    let starts: Vec<&Vma> = maps.iter().filter(|m| m.anon_private_rw() && !skip.iter().any(|&(s, e)| m.start >= s && m.start < e)).collect();
    let mut words = Vec::with_capacity(WINDOW);
    let mut probes = 0u64;
    for chunk in starts.chunks(WINDOW) {
        let addrs: Vec<usize> = chunk.iter().map(|m| m.start).collect();
        peek_pairs(&addrs, &mut words);
        probes += addrs.len() as u64;
        for (m, w) in chunk.iter().zip(&words) {
            let mut at = m.start;
            let mut w = *w;
            while let Some(len) = looks_like(w, at, m.end) {
                found.push((at, len));
                at += len;
                if at >= m.end || found.len() >= 1 << 16 {
                    break;
                }
                probes += 1;
                w = peek_words::<2>(at);
            }
        }
    }
    if found.len() as u64 >= want {
        return (found, probes, true);
    }
    // Then every resident page of those mappings, outside the blocks already found.
    let mut skip = skip.to_vec();
    skip.extend(found.iter().map(|&(s, l)| (s, s + l)));
    let mut window = vec![0u8; WINDOW];
    let mut addrs = Vec::with_capacity(WINDOW);
    for m in maps.iter().filter(|m| m.anon_private_rw()) {
        let mut pos = m.start;
        'vma: while pos < m.end {
            if found.len() as u64 >= want {
                return (found, probes, true);
            }
            if probes >= PROBE_LIMIT || t0.elapsed() > PROBE_BUDGET {
                return (found, probes, false);
            }
            if let Some(&(_, e)) = skip.iter().find(|&&(s, e)| pos >= s && pos < e) {
                pos = e;
                continue;
            }
            // The resident pages of the next window, up to the next range to skip.
            let mut wend = (pos + WINDOW * page).min(m.end);
            if let Some(&(s, _)) = skip.iter().filter(|&&(s, _)| s > pos && s < wend).min_by_key(|&&(s, _)| s) {
                wend = s;
            }
            let pages = (wend - pos) / page;
            res.calls += 1;
            // SAFETY: one byte per page of [pos, wend); pos is page-aligned.
            if unsafe { libc::mincore(pos as *mut c_void, wend - pos, window.as_mut_ptr()) } != 0 {
                pos = wend;
                continue;
            }
            addrs.clear();
            addrs.extend((0..pages).filter(|&i| window[i] & 1 != 0).map(|i| pos + i * page));
            peek_pairs(&addrs, &mut words);
            probes += addrs.len() as u64;
            let mut next = pos;
            for (&at, w) in addrs.iter().zip(&words) {
                if at < next {
                    continue;
                }
                if let Some(len) = looks_like(*w, at, m.end) {
                    found.push((at, len));
                    next = at + len;
                }
            }
            pos = next.max(wend);
            if found.len() as u64 >= want {
                continue 'vma;
            }
        }
    }
    let complete = found.len() as u64 >= want;
    (found, probes, complete)
}

// ---------------------------------------------------------------------------------------------
// jemalloc

mod je {
    use core::ffi::{c_char, c_void};
    use tikv_jemalloc_sys as sys;

    pub fn read<T: Copy + Default>(name: &str) -> Option<T> {
        let name = std::ffi::CString::new(name).ok()?;
        let mut v = T::default();
        let mut len = core::mem::size_of::<T>();
        // SAFETY: name is NUL-terminated; v and len describe a T.
        let rc = unsafe { sys::mallctl(name.as_ptr() as *const c_char, &mut v as *mut T as *mut c_void, &mut len, core::ptr::null_mut(), 0) };
        (rc == 0 && len == core::mem::size_of::<T>()).then_some(v)
    }

    pub fn refresh() {
        let mut e = 1u64;
        // SAFETY: epoch takes a u64.
        unsafe {
            sys::mallctl(c"epoch".as_ptr(), core::ptr::null_mut(), core::ptr::null_mut(), &mut e as *mut u64 as *mut c_void, 8);
        }
    }
}

const JE_FIELDS: [&str; 10] = ["pactive", "pdirty", "pmuzzy", "mapped", "retained", "resident", "base", "internal", "small.allocated", "large.allocated"];

fn jemalloc_json(o: &mut String) -> u64 {
    let t0 = Instant::now();
    je::refresh();
    let refresh_us = t0.elapsed().as_micros() as u64;
    let page = je::read::<usize>("arenas.page").unwrap_or(4096) as u64;
    let narenas = je::read::<u32>("arenas.narenas").unwrap_or(0);
    let auto = je::read::<u32>("opt.narenas").unwrap_or(narenas);
    let _ = write!(o, "\"jemalloc\":{{\"page\":{page},\"narenas\":{narenas},\"auto_arenas\":{auto},\"refresh_us\":{refresh_us}");
    for k in ["allocated", "active", "metadata", "resident", "mapped", "retained"] {
        let _ = write!(o, ",\"{k}\":{}", je::read::<usize>(&format!("stats.{k}")).unwrap_or(0));
    }
    for k in ["dirty_decay_ms", "muzzy_decay_ms"] {
        let _ = write!(o, ",\"{k}\":{}", je::read::<isize>(&format!("arenas.{k}")).unwrap_or(-1));
    }
    o.push_str(",\"arenas\":[");
    let mut release = 0u64;
    let mut first = true;
    for i in 0..narenas {
        if !je::read::<bool>(&format!("arena.{i}.initialized")).unwrap_or(false) {
            continue;
        }
        let _ = write!(o, "{}{{\"index\":{i},\"huge\":{}", if first { "" } else { "," }, i >= auto);
        first = false;
        let _ = write!(o, ",\"nthreads\":{}", je::read::<u32>(&format!("stats.arenas.{i}.nthreads")).unwrap_or(0));
        let mut dirty_muzzy = 0;
        for f in JE_FIELDS {
            let v = je::read::<usize>(&format!("stats.arenas.{i}.{f}")).unwrap_or(0) as u64;
            if f == "pdirty" || f == "pmuzzy" {
                dirty_muzzy += v;
            }
            let _ = write!(o, ",\"{}\":{v}", f.replace('.', "_"));
        }
        for f in ["dirty_purged", "muzzy_purged"] {
            let _ = write!(o, ",\"{f}\":{}", je::read::<u64>(&format!("stats.arenas.{i}.{f}")).unwrap_or(0));
        }
        let _ = write!(o, ",\"release_bytes\":{}}}", dirty_muzzy * page);
        release += dirty_muzzy * page;
    }
    let _ = write!(o, "],\"release_bytes\":{release}}}");
    release
}

// ---------------------------------------------------------------------------------------------
// memtrim's own ranges

fn worker_stack() -> Option<(usize, usize)> {
    // SAFETY: attr is initialised by pthread_getattr_np and destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let (mut addr, mut size) = (core::ptr::null_mut(), 0usize);
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0).then_some((addr as usize, addr as usize + size))
    }
}

// ---------------------------------------------------------------------------------------------
// The report

/// CPython's object arenas: the last walk of their pools (a fresh one if the interpreter runs
/// one within WALK_WAIT), and their address ranges with resident bytes, read without the
/// interpreter's lock (mincore reads no memory).
fn python_json(o: &mut String, res: &mut Residency) {
    const WALK_WAIT: Duration = Duration::from_millis(300);
    let asked = clock::unix_ms();
    pymalloc::request(false);
    let fresh = pymalloc::wait_for_walk(asked, WALK_WAIT);
    let mut s = Stats::default();
    pymalloc::fill(&mut s);
    let (fresh_pools, unlisted) = pymalloc::fresh_and_unlisted();
    let _ = write!(
        o,
        ",\"python\":{{\"state\":{},\"fresh_walk\":{fresh},\"measured_at_ms\":{},\"arenas\":{},\"arena_bytes\":{},\"used_pools\":{},\"empty_pools\":{},\"empty_bytes\":{},\"returned_pools\":{},\"fresh_pools\":{fresh_pools},\"allocated_bytes\":{},\"free_bytes\":{},\"pool_bytes\":{},\"unlisted_arenas\":{unlisted},\"released_bytes\":{},\"released_pools\":{},\"max_hold_us\":{},\"ranges\":[",
        s.py_state,
        s.py_measured_at_ms,
        s.py_arenas,
        s.py_arena_bytes,
        s.py_used_pools,
        s.py_empty_pools,
        s.py_empty_bytes,
        s.py_returned_pools,
        s.py_allocated_bytes,
        s.py_free_bytes,
        pymalloc::pool_size(),
        s.py_released_bytes,
        s.py_released_pools,
        s.py_max_hold_us
    );
    for (i, (start, end)) in pymalloc_arenas::ranges(pymalloc::arena_size()).into_iter().enumerate() {
        let _ = write!(o, "{}[{start},{},{}]", if i == 0 { "" } else { "," }, end - start, res.bytes(start, end));
    }
    o.push_str("]}");
}

fn gather(pid: u32, start_ticks: u64, request: u32) -> String {
    let t0 = Instant::now();
    let cpu0 = clock::thread_cpu_us();
    let page = page_size();
    let mut res = Residency { vec: Vec::new(), page, calls: 0 };
    let allocator = backend::active();
    let live = accounting::totals().live;
    let mut o = String::with_capacity(32 << 10);
    let _ = write!(
        o,
        "{{\"version\":{VERSION},\"pid\":{pid},\"start_ticks\":{start_ticks},\"request\":{request},\"gathered_at_ms\":{},\"allocator\":\"{}\",\"page_size\":{page},\"live_bytes\":{live}",
        clock::unix_ms(),
        match allocator {
            Allocator::Glibc => "glibc",
            Allocator::Jemalloc => "jemalloc",
        }
    );
    let mut notes: Vec<String> = Vec::new();

    // glibc's arenas, right after them the heaps they live in.
    let t_mi = Instant::now();
    let info = malloc_info_timed();
    let maps = read_maps();
    let heaps = find_heaps(&maps, page);
    let heaps_us = t_mi.elapsed().as_micros() as u64;
    let (mut mi, mi_us, max_lock) = match info {
        Some((text, locks, us)) => {
            let max = locks.iter().copied().enumerate().max_by_key(|&(_, l)| l).unwrap_or((0, 0));
            (parse_malloc_info(&text, &locks), us, max)
        }
        None => {
            notes.push("malloc_info could not be read (fopencookie failed): no glibc arena figures".into());
            (MallocInfo::default(), 0, (0, 0))
        }
    };
    match_heaps(&mut mi.arenas, &heaps);
    let t_res = Instant::now();
    glibc_predict(&mut mi, &maps, &mut res, page as u64);
    let mut resident_us = t_res.elapsed().as_micros() as u64;
    let unmatched = mi.arenas.iter().filter(|a| a.nr != 0 && a.heaps.is_empty()).count();
    if unmatched > 0 {
        notes.push(format!("{unmatched} thread arena(s) could not be matched to their heaps: their residency and prediction are missing"));
    }

    // memtrim's own ranges, and the mmapped blocks outside every known heap.
    let side = side_pool::range();
    let stack = worker_stack();
    let mut skip: Vec<(usize, usize)> = heaps.iter().map(|h| (h.base, h.base + HEAP_MAX)).collect();
    skip.extend(side);
    skip.extend(stack);
    let t_probe = Instant::now();
    let (blocks, probes, complete) = if mi.mmap_count > 0 { find_mmapped(&maps, &skip, mi.mmap_count, page, &mut res) } else { (Vec::new(), 0, true) };
    let probe_us = t_probe.elapsed().as_micros() as u64;
    if !complete {
        notes.push(format!(
            "found {} of glibc's {} mmapped blocks by address (the probe stops after {} probes or {} ms)",
            blocks.len(),
            mi.mmap_count,
            PROBE_LIMIT,
            PROBE_BUDGET.as_millis()
        ));
    }

    let glibc_release: u64 = mi.arenas.iter().map(|a| a.release).sum();
    let glibc_whole: u64 = mi.arenas.iter().map(|a| a.whole_free).sum();
    o.push_str(",\"glibc\":{\"arenas\":[");
    for (i, a) in mi.arenas.iter().enumerate() {
        let binned: u64 = a.bins.iter().filter(|b| !b.fast).map(|b| b.total).sum();
        let binned_n: u64 = a.bins.iter().filter(|b| !b.fast).map(|b| b.count).sum();
        let _ = write!(
            o,
            "{}{{\"nr\":{},\"main\":{},\"system_bytes\":{},\"max_system_bytes\":{},\"aspace_bytes\":{},\"in_use_bytes\":{},\"free_fast_bytes\":{},\"free_fast_count\":{},\"free_bin_bytes\":{binned},\"free_bin_count\":{binned_n},\"top_bytes\":{},\"resident_bytes\":{},\"top_resident_bytes\":{},\"whole_free_bytes\":{},\"partial_free_bytes\":{},\"release_bytes\":{},\"lock_us\":{},\"match\":\"{}\"",
            if i == 0 { "" } else { "," },
            a.nr,
            a.nr == 0,
            a.system,
            a.max_system,
            a.aspace,
            a.in_use,
            a.fast_bytes,
            a.fast_count,
            a.top,
            a.resident,
            a.top_resident,
            a.whole_free,
            a.slack,
            a.release,
            a.lock_us,
            a.matched
        );
        if let Some((s, e)) = a.range {
            let _ = write!(o, ",\"range\":[{s},{}]", e - s);
        }
        let _ = write!(o, ",\"heaps\":{}", a.heaps.len());
        o.push_str(",\"sizes\":[");
        for (j, b) in a.bins.iter().enumerate() {
            let kind = if b.fast { "fast" } else if b.unsorted { "unsorted" } else { "bin" };
            let _ = write!(o, "{}[{},{},{},{},\"{kind}\"]", if j == 0 { "" } else { "," }, b.from, b.to, b.total, b.count);
        }
        o.push_str("]}");
    }
    let t_res2 = Instant::now();
    // Every thread heap found: [base, size, mprotect size, resident, arena nr or -1].
    o.push_str("],\"heaps\":[");
    for (j, h) in heaps.iter().enumerate() {
        let nr = mi.arenas.iter().find(|a| a.heaps.iter().any(|x| x.base == h.base)).map_or(-1, |a| a.nr as i64);
        let r = res.bytes(h.base, h.base + h.size);
        let _ = write!(o, "{}[{},{},{},{r},{nr}]", if j == 0 { "" } else { "," }, h.base, h.size, h.mprotect);
    }
    let _ = write!(o, "],\"mmapped_count\":{},\"mmapped_bytes\":{},\"mmapped_blocks\":[", mi.mmap_count, mi.mmap_bytes);
    for (j, &(s, l)) in blocks.iter().enumerate() {
        let r = res.bytes(s, s + l);
        let _ = write!(o, "{}[{s},{l},{r}]", if j == 0 { "" } else { "," });
    }
    resident_us += t_res2.elapsed().as_micros() as u64;
    let _ = write!(
        o,
        "],\"mmapped_found_all\":{complete},\"probes\":{probes},\"whole_free_bytes\":{glibc_whole},\"release_bytes\":{glibc_release},\"heap_size_max\":{HEAP_MAX}}}"
    );

    let release = match allocator {
        Allocator::Glibc => glibc_release,
        Allocator::Jemalloc => {
            o.push(',');
            jemalloc_json(&mut o)
        }
    };
    if pymalloc::state() != page::PyState::NoPython {
        python_json(&mut o, &mut res);
    }
    // SAFETY: looks a name up; CRuby exports ruby_version.
    if !unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"ruby_version".as_ptr()) }.is_null() {
        o.push_str(",\"ruby\":true");
    }
    o.push_str(",\"own\":{");
    let mut first = true;
    for (name, r) in [("side_pool", side), ("worker_stack", stack)] {
        if let Some((s, e)) = r {
            let _ = write!(o, "{}\"{name}\":[{s},{},{}]", if first { "" } else { "," }, e - s, res.bytes(s, e));
            first = false;
        }
    }
    o.push('}');
    match allocator {
        Allocator::Glibc => notes.push(
            "glibc does not record which free pages it already gave back: the prediction counts whole free pages only as far as the arena's resident bytes (mincore) leave room for them".into(),
        ),
        Allocator::Jemalloc => notes.push(
            "the prediction is jemalloc's dirty and muzzy pages; some were never touched (the cache-oblivious page of large blocks, the rest of fresh mappings) and are not resident, so it can overstate by them; glibc's arenas here hold memtrim's own allocations and are not released".into(),
        ),
    }
    let _ = write!(
        o,
        ",\"prediction\":{{\"release_bytes\":{release},\"method\":\"{}\"}}",
        match allocator {
            Allocator::Glibc => "whole free pages of the bins (expected at random alignment) bounded by the arena's resident free bytes, plus the resident trimmable top of the main arena",
            Allocator::Jemalloc => "dirty plus muzzy pages",
        }
    );
    let total_us = t0.elapsed().as_micros() as u64;
    let _ = write!(
        o,
        ",\"cost\":{{\"total_us\":{total_us},\"cpu_us\":{},\"malloc_info_us\":{mi_us},\"malloc_info_and_heaps_us\":{heaps_us},\"max_lock_us\":{},\"max_lock_arena\":{},\"resident_us\":{resident_us},\"mincore_calls\":{},\"probe_us\":{probe_us},\"probes\":{probes}}}",
        clock::thread_cpu_us().saturating_sub(cpu0),
        max_lock.1,
        max_lock.0,
        res.calls
    );
    o.push_str(",\"notes\":[");
    for (i, n) in notes.iter().enumerate() {
        let _ = write!(o, "{}\"{}\"", if i == 0 { "" } else { "," }, n.replace('\\', "\\\\").replace('"', "\\\""));
    }
    o.push_str("]}\n");
    o
}

/// Writes `data` to `path` through `path.tmp` (created 0600 with O_EXCL|O_NOFOLLOW) and a rename.
fn write_file(path: &str, data: &[u8]) -> Result<(), String> {
    let tmp = format!("{path}.tmp");
    let ctmp = CString::new(tmp.clone()).map_err(|_| "bad path".to_string())?;
    let cpath = CString::new(path).map_err(|_| "bad path".to_string())?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid C strings; the fd is closed on every path.
    unsafe {
        let mut fd = libc::open(ctmp.as_ptr(), flags, 0o600);
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST) {
            // Left by a worker that died mid-write (only this process makes this name; in a
            // sticky directory another user's file cannot be unlinked, and the retry fails).
            libc::unlink(ctmp.as_ptr());
            fd = libc::open(ctmp.as_ptr(), flags, 0o600);
        }
        if fd < 0 {
            return Err(format!("{tmp}: {}", std::io::Error::last_os_error()));
        }
        let mut off = 0;
        while off < data.len() {
            let n = libc::write(fd, data[off..].as_ptr() as *const c_void, data.len() - off);
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                libc::unlink(ctmp.as_ptr());
                return Err(format!("{tmp}: {e}"));
            }
            off += n as usize;
        }
        libc::fchmod(fd, 0o600);
        libc::close(fd);
        if libc::rename(ctmp.as_ptr(), cpath.as_ptr()) != 0 {
            let e = std::io::Error::last_os_error();
            libc::unlink(ctmp.as_ptr());
            return Err(format!("{path}: {e}"));
        }
    }
    Ok(())
}
