//! The stats page: one file per process in `MEMTRIM_SHM_DIR/memtrim-EUID/`, written by the library's worker
//! thread (the only writer, under a seqlock) and read by the CLI. Mirrored in include/memtrim.h.
//!
//! Versioned as perf_event_mmap_page is: the header says the compatible version of the layout
//! (`layout_version`) and where the writer's stats are and how long (`stats_offset`,
//! `stats_size`). Stats fields are only appended (stats.rs), so a reader accepts a page of a
//! version it knows whose stats are longer than the ones it knows, and reads that prefix (the
//! check word covers every word the writer wrote); or shorter (an older writer), and reads the
//! fields that are there, the others absent. The control block (requests from
//! outside, at fixed offsets) grows into its reserved words; once they are used up, a writer
//! moves the stats further (`stats_offset`), which readers of this version follow. Only a
//! change that readers cannot follow (a field reordered or resized) takes a new version.
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::*, fence};

pub use crate::stats::*;

pub const MAGIC: u64 = u64::from_le_bytes(*b"MEMTRIM\0");
pub const LAYOUT_VERSION: u32 = 2;
/// The file's length: the header, the control block, then the stats and room for them to grow.
pub const FILE_BYTES: usize = 4096;
/// Where this writer puts the stats: after the header (32 bytes) and the control block.
pub const STATS_OFFSET: usize = 96;
pub const FILE_PREFIX: &str = "memtrim.";
/// The stats of the first writer of this layout version: a reader takes a page whose stats are
/// at least this long, the fields past the writer's absent (`stats_bytes`).
pub const FIRST_STATS_BYTES: usize = 576;

/// `memtrim.PID.START`: the start time (clock ticks after boot) tells a reused pid apart.
pub fn file_name(pid: u32, start_ticks: u64) -> String {
    format!("{FILE_PREFIX}{pid}.{start_ticks}")
}

/// `stagger.PID.START`, beside the pages: the claim file of the workers of the master (PID,
/// START), which holds the unix time (ms, decimal) of the last limit signal among them.
pub const STAGGER_PREFIX: &str = "stagger.";

pub fn stagger_name(pid: u32, start_ticks: u64) -> String {
    format!("{STAGGER_PREFIX}{pid}.{start_ticks}")
}

/// `budget.HASH`: the claim file of the processes of one cgroup (HASH: FNV-1a of the text of
/// their /proc/PID/cgroup), which holds the unix time (ms) of the last budget signal among them.
pub const BUDGET_PREFIX: &str = "budget.";

pub fn budget_name(membership: &str) -> String {
    let h = membership.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{BUDGET_PREFIX}{h:016x}")
}

/// Whether `name` is a budget claim file's, spelled as `budget_name` spells it.
pub fn is_budget_name(name: &str) -> bool {
    name.strip_prefix(BUDGET_PREFIX).is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

/// (pid, start ticks) of the master a claim file is named for.
pub fn parse_stagger_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_prefix(STAGGER_PREFIX)?.split_once('.')?;
    Some((number(pid)?, number(start)?))
}

/// The per-user directory of the pages of `euid`: `memtrim-EUID` (0700, so that no other user
/// can plant a page's predictable name where the library will create it).
pub const DIR_PREFIX: &str = "memtrim-";

pub fn dir_name(euid: u32) -> String {
    format!("{DIR_PREFIX}{euid}")
}

/// The uid a per-user directory's name says. Only the name `dir_name` gives is one: other
/// spellings of the number (leading zeros) would let a user hold several directories of their
/// uid, and list one before another user's.
pub fn parse_dir_name(name: &str) -> Option<u32> {
    number(name.strip_prefix(DIR_PREFIX)?)
}

/// (pid, start ticks) from a page file name, spelled as `file_name` spells it.
pub fn parse_file_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_prefix(FILE_PREFIX)?.split_once('.')?;
    Some((number(pid)?, number(start)?))
}

