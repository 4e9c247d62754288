//! The stats the worker publishes in the page, each field declared once (see fields.rs for the
//! form). Fields are only appended, never reordered, resized or removed: a reader that knows
//! fewer reads the prefix it knows (page.rs). The JSON and metric names are contracts.
use crate::fields::Kind::{Check, Counter, Counters, Flag, Gauge, Id, State};
use crate::limit::Metric;

pub const ALLOCATOR_GLIBC: u32 = 0;
pub const ALLOCATOR_JEMALLOC: u32 = 1;

fn allocator_name(code: u64) -> Option<&'static str> {
    ["glibc", "jemalloc"].get(code as usize).copied()
}

fn reason_name(code: u64) -> Option<&'static str> {
    Reason::ALL.get(code as usize).map(|r| r.name())
}

fn limit_metric_name(code: u64) -> Option<&'static str> {
    Metric::from_code(code).map(Metric::name)
}

fn py_state_word(code: u64) -> Option<&'static str> {
    PyState::from_code(code).map(PyState::name)
}

/// The page's `py_state` as a word.
pub fn py_state_name(code: u64) -> &'static str {
    py_state_word(code).unwrap_or("?")
}

fn smaps_read(s: &Stats) -> bool {
    s.smaps_at_ms != 0
}

fn released(s: &Stats) -> bool {
    s.trims != 0
}

fn limit_set(s: &Stats) -> bool {
    s.limit_metric != 0
}

fn is_budget(s: &Stats) -> bool {
    s.limit_metric == Metric::Cgroup as u64
}

fn py_active(s: &Stats) -> bool {
    s.py_state == PyState::Active as u64
}

/// Whether the page holds a walk of CPython's arenas.
fn py_measured(s: &Stats) -> bool {
    py_active(s) && s.py_measured_at_ms != 0
}

fn py_stepped(s: &Stats) -> bool {
    s.py_steps != 0
}

