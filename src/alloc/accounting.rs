//! Live-byte accounting. Each thread owns a slot (a cache line of plain counters that only it
//! writes), found through its initial-exec TLS word; a reader sums the slots. A slot outlives its
//! thread: the next thread to claim it adds to the same counters, so sums never lose a byte.
//! Threads without a slot (before initialisation, while claiming, after their exit hook, when
//! all slots are taken) count exactly, with atomic read-modify-writes, in the shared slot.
//! Under MEMTRIM_HARD_LIMIT every thread counts in the shared slot, where each allocation is
//! checked against the limit: slower, and opt-in.
//! On the jemalloc backend a slot's bytes come from jemalloc's own per-thread counters, which it
//! keeps on every call anyway: the hot path then counts blocks only, and never asks a block's size.
use crate::alloc::lifecycle::{State, state};
use crate::alloc::tls::{self, OFF, SHARED_WORD, UNCLAIMED};
use crate::sys::{glibc, jemalloc_ctl};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

#[repr(C, align(64))]
pub struct Slot {
    /// Sum of `glibc::counted_size` over the blocks this slot counted in, less those it counted out.
    /// Where the slot borrows jemalloc's counters, their current difference is added on reading.
    bytes: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    owned: AtomicBool,
    /// jemalloc's allocated and deallocated byte counters of the owning thread, in that thread's
    /// TLS (null: the slot counts its own bytes). Touched only under `lock`, which the thread
    /// takes to fold them into `bytes` before it exits and its TLS goes away.
    borrowed: [AtomicPtr<u64>; 2],
    lock: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            bytes: AtomicU64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            owned: AtomicBool::new(false),
            borrowed: [const { AtomicPtr::new(core::ptr::null_mut()) }; 2],
            lock: AtomicBool::new(false),
        }
    }
}

const NSLOTS: usize = 1024;
static SLOTS: [Slot; NSLOTS] = [const { Slot::new() }; NSLOTS];
/// Slots ever claimed: readers sum `SLOTS[..USED]`.
static USED: AtomicUsize = AtomicUsize::new(0);
static SHARED: Slot = Slot::new();
static PEAK: AtomicU64 = AtomicU64::new(0);
/// MEMTRIM_HARD_LIMIT in bytes (0: none), and the allocations it refused.
static HARD_LIMIT: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static mut EXIT_KEY: libc::pthread_key_t = 0;
/// Whether the exit key exists; without it every thread counts in SHARED.
static SLOTS_USABLE: AtomicBool = AtomicBool::new(false);
/// Slots borrow jemalloc's per-thread counters (the jemalloc backend serves the host).
static BORROW: AtomicBool = AtomicBool::new(false);

/// [`fast_slot`] gives the slots of TLS words above this: OFF normally, everything closed
/// (usize::MAX) while a release diverts the host, so that one compare serves both checks.
static FAST_FLOOR: AtomicUsize = AtomicUsize::new(OFF);

/// This thread's slot when the fast path is open to it; otherwise the caller takes its slow
/// path, which counts through [`on_alloc`] and friends and knows about diversion.
#[inline(always)]
pub fn fast_slot() -> Option<&'static Slot> {
    let w = tls::get();
    // SAFETY: words above OFF are addresses of slots in SLOTS, owned by this thread.
    (w > FAST_FLOOR.load(Relaxed)).then(|| unsafe { &*(w as *const Slot) })
}

/// Closes the fast path of [`fast_slot`] to every thread, or opens it again.
pub fn set_fast_path(open: bool) {
    FAST_FLOOR.store(if open { OFF } else { usize::MAX }, SeqCst);
}

/// Changes a counter of a slot only this thread writes: no lock prefix on the hot path. On
/// x86_64 one instruction on memory, which a signal handler on the same thread cannot split (its
/// own counting would be lost between a load and a store); the compiler may fold a load and a
/// store into one, but only asm guarantees it. Elsewhere a load and a store.
macro_rules! bump {
    (@ $slot:expr, $field:ident, $asm:literal, $op:ident, $v:expr, $($operand:tt)*) => {{
        let s: &Slot = $slot;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an aligned counter of a slot that only this thread writes; others only read it.
        unsafe {
            core::arch::asm!($asm, s = in(reg) s, o = const core::mem::offset_of!(Slot, $field), $($operand)* options(nostack));
        }
        #[cfg(not(target_arch = "x86_64"))]
        s.$field.store(s.$field.load(Relaxed).$op($v), Relaxed);
    }};
    ($slot:expr, $field:ident += 1) => {
        bump!(@ $slot, $field, "inc qword ptr [{s} + {o}]", wrapping_add, 1u64, )
    };
    ($slot:expr, $field:ident += $v:expr) => {
        bump!(@ $slot, $field, "add qword ptr [{s} + {o}], {v}", wrapping_add, $v, v = in(reg) $v,)
    };
    ($slot:expr, $field:ident -= $v:expr) => {
        bump!(@ $slot, $field, "sub qword ptr [{s} + {o}], {v}", wrapping_sub, $v, v = in(reg) $v,)
    };
}