/// A decimal number as `format!` writes it: digits only, no sign, no leading zero.
fn number<T: core::str::FromStr>(s: &str) -> Option<T> {
    let canonical = s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[repr(C)]
pub struct Page {
    pub magic: u64,
    /// The compatible version of the layout ([`LAYOUT_VERSION`]).
    pub layout_version: u32,
    /// The bytes of the file the writer's layout uses: `stats_offset + stats_size`.
    pub header_size: u32,
    /// Odd while the worker writes the stats.
    pub seq: AtomicU64,
    /// Where the writer's stats start, and their length (its `size_of::<Stats>()`).
    pub stats_offset: u32,
    pub stats_size: u32,
    pub control: Control,
    /// The stats (at `STATS_OFFSET` in this writer's pages) and room for more fields, as words:
    /// readers load them one atomic word at a time, as the worker stores them.
    pub stats: [AtomicU64; (FILE_BYTES - STATS_OFFSET) / 8],
}

/// Requests from outside. Not under the seqlock: each word is atomic on its own, and futex
/// waits use the two counters.
#[repr(C)]
pub struct Control {
    /// Incremented by `memtrim trim`; the worker waits on it.
    pub trim_requested: AtomicU32,
    /// Set by the worker to the request it has served; `memtrim trim` waits on it.
    pub trim_served: AtomicU32,
    /// The same pair for `memtrim report`: the worker writes the report file, then serves.
    pub report_requested: AtomicU32,
    pub report_served: AtomicU32,
    /// Zero: room for requests to come. A reader may use a word here only in a page whose
    /// `stats_offset` is past it and whose writer says it knows it.
    pub reserved: [AtomicU32; 12],
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    NotAPage,
    OtherLayout(u32),
    /// The header places the stats outside the file, or makes them shorter than this reader's.
    BadSize {
        offset: u32,
        size: u32,
    },
    /// The seqlock never settled, or the check word disagrees.
    Torn,
}

impl Page {
    /// A new page's header, for the writer.
    pub fn init(&mut self) {
        self.magic = MAGIC;
        self.layout_version = LAYOUT_VERSION;
        self.stats_offset = STATS_OFFSET as u32;
        self.stats_size = core::mem::size_of::<Stats>() as u32;
        self.header_size = self.stats_offset + self.stats_size;
    }

    /// Publishes `s` (sealed here). Only one thread may write a page.
    pub fn publish(&self, mut s: Stats) {
        s.stats_bytes = core::mem::size_of::<Stats>() as u64;
        s.seal();
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        for (w, v) in self.stats.iter().zip(s.words()) {
            w.store(*v, Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Release);
    }

    /// The words of the writer's stats, if the header places them inside the page and makes
    /// them at least as long as this reader's.
    fn writer_stats(&self) -> Result<&[AtomicU64], ReadError> {
        let (offset, size) = (self.stats_offset, self.stats_size);
        let (at, len) = (offset as usize, size as usize);
        let fits = at >= STATS_OFFSET && at % 8 == 0 && len % 8 == 0 && len >= FIRST_STATS_BYTES && at.saturating_add(len) <= FILE_BYTES;
        if !fits {
            return Err(ReadError::BadSize { offset, size });
        }
        let first = (at - STATS_OFFSET) / 8;
        self.stats.get(first..first + len / 8).ok_or(ReadError::BadSize { offset, size })
    }

    /// A consistent copy of the stats this reader knows, or why there is none.
    pub fn read(&self) -> Result<Stats, ReadError> {
        if self.magic != MAGIC {
            return Err(ReadError::NotAPage);
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(ReadError::OtherLayout(self.layout_version));
        }
        let words = self.writer_stats()?;
        let mut copy = [0u64; (FILE_BYTES - STATS_OFFSET) / 8];
        let copy = &mut copy[..words.len()];
        for _ in 0..1000 {
            let s1 = self.seq.load(Acquire);
            if s1 & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            for (c, w) in copy.iter_mut().zip(words) {
                *c = w.load(Relaxed);
            }
            fence(Acquire);
            if self.seq.load(Relaxed) == s1 {
                if copy[0] != checksum(copy) {
                    return Err(ReadError::Torn);
                }
                let mut known = [0u64; WORDS];
                known.iter_mut().zip(copy.iter()).for_each(|(k, c)| *k = *c);
                let mut s = Stats::from_words(&known);
                s.stats_bytes = (copy.len() * 8) as u64;
                return Ok(s);
            }
        }
        Err(ReadError::Torn)
    }
}

const _: () = assert!(core::mem::size_of::<Page>() == FILE_BYTES);
const _: () = assert!(core::mem::offset_of!(Page, stats) == STATS_OFFSET);
const _: () = assert!(STATS_OFFSET + core::mem::size_of::<Stats>() <= FILE_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42, 123456)), Some((42, 123456)));
        assert_eq!(parse_file_name("memtrim.x.1"), None);
        assert_eq!(parse_file_name("other.1.2"), None);
        assert_eq!(parse_dir_name(&dir_name(1000)), Some(1000));
        assert_eq!(parse_dir_name("memtrim-+1"), None);
        assert_eq!(parse_dir_name("memtrim.1.2"), None);
        assert_eq!(parse_dir_name(&dir_name(0)), Some(0));
        assert_eq!(parse_dir_name("memtrim-01000"), None);
        assert_eq!(parse_dir_name("memtrim-"), None);
        assert_eq!(parse_file_name("memtrim.042.7"), None);
        assert_eq!(parse_file_name("memtrim.+42.7"), None);
        assert_eq!(parse_file_name("memtrim.42.+7"), None);
        assert_eq!(parse_file_name("memtrim.42.07"), None);
        assert_eq!(parse_file_name(&file_name(42, 0)), Some((42, 0)));
    }

    fn page(s: Stats) -> Box<Page> {
        // SAFETY: integers and atomics, valid all-zero: what a fresh mapping holds.
        let mut page: Box<Page> = unsafe { Box::new(core::mem::zeroed()) };
        page.init();
        page.publish(s);
        page
    }

    const LIVE: usize = core::mem::offset_of!(Stats, live_bytes) / 8;

    #[test]
    fn publish_then_read() {
        let mut page = page(Stats { pid: 7, live_bytes: 1 << 20, ..Default::default() });
        let got = page.read().unwrap();
        assert_eq!(got.pid, 7);
        assert_eq!(got.live_bytes, 1 << 20);
        page.stats[LIVE].fetch_add(1, Relaxed); // corruption outside the seqlock
        assert_eq!(page.read(), Err(ReadError::Torn));
        page.layout_version = 99;
        assert_eq!(page.read(), Err(ReadError::OtherLayout(99)));
    }

    /// A writer that knows fields this reader does not: its stats are longer, the compatible
    /// version the same. The reader reads the prefix it knows.
    #[test]
    fn a_page_with_more_fields_of_the_same_version_is_read() {
        let mut page = page(Stats { pid: 7, live_bytes: 1 << 20, py_max_hold_us: 9, ..Default::default() });
        let extra = [0x1111u64, 0x2222];
        let mut words: Vec<u64> = page.stats[..WORDS].iter().map(|w| w.load(Relaxed)).chain(extra).collect();
        words[0] = checksum(&words);
        for (w, v) in page.stats.iter().zip(&words) {
            w.store(*v, Relaxed);
        }
        page.stats_size += 16;
        page.header_size += 16;
        let got = page.read().expect("a longer page of the same version");
        assert_eq!((got.pid, got.live_bytes, got.py_max_hold_us), (7, 1 << 20, 9));
        // the check word covers the words this reader does not know
        page.stats[WORDS + 1].fetch_add(1, Relaxed);
        assert_eq!(page.read(), Err(ReadError::Torn));
    }

    /// A writer of the same version that knows fewer fields (an older memtrim still running
    /// after an upgrade): the reader reads what it wrote, and the fields past it are absent.
    #[test]
    fn a_page_with_fewer_fields_of_the_same_version_is_read() {
        let mut page = page(Stats { pid: 7, live_bytes: 1 << 20, budget_used_permille: 5, ..Default::default() });
        let short = FIRST_STATS_BYTES / 8;
        let mut words: Vec<u64> = page.stats[..short].iter().map(|w| w.load(Relaxed)).collect();
        words[0] = checksum(&words);
        page.stats[0].store(words[0], Relaxed);
        page.stats_size = FIRST_STATS_BYTES as u32;
        let got = page.read().expect("a shorter page of the same version");
        assert_eq!((got.pid, got.live_bytes, got.stats_bytes), (7, 1 << 20, FIRST_STATS_BYTES as u64));
        let field = |name: &str| crate::stats::FIELDS.iter().find(|f| f.name == name).unwrap();
        assert!(field("live_bytes").applies(&got));
        assert!(!field("budget_used_permille").applies(&got), "a field the writer did not have is absent");
        assert_eq!(got.budget_used_permille, 0);
    }

    /// Stats the header places outside the page, shorter than the first writer's of this
    /// version, or off a word boundary are not read.
    #[test]
    fn bad_sizes_are_refused() {
        let known = core::mem::size_of::<Stats>() as u32;
        for (offset, size) in [
            (96, FIRST_STATS_BYTES as u32 - 8),
            (96, known + 4),
            (100, known),
            (0, known),
            (8, known),
            (FILE_BYTES as u32 - 8, known),
            (96, u32::MAX),
            (u32::MAX - 7, 16),
        ] {
            let mut p = page(Stats { pid: 7, ..Default::default() });
            (p.stats_offset, p.stats_size) = (offset, size);
            assert_eq!(p.read(), Err(ReadError::BadSize { offset, size }), "offset {offset}, size {size}");
        }
        // stats moved further (a control block that grew) are followed
        let p = page(Stats { pid: 7, ..Default::default() });
        let moved = page(Stats::default());
        for (i, w) in p.stats.iter().take(WORDS).enumerate() {
            moved.stats[i + 2].store(w.load(Relaxed), Relaxed);
        }
        let mut moved = moved;
        moved.stats_offset += 16;
        assert_eq!(moved.read().map(|s| s.pid), Ok(7));
    }
}
