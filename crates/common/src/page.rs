//! The stats page: one file per process in `MEMTRIM_SHM_DIR/memtrim-EUID/`, written by the library's worker
//! thread (the only writer, under a seqlock) and read by the CLI. Mirrored in include/memtrim.h;
//! fields are only appended, and a reader rejects another layout version.
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

pub const MAGIC: u64 = u64::from_le_bytes(*b"MEMTRIM\0");
pub const LAYOUT_VERSION: u32 = 1;
/// The file's length; the struct is smaller and the rest is reserved.
pub const FILE_BYTES: usize = 4096;
pub const FILE_PREFIX: &str = "memtrim.";

/// `memtrim.PID.START`: the start time (clock ticks after boot) tells a reused pid apart.
pub fn file_name(pid: u32, start_ticks: u64) -> String {
    format!("{FILE_PREFIX}{pid}.{start_ticks}")
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
    pub layout_version: u32,
    /// size_of::<Page>() of the writer
    pub header_size: u32,
    /// Odd while the worker writes `stats`.
    pub seq: AtomicU64,
    pub control: Control,
    pub stats: Stats,
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
}

pub const ALLOCATOR_GLIBC: u32 = 0;
pub const ALLOCATOR_JEMALLOC: u32 = 1;

/// Everything the worker publishes. All words are u64 or pairs of u32 so that the check word
/// can be computed over the struct as u64s.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Checksum of every later word of this struct: a reader that sees it disagree has a torn
    /// or corrupt page. First, so that fields can be appended after it.
    pub check: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub allocator: u32,
    pub start_ticks: u64,
    pub comm: [u8; 16],
    /// Unix time of the last publication, milliseconds.
    pub updated_at_ms: u64,
    pub samples: u64,
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
    /// What the allocator holds from the system for the heap (glibc: arenas plus mmapped blocks).
    pub heap_bytes: u64,
    /// heap_bytes - live_bytes: held by the allocator, not used by the host.
    pub retained_bytes: u64,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub uss_bytes: u64,
    pub swap_bytes: u64,
    /// Unix ms of the last smaps_rollup read (PSS, USS, swap).
    pub smaps_at_ms: u64,
    pub trims: u64,
    pub released_bytes: u64,
    pub last_trim_us: u64,
    pub max_trim_us: u64,
    pub last_trim_at_ms: u64,
    /// What the last sample cost the worker, and the worker's CPU time so far.
    pub sample_cost_us: u64,
    pub worker_cpu_us: u64,
    pub interval_ms: u64,
    pub smaps_interval_ms: u64,
    /// Releases per reason, indexed by [`Reason`].
    pub releases_by_reason: [u64; REASONS],
    pub last_reason: u64,
    pub last_rss_before: u64,
    pub last_rss_after: u64,
    /// Release policy: samples it looked at, and those where a trigger held but was held back
    /// because too little was retained beyond the last release's floor, or by the back-off.
    pub policy_checks: u64,
    pub skipped_small: u64,
    pub skipped_backoff: u64,
    /// Allocations plus frees per second over the last interval.
    pub alloc_rate: u64,
    /// 1 while the policy sees the process as idle.
    pub idle: u64,
    /// Retained memory new since the last release (resident growth that live growth does not
    /// explain); automatic releases wait for MEMTRIM_MIN_RETAINED of it.
    pub new_retained: u64,
    pub min_retained: u64,
    /// MEMTRIM_FRAG_THRESHOLD in thousandths; u64::MAX when off.
    pub frag_threshold_permille: u64,
    pub idle_ms: u64,
    pub psi_stall_ms: u64,
    /// 1 when a PSI trigger is armed.
    pub psi_armed: u64,
    /// Soft limit (MEMTRIM_LIMIT): the metric (limit::Metric code, 0 none), its bound in bytes,
    /// the last value measured, consecutive samples over it, samples over it in all, signals sent.
    pub limit_metric: u64,
    pub limit_bytes: u64,
    pub limit_value: u64,
    pub limit_strikes: u64,
    pub limit_violations: u64,
    pub limit_signals: u64,
    /// The memory limit of the process's cgroup (0: none found).
    pub cgroup_limit_bytes: u64,
    /// MEMTRIM_HARD_LIMIT (0: none) and the allocations it refused.
    pub hard_limit: u64,
    pub refused_allocs: u64,
    /// CPython's small-object allocator: what memtrim can do with it (0 no CPython, 1 active,
    /// 2 a version whose layout memtrim does not know, 3 free-threaded, 4 MEMTRIM_PYMALLOC=0,
    /// 5 stopped), and from the last walk of its arenas (at py_measured_at_ms): arenas, their
    /// resident bytes, pools in use, empty pools still resident past their header and those
    /// bytes (what a release gives back), empty pools given back, bytes in allocated blocks and
    /// in free blocks of used pools.
    pub py_state: u64,
    pub py_arenas: u64,
    pub py_arena_bytes: u64,
    pub py_used_pools: u64,
    pub py_empty_pools: u64,
    pub py_empty_bytes: u64,
    pub py_returned_pools: u64,
    pub py_allocated_bytes: u64,
    pub py_free_bytes: u64,
    pub py_measured_at_ms: u64,
    /// Pages of empty pools given back so far, the interpreter-lock steps that did it, and the
    /// last and longest time a step held the lock.
    pub py_released_bytes: u64,
    pub py_released_pools: u64,
    pub py_steps: u64,
    pub py_last_hold_us: u64,
    pub py_max_hold_us: u64,
}