impl Slot {
    #[inline(always)]
    pub fn count_alloc(&self, bytes: usize) {
        bump!(self, bytes += bytes as u64);
        bump!(self, allocs += 1);
    }

    #[inline(always)]
    pub fn count_free(&self, bytes: usize) {
        bump!(self, bytes -= bytes as u64);
        bump!(self, frees += 1);
    }
}

/// This thread's slot, whichever path is open: for a backend whose slots borrow jemalloc's
/// counters, which must never count bytes of their own.
#[inline(always)]
pub fn slot() -> Option<&'static Slot> {
    let w = tls::get();
    // SAFETY: as in fast_slot.
    (w > OFF).then(|| unsafe { &*(w as *const Slot) })
}

/// The block counts of a slot whose bytes jemalloc counts.
impl Slot {
    #[inline(always)]
    pub fn tally_alloc(&self) {
        bump!(self, allocs += 1);
    }

    #[inline(always)]
    pub fn tally_free(&self) {
        bump!(self, frees += 1);
    }

    #[inline(always)]
    pub fn tally_move(&self) {
        bump!(self, allocs += 1);
        bump!(self, frees += 1);
    }
}

/// Counts an allocation; false when the hard limit refuses it (the caller frees the block).
#[inline(always)]
pub fn on_alloc(bytes: usize) -> bool {
    let w = tls::get();
    if w > OFF {
        // SAFETY: words above OFF are addresses of slots in SLOTS, owned by this thread.
        unsafe { &*(w as *const Slot) }.count_alloc(bytes);
        true
    } else {
        slow(w, bytes as u64, 1, 0)
    }
}

/// Counts a free if this thread has a slot; otherwise the caller calls [`on_free_slow`] (split so
/// that `free` can end in a tail call).
#[inline(always)]
pub fn on_free(bytes: usize) -> bool {
    let w = tls::get();
    if w > OFF {
        // SAFETY: as in on_alloc.
        unsafe { &*(w as *const Slot) }.count_free(bytes);
        true
    } else {
        false
    }
}

#[inline(always)]
pub fn on_free_slow(bytes: usize) {
    slow(tls::get(), (bytes as u64).wrapping_neg(), 0, 1);
}

/// A block replaced by another (realloc): one free and one allocation.
#[inline(always)]
pub fn on_move(old: usize, new: usize) {
    let w = tls::get();
    let delta = (new as u64).wrapping_sub(old as u64);
    if w > OFF {
        // SAFETY: as in on_alloc.
        let s = unsafe { &*(w as *const Slot) };
        bump!(s, bytes += delta);
        bump!(s, allocs += 1);
        bump!(s, frees += 1);
    } else {
        slow(w, delta, 1, 1);
    }
}

/// Under a hard limit, room for a block to grow in place by `bytes`: checked against the limit
/// and counted at once (false: refused, nothing counted). The realloc's [`on_move`] then counts
/// the block as having been its old size plus these bytes.
pub fn reserve_growth(bytes: usize) -> bool {
    slow(tls::get(), bytes as u64, 0, 0)
}

/// Gives back the growth reserved for a realloc that failed.
pub fn unreserve_growth(bytes: usize) {
    slow(tls::get(), (bytes as u64).wrapping_neg(), 0, 0);
}

