//! CPython's own object memory: its small-object allocator (pymalloc) keeps empty 16 KiB pools
//! resident in arenas that still hold live objects, and never gives their pages back. memtrim
//! measures those arenas and, on every release, returns the empty pools' pages.
//!
//! Pools may be read and written only under the interpreter's lock, between two bytecodes.
//! Rather than take that lock from the worker thread (which the interpreter may end during
//! finalisation, and which could wait behind a fork or an import), the worker asks the
//! interpreter to run a step at its next safe point (Py_AddPendingCall: no thread state and no
//! lock needed); its main thread runs it with the lock held. A step stops after STEP, giving the
//! lock back; the worker queues the next one a little later. Nothing runs while the interpreter
//! is not initialised, is finalising, has subinterpreters, or after anything replaced the arena
//! allocator; nothing is asked of it once it has begun to finalise (python_fence.rs). The step
//! runs when the main thread next takes the interpreter's lock or (3.13, or with other Python
//! threads) between bytecodes: a main thread blocked in C for good, or one that runs Python
//! code without ever giving the lock up (3.9-3.12, alone), runs none, and nothing happens.
use crate::python::api::{self as python_api, Api};
use crate::python::layout::{self as layout, Layout};
use crate::python::pools::{self as pools, Tally, Verdict};
use crate::python::{arenas, fence};
use crate::sys::{clock, stderr};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::*};
use memtrim_common::page::{PyState as State, Stats};
use std::sync::OnceLock;
use std::time::Duration;

/// A step stops after this long, between two pools (a pool's release is one madvise).
const STEP: Duration = Duration::from_micros(1500);

static STATE: AtomicU8 = AtomicU8::new(State::NoPython as u8);
static PY: OnceLock<(Api, Layout)> = OnceLock::new();

const MEASURE: u8 = 1;
const RELEASE: u8 = 2;
static WANTED: AtomicU8 = AtomicU8::new(0);
static QUEUED: AtomicBool = AtomicBool::new(false);
/// A walk stopped after STEP and goes on at the next step.
static MORE: AtomicBool = AtomicBool::new(false);
/// When the interpreter's queue of pending calls was last full: it is shared with the host (and
/// holds 32), so memtrim keeps at most one step in it, and waits BACK_OFF after a refusal.
static REFUSED_AT_MS: AtomicU64 = AtomicU64::new(0);
const BACK_OFF: Duration = Duration::from_secs(1);

/// The walk in progress: its next arena, what it does, what it has seen (main thread only).
struct Walk {
    next: usize,
    /// The pool of arena `next` to go on from.
    pool: usize,
    mode: u8,
    tally: Tally,
    started_ms: u64,
}
static mut WALK: Walk = Walk {
    next: 0,
    pool: 0,
    mode: 0,
    tally: Tally {
        arenas: 0,
        resident: 0,
        used_pools: 0,
        empty_pools: 0,
        empty_bytes: 0,
        returned_pools: 0,
        fresh_pools: 0,
        allocated: 0,
        free_in_used: 0,
        released_pools: 0,
        released_bytes: 0,
    },
    started_ms: 0,
};

/// The last complete walk, and the totals of every release.
static LAST: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];
static MEASURED_AT_MS: AtomicU64 = AtomicU64::new(0);
static RELEASED_BYTES: AtomicU64 = AtomicU64::new(0);
static RELEASED_POOLS: AtomicU64 = AtomicU64::new(0);
static STEPS: AtomicU64 = AtomicU64::new(0);
static LAST_HOLD_US: AtomicU64 = AtomicU64::new(0);
static MAX_HOLD_US: AtomicU64 = AtomicU64::new(0);

/// From the constructor, before the interpreter (if any) has started: wraps its arena
/// allocator when its pools' layout is known and `enabled`.
pub fn init(enabled: bool) {
    let Some(api) = python_api::find() else { return };
    let layout = layout::of(api.version);
    let state = match layout {
        _ if api.free_threaded => State::FreeThreaded,
        None => State::UnknownLayout,
        Some(_) if !enabled => State::Off,
        Some(_) => State::Active,
    };
    if let (State::Active, Some(l)) = (state, layout) {
        // SAFETY: CPython's own functions, called before its main runs.
        unsafe { arenas::wrap(api.get_arena_allocator, api.set_arena_allocator, l.arena_size) };
    }
    if let Some(layout) = layout {
        let _ = PY.set((api, layout));
    }
    STATE.store(state as u8, Release);
}

