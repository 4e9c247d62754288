//! glibc's large mmapped blocks, found by address: chunk headers (prev_size 0, size a page
//! multiple with IS_MMAPPED that fits the mapping) are looked for first at the start of each
//! private anonymous mapping and right after each block found there (the kernel merges a new
//! mapping into the one above it, so the newest block starts the merged mapping), then, if
//! glibc's count is not reached, at every resident page start of those mappings. The words are
//! read through a pipe (writev from the probed addresses: EFAULT, never a fault, for an address
//! unmapped meanwhile; about 0.25 µs a probe, a quarter of process_vm_readv's). Stops when
//! glibc's count is found, or at [`PROBE_LIMIT`] probes or [`PROBE_BUDGET`].
use crate::sys::glibc::{FLAGS, IS_MMAPPED};
use crate::sys::glibc_heaps::{Vma, peek_words};
use crate::worker::residency::Residency;
use core::ffi::{c_int, c_void};
use std::time::{Duration, Instant};

pub const PROBE_LIMIT: u64 = 200_000;
pub const PROBE_BUDGET: Duration = Duration::from_millis(150);

/// What the probe found: (start, length) of each block.
pub struct Found {
    pub blocks: Vec<(usize, usize)>,
    pub probes: u64,
    /// glibc's count was reached.
    pub complete: bool,
}

/// The length of the glibc mmapped chunk whose first two words (prev_size, size) are `w`, at
/// `at` in a mapping ending at `end`; None if they are not such a header.
fn mmapped_chunk(w: Option<[usize; 2]>, at: usize, end: usize, page: usize) -> Option<usize> {
    let [prev_size, head] = w?;
    let len = head & !FLAGS;
    (prev_size == 0 && head & FLAGS == IS_MMAPPED && len >= page && len.is_multiple_of(page) && at.checked_add(len)? <= end).then_some(len)
}

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

/// Finds glibc's mmapped chunks (glibc counts `want` of them) in the private anonymous mappings
/// outside `skip`: first at the mappings' starts, then at every resident page start (a window
/// of 1024 pages per read); a block found is skipped whole.
pub fn find(maps: &[Vma], skip: &[(usize, usize)], want: u64, page: usize, res: &mut Residency) -> Found {
    const WINDOW: usize = 1024;
    let t0 = Instant::now();
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
            while let Some(len) = mmapped_chunk(w, at, m.end, page) {
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
        return Found { blocks: found, probes, complete: true };
    }
    // Then every resident page of those mappings, outside the blocks already found.
    let mut skip = skip.to_vec();
    skip.extend(found.iter().map(|&(s, l)| (s, s + l)));
    let mut addrs = Vec::with_capacity(WINDOW);
    for m in maps.iter().filter(|m| m.anon_private_rw()) {
        let mut pos = m.start;
        while pos < m.end && (found.len() as u64) < want {
            if probes >= PROBE_LIMIT || t0.elapsed() > PROBE_BUDGET {
                return Found { blocks: found, probes, complete: false };
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
            let Some(window) = res.pages(pos, wend) else {
                pos = wend;
                continue;
            };
            addrs.clear();
            addrs.extend(window.iter().enumerate().filter(|&(_, &b)| b & 1 != 0).map(|(i, _)| pos + i * page));
            peek_pairs(&addrs, &mut words);
            probes += addrs.len() as u64;
            let mut next = pos;
            for (&at, w) in addrs.iter().zip(&words) {
                if at < next {
                    continue;
                }
                if let Some(len) = mmapped_chunk(*w, at, m.end, page) {
                    found.push((at, len));
                    next = at + len;
                }
            }
            pos = next.max(wend);
        }
    }
    let complete = found.len() as u64 >= want;
    Found { blocks: found, probes, complete }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn mmapped_chunk_headers() {
        let at = 0x7f00_0000_0000;
        let end = at + (1 << 20);
        assert_eq!(mmapped_chunk(Some([0, (64 << 10) | IS_MMAPPED]), at, end, PAGE), Some(64 << 10));
        assert_eq!(mmapped_chunk(Some([0, (1 << 20) | IS_MMAPPED]), at, end, PAGE), Some(1 << 20), "a block may fill its mapping");
        assert_eq!(mmapped_chunk(Some([0, (2 << 20) | IS_MMAPPED]), at, end, PAGE), None, "longer than the mapping");
        assert_eq!(mmapped_chunk(Some([16, (64 << 10) | IS_MMAPPED]), at, end, PAGE), None, "memtrim's own mappings and memalign's have a prev_size");
        assert_eq!(mmapped_chunk(Some([0, (64 << 10) | IS_MMAPPED | 1]), at, end, PAGE), None, "PREV_INUSE is never set on mmapped chunks");
        assert_eq!(mmapped_chunk(Some([0, 64 << 10]), at, end, PAGE), None, "not mmapped");
        assert_eq!(mmapped_chunk(Some([0, 5000 | IS_MMAPPED]), at, end, PAGE), None, "not whole pages");
        assert_eq!(mmapped_chunk(Some([0, IS_MMAPPED]), at, end, PAGE), None, "empty");
        assert_eq!(mmapped_chunk(None, at, end, PAGE), None, "unreadable");
        assert_eq!(
            mmapped_chunk(Some([0, (usize::MAX & !FLAGS) | IS_MMAPPED]), usize::MAX - PAGE, usize::MAX, PAGE),
            None,
            "past the end of the address space"
        );
    }

    #[test]
    fn reads_words_and_reports_unmapped_ones() {
        let words: Vec<usize> = vec![0, 0x1234, 7, 8];
        let mut out = Vec::new();
        let a = words.as_ptr() as usize;
        peek_pairs(&[a, a + 16], &mut out);
        assert_eq!(out, [Some([0, 0x1234]), Some([7, 8])]);
        peek_pairs(&[8, a + 16, a], &mut out);
        assert_eq!(out, [None, Some([7, 8]), Some([0, 0x1234])]);
    }
}