/// What memtrim can do with the process's CPython (the page's `py_state`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PyState {
    NoPython = 0,
    Active = 1,
    /// A version whose pool layout memtrim does not know.
    UnknownLayout = 2,
    /// Objects live in mimalloc's heaps (3.13t): no pools.
    FreeThreaded = 3,
    /// MEMTRIM_PYMALLOC=0.
    Off = 4,
    /// The arena allocator was replaced, or an arena on the list was not mapped.
    Stopped = 5,
}

impl PyState {
    const ALL: [PyState; 6] = [PyState::NoPython, PyState::Active, PyState::UnknownLayout, PyState::FreeThreaded, PyState::Off, PyState::Stopped];

    pub fn from_code(code: u64) -> Option<PyState> {
        PyState::ALL.into_iter().find(|s| *s as u64 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            PyState::NoPython => "none",
            PyState::Active => "active",
            PyState::UnknownLayout => "unknown layout",
            PyState::FreeThreaded => "free-threaded",
            PyState::Off => "off",
            PyState::Stopped => "stopped",
        }
    }
}

/// The page's `py_state` as a word.
pub fn py_state_name(code: u64) -> &'static str {
    PyState::from_code(code).map_or("?", PyState::name)
}

/// Why a release ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// `memtrim trim` from outside
    Request,
    /// `memtrim_trim()` in the process
    Api,
    /// retained bytes over MEMTRIM_MIN_RETAINED and fragmentation over MEMTRIM_FRAG_THRESHOLD
    Retained,
    /// the allocation rate fell for MEMTRIM_IDLE_MS
    Idle,
    /// memory pressure (PSI)
    Pressure,
    /// a memory limit was crossed
    Limit,
}

pub const REASONS: usize = 6;

impl Reason {
    pub const ALL: [Reason; REASONS] = [Reason::Request, Reason::Api, Reason::Retained, Reason::Idle, Reason::Pressure, Reason::Limit];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Request => "request",
            Reason::Api => "api",
            Reason::Retained => "retained",
            Reason::Idle => "idle",
            Reason::Pressure => "pressure",
            Reason::Limit => "limit",
        }
    }
}

const WORDS: usize = core::mem::size_of::<Stats>() / 8;

impl Stats {
    fn words(&self) -> &[u64; WORDS] {
        // SAFETY: Stats is repr(C), made of u64-aligned plain data, with a size multiple of 8.
        unsafe { &*(self as *const Stats as *const [u64; WORDS]) }
    }

    pub fn checksum(&self) -> u64 {
        let w = self.words();
        w[1..].iter().fold(0x9e37_79b9_7f4a_7c15u64, |a, &x| a.rotate_left(5).wrapping_add(x))
    }

    pub fn seal(&mut self) {
        self.check = self.checksum();
    }

    pub fn comm_str(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    pub fn frag_ratio(&self) -> f64 {
        if self.heap_bytes == 0 { 0.0 } else { self.retained_bytes as f64 / self.heap_bytes as f64 }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    NotAPage,
    OtherLayout(u32),
    /// The seqlock never settled, or the check word disagrees.
    Torn,
}

impl Page {
    /// A new page's header, for the writer.
    pub fn init(&mut self) {
        self.magic = MAGIC;
        self.layout_version = LAYOUT_VERSION;
        self.header_size = core::mem::size_of::<Page>() as u32;
    }

    /// Publishes `s` (sealed here). Only one thread may write a page.
    pub fn publish(&mut self, mut s: Stats) {
        s.seal();
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        // SAFETY: the target is valid; readers detect a concurrent copy through the seqlock.
        unsafe { core::ptr::write_volatile(&mut self.stats, s) };
        self.seq.store(seq.wrapping_add(2), Release);
    }

    /// A consistent copy of the stats, or why there is none.
    pub fn read(&self) -> Result<Stats, ReadError> {
        if self.magic != MAGIC {
            return Err(ReadError::NotAPage);
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(ReadError::OtherLayout(self.layout_version));
        }
        for _ in 0..1000 {
            let s1 = self.seq.load(Acquire);
            if s1 & 1 == 1 {
                std::thread::yield_now();
                continue;
            }
            // SAFETY: valid memory; a torn copy is discarded below.
            let copy = unsafe { core::ptr::read_volatile(&self.stats) };
            fence(Acquire);
            if self.seq.load(Relaxed) == s1 {
                return if copy.check == copy.checksum() { Ok(copy) } else { Err(ReadError::Torn) };
            }
        }
        Err(ReadError::Torn)
    }
}

const _: () = assert!(core::mem::size_of::<Page>() <= FILE_BYTES);
const _: () = assert!(core::mem::size_of::<Stats>() % 8 == 0);

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

    #[test]
    fn publish_then_read() {
        let mut page: Box<Page> = unsafe { Box::new(core::mem::zeroed()) };
        page.init();
        let s = Stats { pid: 7, live_bytes: 1 << 20, ..Default::default() };
        page.publish(s);
        let got = page.read().unwrap();
        assert_eq!(got.pid, 7);
        assert_eq!(got.live_bytes, 1 << 20);
        page.stats.live_bytes += 1; // corruption outside the seqlock
        assert_eq!(page.read(), Err(ReadError::Torn));
        page.layout_version = 99;
        assert_eq!(page.read(), Err(ReadError::OtherLayout(99)));
    }
}
