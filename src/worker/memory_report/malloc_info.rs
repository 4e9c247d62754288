//! glibc's malloc_info(3): captured through an unbuffered stream that timestamps each of
//! glibc's writes, and parsed into per-arena figures.
//!
//! glibc prints an arena's `<heap nr=..><sizes>` before it takes that arena's lock and its next
//! line after releasing it, so the gap between those two writes is how long that arena's lock
//! was waited for and held (`lock_us`). The walk itself cannot be cut short (each lock is held
//! for one walk of that arena's free lists, as for the mallinfo2 the sampler takes anyway).
use core::ffi::{c_char, c_int, c_void};
use std::time::Instant;

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

/// What one malloc_info call printed, and how long it took.
pub struct Captured {
    pub text: String,
    /// The lock time of each arena (µs, in heap order).
    pub locks: Vec<u64>,
    pub us: u64,
}

/// Calls malloc_info; None if the stream could not be made.
pub fn capture() -> Option<Captured> {
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
    Some(Captured { text: String::from_utf8_lossy(&cap.buf).into_owned(), locks, us })
}

/// One entry of an arena's free chunk histogram.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Bin {
    pub from: u64,
    pub to: u64,
    pub total: u64,
    pub count: u64,
    pub fast: bool,
    pub unsorted: bool,
}

/// One arena as malloc_info describes it.
#[derive(Default)]
pub struct Arena {
    pub nr: u32,
    pub bins: Vec<Bin>,
    pub fast_count: u64,
    pub fast_bytes: u64,
    pub rest_count: u64,
    pub rest_bytes: u64,
    pub system: u64,
    pub max_system: u64,
    pub aspace: u64,
    pub subheaps: u64,
    pub lock_us: u64,
    /// The top chunk: "rest" less the bins (it is in none).
    pub top: u64,
    pub in_use: u64,
}

impl Arena {
    /// Bytes and chunks in the bins other than the fast ones.
    pub fn binned(&self) -> (u64, u64) {
        self.bins.iter().filter(|b| !b.fast).fold((0, 0), |(t, n), b| (t + b.total, n + b.count))
    }
}

#[derive(Default)]
pub struct MallocInfo {
    pub arenas: Vec<Arena>,
    pub mmap_count: u64,
    pub mmap_bytes: u64,
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

/// Parses malloc_info's text; `locks` are the arenas' lock times in the same order.
pub fn parse(text: &str, locks: &[u64]) -> MallocInfo {
    let mut mi = MallocInfo::default();
    let mut cur: Option<Arena> = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("<heap nr=") {
            let nr = attr(l, "nr") as u32;
            cur = Some(Arena { nr, lock_us: locks.get(mi.arenas.len()).copied().unwrap_or(0), ..Default::default() });
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
            // "rest" counts the top chunk, which is in no bin.
            a.top = a.rest_bytes.saturating_sub(a.binned().0);
            a.in_use = a.system.saturating_sub(a.fast_bytes + a.rest_bytes);
            mi.arenas.push(a);
        }
    }
    mi
}

#[cfg(test)]
mod tests {
    use super::*;

    // What testdata/malloc_info.c prints on Debian 11, 12 and 13: a main arena with binned and
    // unsorted chunks, a thread arena with fast chunks, and one mmapped block.
    const GLIBC_2_31: &str = include_str!("testdata/malloc_info-2.31.xml");
    const GLIBC_2_36: &str = include_str!("testdata/malloc_info-2.36.xml");
    const GLIBC_2_41: &str = include_str!("testdata/malloc_info-2.41.xml");

    fn bin(from: u64, to: u64, total: u64, count: u64) -> Bin {
        Bin { from, to, total, count, ..Default::default() }
    }

    #[test]
    fn every_supported_glibc() {
        for (glibc, text) in [("2.31", GLIBC_2_31), ("2.36", GLIBC_2_36), ("2.41", GLIBC_2_41)] {
            let mi = parse(text, &[7, 9]);
            assert_eq!(mi.arenas.len(), 2, "glibc {glibc}");
            assert_eq!((mi.arenas[0].lock_us, mi.arenas[1].lock_us), (7, 9), "glibc {glibc}");
            let main = &mi.arenas[0];
            assert_eq!(main.nr, 0);
            assert_eq!(main.bins[..4], [bin(33, 33, 33, 1), bin(1729, 1729, 1729, 1), bin(2017, 2017, 22187, 11), bin(9009, 9009, 99099, 11)], "glibc {glibc}");
            assert!(main.bins[4].unsorted && main.bins[4].total == 4897);
            assert_eq!((main.fast_count, main.fast_bytes, main.system, main.max_system, main.aspace), (0, 0, 274432, 274432, 274432));
            // "rest" is the 5 entries and the top chunk.
            assert_eq!(main.top, 136633 - (33 + 1729 + 22187 + 99099 + 4897), "glibc {glibc}");
            assert_eq!(main.in_use, 274432 - 136633);
            assert_eq!(main.subheaps, 0, "the main arena has no heaps of its own");
            let thread = &mi.arenas[1];
            assert_eq!(thread.nr, 1);
            assert_eq!(thread.subheaps, 1, "glibc {glibc}");
            assert_eq!((thread.fast_count, thread.fast_bytes), (8, 256));
            assert!(
                thread.bins[0].fast && thread.bins[0] == Bin { fast: true, ..bin(17, 32, 256, 8) },
                "glibc {glibc}: the leading entry that makes up the fast total is the fast bin"
            );
            assert!(thread.bins[1..].iter().all(|b| !b.fast));
            assert_eq!(thread.binned(), (thread.bins[1..].iter().map(|b| b.total).sum(), 25));
            assert_eq!(thread.top, thread.rest_bytes - thread.binned().0);
            assert_eq!((mi.mmap_count, mi.mmap_bytes), (1, 4198400), "glibc {glibc}");
        }
        // On 2.31 and 2.36 the thread arena's freed chunks are all still unsorted; 2.41 has
        // sorted one into its bin.
        assert!(parse(GLIBC_2_41, &[]).arenas[1].bins[1] == bin(657, 657, 657, 1));
    }

    #[test]
    fn missing_or_garbled_attributes_read_as_zero() {
        let mi = parse("<heap nr=\"3\">\n<sizes>\n<size from=\"x\" to=\"48\"/>\n</sizes>\n<system type=\"current\" size=\"4096\n</heap>\n", &[]);
        assert_eq!(mi.arenas.len(), 1);
        assert_eq!(mi.arenas[0].nr, 3);
        assert_eq!(mi.arenas[0].bins, [bin(0, 48, 0, 0)]);
        assert_eq!(mi.arenas[0].system, 0);
        assert_eq!(parse("", &[]).arenas.len(), 0);
    }
}