stats_fields! {
    "process" {
        check: u64, None, Check, "Checksum of every later word: a reader that sees it disagree has a torn or corrupt page. First, so that fields can be appended after it.";
        pid: u32, None, Id, "Process id.";
        ppid: u32, None, Id, "Parent process id.";
        uid: u32, None, Id, "User id of the process.";
        allocator: u32, None, State(allocator_name), "Backend that serves the host's allocations: glibc or jemalloc.", metric none;
        start_ticks: u64, None, Id, "Start time of the process in clock ticks after boot (tells a reused pid apart).";
        comm: [u8; 16], None, Id, "Process name (/proc/PID/comm).";
        updated_at_ms: u64, UnixMs, Gauge, "Unix time at which the process last published its page (stops moving when the process hangs).", json "updated_at", metric "memtrim_last_update_timestamp_seconds";
        samples: u64, Count, Counter, "Publications of the page so far.";
    }
    "memory" {
        live_bytes: u64, Bytes, Gauge, "Bytes the process has allocated and not freed (usable sizes), counted by memtrim.";
        peak_live_bytes: u64, Bytes, Gauge, "Highest live bytes seen by the sampler since the process started.";
    }
    "allocations" {
        allocs: u64, Count, Counter, "Allocations made by the process (malloc family calls that returned memory; a moving realloc is a free and an allocation).", metric "memtrim_allocations_total";
        frees: u64, Count, Counter, "Blocks freed by the process.";
    }
    "memory" {
        heap_bytes: u64, Bytes, Gauge, "Bytes the allocator holds from the system for the heap (glibc: arenas plus mmapped blocks).";
        retained_bytes: u64, Bytes, Gauge, "Heap bytes held by the allocator but not used by the process (heap - live): what a release can give back.";
        rss_bytes: u64, Bytes, Gauge, "Resident set size of the process.";
        pss_bytes: u64, Bytes, Gauge, "Proportional set size (shared pages divided among their sharers; sums over forked workers); absent until the first smaps_rollup read.", when smaps_read;
        uss_bytes: u64, Bytes, Gauge, "Unique set size (private pages only: what exiting would free); absent until the first smaps_rollup read.", when smaps_read;
        swap_bytes: u64, Bytes, Gauge, "Bytes of the process swapped out; absent until the first smaps_rollup read.", when smaps_read;
        smaps_at_ms: u64, UnixMs, Gauge, "Unix time of the last smaps_rollup read (PSS, USS, swap).", json "smaps_at", metric "memtrim_smaps_timestamp_seconds", when smaps_read;
    }
    "releases" {
        trims: u64, Count, Counter, "Releases of retained memory so far (by reason: releases_by_reason).", metric none;
        released_bytes: u64, Bytes, Counter, "Bytes given back to the system by memtrim's releases (RSS before minus after).";
        last_trim_us: u64, Us, Gauge, "Duration of the last release; absent before the first.", json "last_trim_ms", metric "memtrim_release_duration_seconds", when released;
        max_trim_us: u64, Us, Gauge, "Longest release since the process started; absent before the first.", json "max_trim_ms", metric "memtrim_release_max_duration_seconds", when released;
        last_trim_at_ms: u64, UnixMs, Gauge, "Unix time of the last release; absent before the first.", json "last_trim_at", metric "memtrim_last_release_timestamp_seconds", when |s| s.trims != 0 && s.last_trim_at_ms != 0;
    }
    "worker" {
        sample_cost_us: u64, Us, Gauge, "What the last sample cost memtrim's worker thread.", json "sample_cost_ms";
        worker_cpu_us: u64, Us, Counter, "CPU time used by memtrim's worker thread in the process.", json "worker_cpu_ms";
        interval_ms: u64, Ms, Gauge, "Sampling period (MEMTRIM_INTERVAL_MS).";
        smaps_interval_ms: u64, Ms, Gauge, "Period of the PSS, USS and swap reads (MEMTRIM_SMAPS_INTERVAL_MS).";
    }
    "releases" {
        releases_by_reason: [u64; REASONS], Count, Counters("reason", &REASON_NAMES), "Releases of retained memory by reason: request (memtrim trim), api (memtrim_trim()), retained, idle, pressure (PSI), limit.", metric "memtrim_releases_total";
        last_reason: u64, None, State(reason_name), "Why the last release ran.", when released;
        last_rss_before: u64, Bytes, Gauge, "Resident set size just before the last release.", when released;
        last_rss_after: u64, Bytes, Gauge, "Resident set size just after the last release.", when released;
    }
    "policy" {
        policy_checks: u64, Count, Counter, "Samples the release policy looked at.";
        skipped_small: u64, Count, Counter, "Samples in which a release trigger held but too little new retained memory had come (MEMTRIM_MIN_RETAINED).";
        skipped_backoff: u64, Count, Counter, "Samples in which a release trigger held but the spacing after the last release, or the back-off, held it back.";
        alloc_rate: u64, PerSec, Gauge, "Allocations plus frees per second over the last interval.";
        idle: u64, None, Flag, "1 while the release policy sees the process as idle.";
        new_retained: u64, Bytes, Gauge, "Retained memory new since the last release (glibc: growth of the heaps' resident bytes that live growth does not explain; jemalloc: its unused dirty and muzzy pages); automatic releases wait for MEMTRIM_MIN_RETAINED of it.";
        min_retained: u64, Bytes, Gauge, "New retained bytes worth a release (MEMTRIM_MIN_RETAINED).";
        frag_threshold_permille: u64, Permille, Gauge, "Share of the heaps' resident bytes that live blocks do not use that triggers a release while busy (MEMTRIM_FRAG_THRESHOLD); absent when off.", json "frag_threshold", metric "memtrim_frag_threshold_ratio", when |s| s.frag_threshold_permille != u64::MAX;
        idle_ms: u64, Ms, Gauge, "Quiet time that triggers a release (MEMTRIM_IDLE_MS).";
        psi_stall_ms: u64, Ms, Gauge, "Memory-pressure stall per second that triggers a release (MEMTRIM_PSI_STALL_MS).";
        psi_armed: u64, None, Flag, "1 when a memory-pressure (PSI) trigger is armed.";
    }
    "limits" {
        limit_metric: u64, None, State(limit_metric_name), "Figure the soft limit (MEMTRIM_LIMIT) bounds: rss, pss, uss or live.", metric none, when limit_set;
        limit_bytes: u64, Bytes, Gauge, "Soft limit (MEMTRIM_LIMIT) in bytes, labelled with the figure it bounds (rss, pss, uss, live); absent when none is set.", when limit_set, label "metric" |s| limit_metric_name(s.limit_metric);
        limit_value: u64, Bytes, Gauge, "The figure the soft limit bounds, at the last sample.", when limit_set;
        limit_strikes: u64, Count, Gauge, "Consecutive samples over the soft limit.";
        limit_violations: u64, Count, Counter, "Samples in which the process was over its soft limit (MEMTRIM_LIMIT).";
        limit_signals: u64, Count, Counter, "Signals (MEMTRIM_LIMIT_SIGNAL) the process sent itself for staying over its soft limit.";
        cgroup_limit_bytes: u64, Bytes, Gauge, "Memory limit of the process's cgroup; absent when there is none.", when |s| s.cgroup_limit_bytes != 0;
        hard_limit: u64, Bytes, Gauge, "MEMTRIM_HARD_LIMIT: allocations that would take live bytes over it fail; absent when none is set.", metric "memtrim_hard_limit_bytes", when |s| s.hard_limit != 0;
        refused_allocs: u64, Count, Counter, "Allocations refused (ENOMEM) by MEMTRIM_HARD_LIMIT.", metric "memtrim_refused_allocations_total";
    }
    "python" {
        py_state: u64, None, State(py_state_word), "What memtrim can do with CPython's small-object allocator (pymalloc): none (no CPython), active, unknown layout (a version memtrim does not know), free-threaded, off (MEMTRIM_PYMALLOC=0), stopped.", metric "memtrim_python_state";
        py_arenas: u64, Count, Gauge, "CPython's object arenas, at the last walk.", metric "memtrim_python_arenas", when py_measured;
        py_arena_bytes: u64, Bytes, Gauge, "Resident bytes of CPython's object arenas (pymalloc), at the last walk; absent in other processes.", metric "memtrim_python_arena_bytes", when py_measured;
        py_used_pools: u64, Count, Gauge, "CPython pools in use, at the last walk.", metric "memtrim_python_used_pools", when py_measured;
        py_empty_pools: u64, Count, Gauge, "Empty CPython pools still resident past their header, at the last walk.", metric "memtrim_python_empty_pools", when py_measured;
        py_empty_bytes: u64, Bytes, Gauge, "Resident bytes of CPython's empty pools past their header: what the next release gives back.", metric "memtrim_python_empty_pool_bytes", when py_measured;
        py_returned_pools: u64, Count, Gauge, "Empty CPython pools already given back, at the last walk.", metric "memtrim_python_returned_pools", when py_measured;
        py_allocated_bytes: u64, Bytes, Gauge, "Bytes in allocated blocks of CPython's pools, at the last walk.", metric "memtrim_python_allocated_bytes", when py_measured;
        py_free_bytes: u64, Bytes, Gauge, "Bytes in free blocks of CPython's used pools, at the last walk.", metric "memtrim_python_free_bytes", when py_measured;
        py_measured_at_ms: u64, UnixMs, Gauge, "Unix time of the last walk of CPython's arenas.", metric "memtrim_python_walk_timestamp_seconds", when py_measured;
        py_released_bytes: u64, Bytes, Counter, "Bytes of CPython's empty pools given back by memtrim.", metric "memtrim_python_released_bytes_total", when py_active;
        py_released_pools: u64, Count, Counter, "CPython pools whose pages memtrim gave back.", metric "memtrim_python_released_pools_total", when py_active;
        py_steps: u64, Count, Counter, "Steps in which memtrim held CPython's interpreter lock to give empty pools back.", metric "memtrim_python_lock_steps_total", when py_active;
        py_last_hold_us: u64, Us, Gauge, "Time the last such step held CPython's interpreter lock.", metric "memtrim_python_lock_hold_last_seconds", when py_stepped;
        py_max_hold_us: u64, Us, Gauge, "Longest time one of memtrim's steps held CPython's interpreter lock.", metric "memtrim_python_lock_hold_max_seconds", when py_stepped;
    }
    "policy" {
        release_skip_reason: u64, None, State(|c| HeldBack::ALL.get(c as usize).map(|h| h.name())), "Why the last sample did not release: none (it released, or nothing was decided yet), no_trigger (no trigger held), min_retained (too little new retained memory), backoff (the spacing after the last release, or the back-off), budget (a busy-time release would overrun MEMTRIM_BUSY_BUDGET), refaults (the pages of busy-time releases came straight back: tried again later), pending (the last release's pages are not looked at again yet).";
    }
    "limits" {
        limit_dry_runs: u64, Count, Counter, "Signals the soft limit would have sent under MEMTRIM_LIMIT_ACTION=log (a dry run: none was sent).";
        limit_deferred: u64, Count, Counter, "Samples in which the process would have signalled itself for its soft limit but deferred: a sibling worker of the same master was signalled less than MEMTRIM_LIMIT_STAGGER_MS before.";
        limit_deferred_until_ms: u64, UnixMs, Gauge, "Unix time from which the last deferral lets the process signal itself; absent when it is not deferring.", json "limit_deferred_until", metric "memtrim_limit_deferred_until_timestamp_seconds", when |s| s.limit_deferred_until_ms != 0;
        budget_rank: u64, Count, Gauge, "Under a cgroup budget (MEMTRIM_LIMIT=cgroup:…, limit_bytes the budget, limit_value the cgroup's usage): this process's place among the cgroup's memtrim processes by retained memory (1: the most, which releases first).", when is_budget;
        budget_members: u64, Count, Gauge, "Under a cgroup budget: the cgroup's memtrim processes that share it (this one included).", when is_budget;
        budget_largest: u64, None, Flag, "Under a cgroup budget: 1 when this process has the largest USS of them, the only one that may be recycled for the budget.", when is_budget;
    }
    "cost" {
        process_cpu_us: u64, Us, Counter, "CPU time of the process (getrusage), memtrim's worker thread excluded: what MEMTRIM_BUSY_BUDGET is a share of.", json "process_cpu_ms";
        minor_faults: u64, Count, Counter, "Minor page faults of the process (ru_minflt).";
        heap_resident_bytes: u64, Bytes, Gauge, "Resident bytes of the allocator's own heaps (glibc: mincore over the main heap and the thread heaps; jemalloc: stats.resident), which neither interpreter arenas nor file pages move.";
        busy_budget_permille: u64, Permille, Gauge, "Share of the process's CPU that busy-time releases, and the faults of the pages that come back, may take (MEMTRIM_BUSY_BUDGET); absent when off.", json "busy_budget", metric "memtrim_busy_budget_ratio", when |s| s.busy_budget_permille != u64::MAX;
        budget_used_permille: u64, Permille, Gauge, "What releases and the faults of their pages took of the process's CPU over the last MEMTRIM_BUDGET_WINDOW_MS.", json "budget_used", metric "memtrim_budget_used_ratio";
        release_cpu_us: u64, Us, Counter, "CPU time memtrim's releases took (worker thread).", json "release_cpu_ms";
        last_release_kind: u64, None, State(release_kind_name), "What the last release did: trim (malloc_trim and the thread arenas' tops), tops (the tops alone), je_decay (jemalloc's due pages), je_purge (all of jemalloc's unused pages).", when released;
        last_release_pages: u64, Count, Gauge, "Heap pages the last release made non-resident (mincore before and after; glibc).", when released;
        last_refault_pages: u64, Count, Gauge, "Of those, pages resident again MEMTRIM_REFAULT_CHECK_MS later; absent until looked at.", when |s| s.last_refault_pages != u64::MAX;
        released_pages: u64, Count, Counter, "Heap pages made non-resident by every release (glibc).";
        refault_pages: u64, Count, Counter, "Released pages found resident again at their check, all releases.";
        fault_cost_ns: u64, Count, Gauge, "CPU cost of one page fault in ns, charged per page that comes back (MEMTRIM_FAULT_COST_NS, or measured at the worker's start).", metric none;
        survival_trim_permille: u64, Permille, Gauge, "Share of the pages busy-time trims released that stayed released until their check (moving average); absent until measured.", json "survival_trim", metric "memtrim_survival_trim_ratio", when |s| s.survival_trim_permille != u64::MAX;
        survival_tops_permille: u64, Permille, Gauge, "The same for busy-time releases of the thread arenas' tops alone.", json "survival_tops", metric "memtrim_survival_tops_ratio", when |s| s.survival_tops_permille != u64::MAX;
    }
    "process" {
        stats_bytes: u64, Bytes, Gauge, "Bytes of stats the process's memtrim publishes (set by the reader from the page's header): fields past them, added by a newer memtrim, are absent.", metric none;
    }
}