#[cold]
#[inline(never)]
fn slow(w: usize, bytes: u64, allocs: u64, frees: u64) -> bool {
    let s = match w {
        OFF => return true,
        UNCLAIMED => match claim() {
            Some(s) => s,
            None => &SHARED,
        },
        _ => &SHARED,
    };
    let limit = HARD_LIMIT.load(Relaxed);
    let before = s.bytes.fetch_add(bytes, Relaxed);
    let blocks = s.allocs.fetch_add(allocs, Relaxed).wrapping_add(allocs).wrapping_sub(s.frees.fetch_add(frees, Relaxed) + frees);
    // Only SHARED counts under a hard limit, so its figures are the process's.
    if limit != 0 && frees == 0 && (bytes as i64) > 0 && before.wrapping_add(bytes).wrapping_sub(blocks.wrapping_mul(header())) > limit {
        s.bytes.fetch_sub(bytes, Relaxed);
        s.allocs.fetch_sub(allocs, Relaxed);
        if REFUSED.fetch_add(1, Relaxed) == 0 {
            // Once, so that a host dying of the refusal says why; a fixed line, no allocation.
            const LINE: &[u8] = b"memtrim: MEMTRIM_HARD_LIMIT refused an allocation; later refusals are counted, not reported\n";
            // SAFETY: a static buffer.
            unsafe { libc::write(2, LINE.as_ptr().cast(), LINE.len()) };
        }
        return false;
    }
    true
}

/// Gives this thread a slot once the library is initialised; `None` means count in SHARED.
fn claim() -> Option<&'static Slot> {
    match state() {
        State::Off => {
            tls::set(OFF);
            return None;
        }
        State::Ready if SLOTS_USABLE.load(Relaxed) && !strict() => {}
        State::Ready => {
            tls::set(SHARED_WORD);
            return None;
        }
        _ => return None, // try again on a later call
    }
    tls::set(SHARED_WORD); // re-entrant allocations below (pthread_setspecific may calloc) use SHARED
    let (i, slot) = SLOTS.iter().enumerate().find(|(_, s)| s.owned.compare_exchange(false, true, Acquire, Relaxed).is_ok())?;
    USED.fetch_max(i + 1, Release);
    let counters = if BORROW.load(Relaxed) { jemalloc_ctl::thread_counters() } else { Some([core::ptr::null_mut(); 2]) };
    // SAFETY: the key was created before the state became Ready.
    let Some(counters) = counters.filter(|_| unsafe { libc::pthread_setspecific(EXIT_KEY, slot as *const Slot as *const libc::c_void) } == 0) else {
        slot.owned.store(false, Release);
        return None;
    };
    // Last, after every allocation of this call (the caller's included, already made): the slot
    // starts from jemalloc's count as it stands, less what it had counted so far.
    slot.locked(|| {
        slot.borrowed.iter().zip(counters).for_each(|(b, c)| b.store(c, Relaxed));
        slot.bytes.fetch_sub(slot.net_borrowed(), Relaxed);
    });
    tls::set(slot as *const Slot as usize);
    Some(slot)
}

impl Slot {
    fn lock(&self) {
        while self.lock.compare_exchange_weak(false, true, Acquire, Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.lock.store(false, Release);
    }

    fn locked<R>(&self, f: impl FnOnce() -> R) -> R {
        self.lock();
        let r = f();
        self.unlock();
        r
    }

    /// Bytes jemalloc counts live for the borrowed thread; under `lock`.
    fn net_borrowed(&self) -> u64 {
        let [a, d] = [0, 1].map(|i| self.borrowed[i].load(Relaxed));
        if a.is_null() {
            return 0;
        }
        // SAFETY: the owner cannot exit (and its TLS go) while we hold the lock; jemalloc writes
        // these aligned words with plain stores, which a volatile load reads whole.
        unsafe { core::ptr::read_volatile(a).wrapping_sub(core::ptr::read_volatile(d)) }
    }

    /// Moves the borrowed count into `bytes` and lets the counters go; under `lock`.
    fn settle(&self) {
        self.bytes.fetch_add(self.net_borrowed(), Relaxed);
        self.borrowed.iter().for_each(|b| b.store(core::ptr::null_mut(), Relaxed));
    }

    fn live_bytes(&self) -> u64 {
        if BORROW.load(Relaxed) { self.locked(|| self.bytes.load(Relaxed).wrapping_add(self.net_borrowed())) } else { self.bytes.load(Relaxed) }
    }
}

/// The calling thread's allocations through the exports (libc's own, as in fopen) are the
/// library's, not the host's: they are not counted. For the worker thread.
pub fn exclude_this_thread() {
    tls::set(OFF);
}

/// Runs `f` with the calling thread's allocations not counted: the library's own, made on a
/// host thread (the worker's lazy start, the thread that hands deferred frees back). Where the thread's slot borrows jemalloc's counters,
/// which count them anyway, the slot's own bytes take them back.
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    let w = tls::get();
    // SAFETY: as in on_alloc.
    let slot = (w > OFF).then(|| unsafe { &*(w as *const Slot) });
    let before = slot.map(|s| s.locked(|| s.net_borrowed()));
    tls::set(OFF);
    let r = f();
    tls::set(w);
    if let (Some(s), Some(before)) = (slot, before) {
        s.bytes.fetch_sub(s.locked(|| s.net_borrowed()).wrapping_sub(before), Relaxed);
    }
    r
}