pub fn state() -> State {
    State::from_code(STATE.load(Acquire) as u64).unwrap_or(State::NoPython)
}

/// Asks for a walk at the interpreter's next safe point; `release` gives back empty pools.
/// Returns at once; the walk's result appears in `snapshot`.
pub fn request(release: bool) {
    if state() != State::Active {
        return;
    }
    WANTED.fetch_or(if release { RELEASE } else { MEASURE }, AcqRel);
    queue();
}

/// A measuring walk when the last one is older than `age`.
pub fn refresh(age: Duration) {
    if clock::unix_ms().saturating_sub(MEASURED_AT_MS.load(Relaxed)) >= age.as_millis() as u64 {
        request(false);
    }
}

fn queue() {
    let Some((api, _)) = PY.get() else { return };
    // SAFETY: reads a flag of the runtime, which exists from the process's start.
    if unsafe { (api.is_initialized)() } == 0 {
        return;
    }
    let now = clock::unix_ms();
    if now.saturating_sub(REFUSED_AT_MS.load(Relaxed)) < BACK_OFF.as_millis() as u64 || QUEUED.swap(true, AcqRel) {
        return;
    }
    let mut added = false;
    // SAFETY: Py_AddPendingCall needs neither a thread state nor the interpreter's lock, only
    // the main interpreter, which the fence keeps alive.
    // SAFETY: as above, and _Py_IsFinalizing reads a flag of the runtime.
    fence::pass(|| unsafe { (api.is_finalizing)() } != 0, || added = unsafe { (api.add_pending_call)(step, core::ptr::null_mut()) } == 0);
    if !added {
        REFUSED_AT_MS.store(now, Relaxed);
        QUEUED.store(false, Release);
    }
}

/// Whether a walk is half done or asked for, and no step is queued: the worker then comes back
/// soon (`resume`). While a step waits for the interpreter, there is nothing to do.
pub fn continuing() -> bool {
    state() == State::Active && !QUEUED.load(Acquire) && (MORE.load(Acquire) || WANTED.load(Acquire) != 0)
}

/// Asks for the next step of a walk, if one is due. From the worker, a while after the last
/// step: a step queued from within a step would run in the same round of pending calls,
/// without giving the lock back in between.
pub fn resume() {
    if continuing() {
        queue();
    }
}

/// Runs in the interpreter's main thread with its lock held. Returns 0 always: anything else
/// would raise an exception in the host's code.
///
/// # Safety
/// Called by the interpreter as a pending call (Py_AddPendingCall), with its lock held.
unsafe extern "C" fn step(_: *mut c_void) -> c_int {
    QUEUED.store(false, Release);
    let Some((api, layout)) = PY.get() else { return 0 };
    // SAFETY: CPython's functions of these types, which take no argument.
    if state() != State::Active || unsafe { (api.is_initialized)() == 0 || (api.is_finalizing)() != 0 } {
        return 0;
    }
    // SAFETY: a pending call runs in the main thread with the lock held, the interpreter
    // initialised and not finalising (just checked).
    unsafe { fence::register() };
    // SAFETY: the main thread owns WALK; pending calls do not nest.
    let walk = unsafe { &mut *core::ptr::addr_of_mut!(WALK) };
    if !arenas::wrapped(api.get_arena_allocator) {
        stop("the interpreter's arena allocator was replaced");
        return 0;
    }
    // SAFETY: CPython's functions of these types; the head is a live interpreter under the lock.
    if !unsafe { (api.interpreter_next)((api.interpreter_head)()) }.is_null() {
        // another interpreter may have an allocator and a lock of its own
        WANTED.store(0, Release);
        MORE.store(false, Release);
        (walk.next, walk.pool) = (0, 0);
        return 0;
    }
    let t0 = std::time::Instant::now();
    if walk.next == 0 {
        walk.mode = WANTED.swap(0, AcqRel);
        walk.tally = Tally::default();
        walk.started_ms = clock::unix_ms();
    }
    let release = walk.mode & RELEASE != 0;
    while let Some(arena) = arenas::get(walk.next) {
        // SAFETY: the arenas list holds blocks of arena_size bytes from the wrapped arena
        // allocator that it has not freed; the only interpreter's lock is held (checked above).
        match unsafe { pools::walk(arena, *layout, release, walk.pool, t0 + STEP, &mut walk.tally) } {
            Verdict::Unmapped => {
                stop("an arena it listed is not mapped");
                return 0;
            }
            Verdict::Partial(pool) => {
                walk.pool = pool;
                break;
            }
            Verdict::Arena | Verdict::NotArena => (walk.next, walk.pool) = (walk.next + 1, 0),
        }
        if t0.elapsed() >= STEP {
            break;
        }
    }
    let hold = t0.elapsed().as_micros() as u64;
    STEPS.fetch_add(1, Relaxed);
    LAST_HOLD_US.store(hold, Relaxed);
    MAX_HOLD_US.fetch_max(hold, Relaxed);
    RELEASED_BYTES.fetch_add(walk.tally.released_bytes, Relaxed);
    RELEASED_POOLS.fetch_add(walk.tally.released_pools, Relaxed);
    (walk.tally.released_bytes, walk.tally.released_pools) = (0, 0);
    let more = arenas::get(walk.next).is_some();
    if !more {
        publish(&walk.tally, walk.started_ms);
        (walk.next, walk.pool) = (0, 0);
    }
    MORE.store(more, Release);
    0
}