fn release_kind_name(code: u64) -> Option<&'static str> {
    ReleaseKind::ALL.get(code as usize).map(|k| k.name())
}

/// What a release did (the page's `last_release_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReleaseKind {
    None,
    /// malloc_trim(0) and the thread arenas' top chunks, with the host diverted.
    Trim,
    /// The thread arenas' top chunks alone: cheap, and used only at the working set's high-water mark.
    Tops,
    JeDecay,
    JePurge,
}

impl ReleaseKind {
    pub const ALL: [ReleaseKind; 5] = [ReleaseKind::None, ReleaseKind::Trim, ReleaseKind::Tops, ReleaseKind::JeDecay, ReleaseKind::JePurge];

    pub fn name(self) -> &'static str {
        ["none", "trim", "tops", "je_decay", "je_purge"][self as usize]
    }
}

/// What held the last sample's release back (the page's `release_skip_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HeldBack {
    Nothing,
    NoTrigger,
    MinRetained,
    Backoff,
    /// The release would take the busy-time budget over MEMTRIM_BUSY_BUDGET.
    Budget,
    /// The pages of this kind of release came straight back; it is tried again later.
    Refaults,
    /// The last release's pages are not looked at again yet (MEMTRIM_REFAULT_CHECK_MS).
    Pending,
}