/// Thread-exit hook: the slot takes in jemalloc's count, if it borrows it, while the thread's
/// TLS is still there; later allocations of the exiting thread count in SHARED, and the slot,
/// counters intact, waits for another thread.
extern "C" fn release(slot: *mut libc::c_void) {
    // SAFETY: the key's value is always a slot of SLOTS.
    let slot = unsafe { &*(slot as *const Slot) };
    slot.locked(|| slot.settle());
    tls::set(SHARED_WORD);
    slot.owned.store(false, Release);
}

/// Holds every slot's lock across fork when slots borrow jemalloc's counters, so that the child
/// finds none half-claimed or half-settled.
pub fn before_fork() {
    if BORROW.load(Relaxed) {
        SLOTS.iter().for_each(Slot::lock);
    }
}

pub fn after_fork_in_parent() {
    if BORROW.load(Relaxed) {
        SLOTS.iter().for_each(Slot::unlock);
    }
}

/// In a forked child only the forking thread lives on: free every other slot, keeping its
/// counters, because the blocks they counted live on in the child's copy of the heap (and the
/// gone threads' TLS, with jemalloc's counters, is still mapped for the settling).
pub fn after_fork_in_child() {
    let mine = tls::get();
    for s in &SLOTS[..USED.load(Acquire)] {
        if s as *const Slot as usize != mine {
            s.settle();
            s.owned.store(false, Release);
        }
    }
    after_fork_in_parent();
}

/// From the first allocation on, slots count bytes with jemalloc's per-thread counters;
/// called when the jemalloc backend is chosen, before any slot is claimed.
pub fn borrow_jemalloc_counters() {
    BORROW.store(true, Relaxed);
}

/// What a slot counts per block beyond its usable size: glibc's chunk header word where slots
/// count chunk sizes, nothing where they borrow jemalloc's counters (set before any counting).
fn header() -> u64 {
    if BORROW.load(Relaxed) { 0 } else { glibc::HEADER }
}

/// Under a hard limit every allocation is checked, and realloc checks its growth before the
/// allocator resizes, so that a refused growth leaves the old block live.
#[inline]
pub fn strict() -> bool {
    HARD_LIMIT.load(Relaxed) != 0
}

pub fn refused() -> u64 {
    REFUSED.load(Relaxed)
}

/// Creates the thread-exit key and sets the hard limit; called once, before the state is Ready.
pub fn init(hard_limit: Option<u64>) {
    HARD_LIMIT.store(hard_limit.unwrap_or(0), Relaxed);
    // SAFETY: a valid out-pointer; EXIT_KEY is written before Ready is published.
    let ok = unsafe { libc::pthread_key_create(&raw mut EXIT_KEY, Some(release)) == 0 };
    SLOTS_USABLE.store(ok, Relaxed);
}

pub struct Totals {
    pub live: u64,
    pub peak: u64,
    pub allocs: u64,
    pub frees: u64,
}

/// Sums every slot. Concurrent updates make this a moment's snapshot; a block allocated on one
/// thread and freed on another between two slot reads can make the sum dip below zero for a
/// moment, so it is clamped. The peak is the highest live total any read has seen.
pub fn totals() -> Totals {
    let (mut bytes, mut allocs, mut frees) = (0u64, 0u64, 0u64);
    for s in core::iter::once(&SHARED).chain(&SLOTS[..USED.load(Acquire)]) {
        bytes = bytes.wrapping_add(s.live_bytes());
        allocs = allocs.wrapping_add(s.allocs.load(Relaxed));
        frees = frees.wrapping_add(s.frees.load(Relaxed));
    }
    let blocks = allocs.wrapping_sub(frees);
    let live = (bytes.wrapping_sub(blocks.wrapping_mul(header())) as i64).max(0) as u64;
    let peak = PEAK.fetch_max(live, Relaxed).max(live);
    Totals { live, peak, allocs, frees }
}