fn stop(why: &str) {
    STATE.store(State::Stopped as u8, Release);
    stderr::line(&format!("memtrim: CPython's pools are left alone from now on: {why}"));
}

fn publish(t: &Tally, started_ms: u64) {
    let values = [
        t.arenas,
        t.resident,
        t.used_pools,
        t.empty_pools,
        t.empty_bytes,
        t.returned_pools,
        t.fresh_pools,
        t.allocated,
        t.free_in_used,
        arenas::unlisted() as u64,
    ];
    for (slot, v) in LAST.iter().zip(values) {
        slot.store(v, Relaxed);
    }
    MEASURED_AT_MS.store(started_ms.max(1), Release);
}

/// Everything known of the interpreter's pools, for the page and the report.
pub fn fill(s: &mut Stats) {
    let l = |i: usize| LAST[i].load(Relaxed);
    s.py_state = state() as u64;
    (s.py_arenas, s.py_arena_bytes, s.py_used_pools, s.py_empty_pools, s.py_empty_bytes) = (l(0), l(1), l(2), l(3), l(4));
    (s.py_returned_pools, s.py_allocated_bytes, s.py_free_bytes) = (l(5), l(7), l(8));
    s.py_measured_at_ms = MEASURED_AT_MS.load(Acquire);
    s.py_released_bytes = RELEASED_BYTES.load(Relaxed);
    s.py_released_pools = RELEASED_POOLS.load(Relaxed);
    s.py_steps = STEPS.load(Relaxed);
    s.py_last_hold_us = LAST_HOLD_US.load(Relaxed);
    s.py_max_hold_us = MAX_HOLD_US.load(Relaxed);
}

pub fn pool_size() -> usize {
    PY.get().map_or(0, |(_, l)| l.pool_size)
}

pub fn arena_size() -> usize {
    PY.get().map_or(0, |(_, l)| l.arena_size)
}

/// Pools never carved (or not resident), and arenas the list could not hold, at the last walk.
pub fn fresh_and_unlisted() -> (u64, u64) {
    (LAST[6].load(Relaxed), LAST[9].load(Relaxed))
}

/// Waits up to `within` for a walk that started at or after `since_ms` (unix ms, taken before
/// the request) to end; false if none did (the interpreter's main thread ran no Python code).
pub fn wait_for_walk(since_ms: u64, within: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while state() == State::Active && t0.elapsed() < within {
        if MEASURED_AT_MS.load(Acquire) >= since_ms.max(1) {
            return true;
        }
        resume();
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The child of a fork has the parent's interpreter, arenas and list, and its queue of pending
/// calls: a step the parent had queued runs in the child's main thread too.
pub fn after_fork_in_child() {
    arenas::after_fork_in_child();
    fence::after_fork_in_child();
}
