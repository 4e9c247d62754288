//! Every arena CPython's small-object allocator holds: from the library's constructor on, the
//! interpreter takes and gives back arenas through an allocator memtrim wraps
//! (PyObject_SetArenaAllocator, before the interpreter has an object). That allocator also
//! serves other mappings (3.11+: the frames' data stack chunks), so the list holds every block
//! of an arena's size, and a walk checks each one's pools before it touches any
//! (pymalloc_pools.rs). The list lives in
//! its own mapping, grown by mremap; when it cannot grow, an arena goes unlisted, which only means
//! it is never released. The wrapper is called under the interpreter's lock; the spin lock is for
//! subinterpreters with a lock of their own (3.12+), whose pools are never touched
//! (pymalloc_pools.rs).
use crate::python::api::ArenaAllocator;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

static LOCK: AtomicBool = AtomicBool::new(false);
static BASE: AtomicUsize = AtomicUsize::new(0);
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// Arenas taken while the list could not grow.
static UNLISTED: AtomicUsize = AtomicUsize::new(0);
static ARENA_SIZE: AtomicUsize = AtomicUsize::new(0);
static mut PREVIOUS: ArenaAllocator = ArenaAllocator { ctx: core::ptr::null_mut(), alloc: None, free: None };

/// Puts the wrapper in front of the interpreter's arena allocator. Once, from the constructor.
///
/// # Safety
/// `get` and `set` are CPython's PyObject_GetArenaAllocator and PyObject_SetArenaAllocator, and
/// no other thread runs.
pub unsafe fn wrap(get: unsafe extern "C" fn(*mut ArenaAllocator), set: unsafe extern "C" fn(*mut ArenaAllocator), arena_size: usize) {
    let mut previous = ArenaAllocator { ctx: core::ptr::null_mut(), alloc: None, free: None };
    // SAFETY: CPython's getter fills the struct (the caller's contract).
    unsafe { get(&mut previous) };
    if previous.alloc.is_none() || previous.free.is_none() {
        return;
    }
    // SAFETY: no other thread runs, and the wrapper that reads PREVIOUS is not installed yet.
    unsafe { PREVIOUS = previous };
    ARENA_SIZE.store(arena_size, Relaxed);
    let mut ours = ArenaAllocator { ctx: core::ptr::null_mut(), alloc: Some(alloc), free: Some(free) };
    // SAFETY: CPython's setter copies the struct.
    unsafe { set(&mut ours) };
}

/// Whether the interpreter's arena allocator is still the wrapper: if anything replaced it,
/// arenas may be freed without the list knowing, and none may be touched.
pub fn wrapped(get: unsafe extern "C" fn(*mut ArenaAllocator)) -> bool {
    let mut now = ArenaAllocator { ctx: core::ptr::null_mut(), alloc: None, free: None };
    // SAFETY: CPython's PyObject_GetArenaAllocator fills the struct.
    unsafe { get(&mut now) };
    now.alloc.is_some_and(|f| f as usize == alloc as *const () as usize) && now.free.is_some_and(|f| f as usize == free as *const () as usize)
}

/// # Safety
/// As CPython's arena allocator's alloc.
unsafe extern "C" fn alloc(_: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: set before the wrapper was installed, never written again.
    let previous = unsafe { *core::ptr::addr_of!(PREVIOUS) };
    let Some(f) = previous.alloc else { return core::ptr::null_mut() };
    // SAFETY: the allocator this one wraps, with its own context.
    let p = unsafe { f(previous.ctx, size) };
    if !p.is_null() && size == ARENA_SIZE.load(Relaxed) {
        with_lock(|| push(p as usize));
    }
    p
}

/// # Safety
/// As CPython's arena allocator's free: `p` is an arena `alloc` gave, of `size` bytes.
unsafe extern "C" fn free(_: *mut c_void, p: *mut c_void, size: usize) {
    if size == ARENA_SIZE.load(Relaxed) {
        with_lock(|| remove(p as usize));
    }
    // SAFETY: as in `alloc`.
    let previous = unsafe { *core::ptr::addr_of!(PREVIOUS) };
    if let Some(f) = previous.free {
        // SAFETY: p came from the wrapped allocator (through `alloc`), which frees it.
        unsafe { f(previous.ctx, p, size) };
    }
}

fn with_lock<T>(f: impl FnOnce() -> T) -> T {
    while LOCK.compare_exchange_weak(false, true, Acquire, Relaxed).is_err() {
        core::hint::spin_loop();
    }
    let r = f();
    LOCK.store(false, Release);
    r
}

fn slots() -> *mut usize {
    BASE.load(Relaxed) as *mut usize
}

/// The listed blocks. Under the lock.
fn list() -> &'static mut [usize] {
    if slots().is_null() {
        return &mut [];
    }
    // SAFETY: the first LEN slots of the mapping are written; the lock is held.
    unsafe { core::slice::from_raw_parts_mut(slots(), LEN.load(Relaxed)) }
}

fn push(arena: usize) {
    let (len, cap) = (LEN.load(Relaxed), CAPACITY.load(Relaxed));
    if len == cap && !grow(cap) {
        UNLISTED.fetch_add(1, Relaxed);
        return;
    }
    // SAFETY: len < capacity after grow; the slots are ours, under the lock.
    unsafe { slots().add(len).write(arena) };
    LEN.store(len + 1, Relaxed);
}

fn remove(arena: usize) {
    let list = list();
    if let Some(i) = list.iter().position(|&a| a == arena) {
        list.swap(i, list.len() - 1);
        LEN.store(list.len() - 1, Relaxed);
    }
}

fn grow(cap: usize) -> bool {
    const FIRST: usize = 4096;
    let bytes = cap * 8;
    // SAFETY: a fresh private mapping, or the list's own one moved and grown.
    let p = unsafe {
        if cap == 0 {
            libc::mmap(core::ptr::null_mut(), FIRST, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        } else {
            libc::mremap(slots().cast(), bytes, bytes * 2, libc::MREMAP_MAYMOVE)
        }
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    BASE.store(p as usize, Relaxed);
    CAPACITY.store(if cap == 0 { FIRST / 8 } else { cap * 2 }, Relaxed);
    true
}

/// Arena `i` of the list, or `None` past its end. Called under the interpreter's lock, when no
/// other interpreter exists: no arena is taken or given back meanwhile.
pub fn get(i: usize) -> Option<usize> {
    with_lock(|| list().get(i).copied())
}

/// The listed blocks as address ranges, adjacent ones merged, in address order.
pub fn ranges(size: usize) -> Vec<(usize, usize)> {
    let mut starts = with_lock(|| list().to_vec());
    starts.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for s in starts {
        match merged.last_mut() {
            Some(last) if last.1 == s => last.1 = s + size,
            _ => merged.push((s, s + size)),
        }
    }
    merged
}

pub fn unlisted() -> usize {
    UNLISTED.load(Relaxed)
}

/// A fork may have come while another thread held the lock; the child has only the forking
/// thread.
pub fn after_fork_in_child() {
    LOCK.store(false, Relaxed);
}