impl HeldBack {
    const ALL: [HeldBack; 7] =
        [HeldBack::Nothing, HeldBack::NoTrigger, HeldBack::MinRetained, HeldBack::Backoff, HeldBack::Budget, HeldBack::Refaults, HeldBack::Pending];

    pub fn name(self) -> &'static str {
        ["none", "no_trigger", "min_retained", "backoff", "budget", "refaults", "pending"][self as usize]
    }
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
const REASON_NAMES: [&str; REASONS] = ["request", "api", "retained", "idle", "pressure", "limit"];

impl Reason {
    pub const ALL: [Reason; REASONS] = [Reason::Request, Reason::Api, Reason::Retained, Reason::Idle, Reason::Pressure, Reason::Limit];

    pub fn name(self) -> &'static str {
        REASON_NAMES[self as usize]
    }
}

/// Words of `Stats`.
pub const WORDS: usize = core::mem::size_of::<Stats>() / 8;

/// The check word of the stats words `w` (the first is the check word itself): a reader
/// computes it over every word the writer wrote, those it does not know included.
pub fn checksum(w: &[u64]) -> u64 {
    w.iter().skip(1).fold(0x9e37_79b9_7f4a_7c15u64, |a, &x| a.rotate_left(5).wrapping_add(x))
}

impl Stats {
    pub fn words(&self) -> &[u64; WORDS] {
        // SAFETY: Stats is repr(C), made of u64-aligned plain data, with a size multiple of 8.
        unsafe { &*(self as *const Stats as *const [u64; WORDS]) }
    }

    /// The stats whose words are `w`.
    pub fn from_words(w: &[u64; WORDS]) -> Stats {
        // SAFETY: every bit pattern is a valid Stats (integers only); same size, and the
        // read is unaligned-safe.
        unsafe { core::ptr::read_unaligned(w.as_ptr() as *const Stats) }
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: as in `words`; u8 has no alignment.
        unsafe { core::slice::from_raw_parts(self as *const Stats as *const u8, core::mem::size_of::<Stats>()) }
    }

    pub fn checksum(&self) -> u64 {
        checksum(self.words())
    }

    pub fn seal(&mut self) {
        self.check = self.checksum();
    }

    pub fn comm_str(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }

    /// The allocator's name ("unknown" for a code without one).
    pub fn allocator_name(&self) -> &'static str {
        allocator_name(self.allocator as u64).unwrap_or("unknown")
    }

    pub fn frag_ratio(&self) -> f64 {
        if self.heap_bytes == 0 { 0.0 } else { self.retained_bytes as f64 / self.heap_bytes as f64 }
    }
}

const _: () = assert!(core::mem::size_of::<Stats>().is_multiple_of(8));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{Kind, Type};

    #[test]
    fn the_table_covers_the_struct_in_order() {
        let mut at = 0;
        for f in FIELDS {
            assert_eq!(f.offset, at, "{} is not right after the field before it", f.name);
            at += f.ty.size();
        }
        assert_eq!(at, core::mem::size_of::<Stats>(), "the table does not cover Stats");
        assert_eq!(FIELDS[0].name, "check");
        assert!(matches!(FIELDS[0].kind, Kind::Check));
        let names: std::collections::HashSet<_> = FIELDS.iter().map(|f| f.json).collect();
        assert_eq!(names.len(), FIELDS.len(), "two fields share a JSON name");
        for f in FIELDS {
            if let Kind::Counters(_, labels) = f.kind {
                assert_eq!(f.ty, Type::U64s(labels.len()), "{}: one counter per label", f.name);
            }
        }
    }

    #[test]
    fn values_read_through_the_table() {
        let mut s = Stats { pid: 7, live_bytes: 42, py_state: 1, ..Default::default() };
        s.comm[..4].copy_from_slice(b"pyth");
        s.releases_by_reason[Reason::Idle as usize] = 3;
        let f = |n: &str| FIELDS.iter().find(|f| f.name == n).unwrap();
        assert_eq!(f("pid").number(&s), 7);
        assert_eq!(f("live_bytes").number(&s), 42);
        assert_eq!(f("comm").text(&s), "pyth");
        assert_eq!(f("releases_by_reason").numbers(&s), vec![0, 0, 0, 3, 0, 0]);
        assert_eq!(f("py_state").state(&s), Some("active"));
        assert_eq!(f("last_reason").state(&s), None, "no reason before the first release");
        assert_eq!(f("allocator").state(&Stats { allocator: ALLOCATOR_JEMALLOC, ..s }), Some("jemalloc"));
    }
}
