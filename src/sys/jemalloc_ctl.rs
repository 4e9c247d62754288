//! jemalloc's named controls: its figures (refreshed by advancing `epoch`), purging, and decay
//! times, on the worker thread; each host thread's own byte counters, once.
use core::ffi::{c_char, c_void};
use tikv_jemalloc_sys as je;

/// The value of the control `name` (NUL-terminated), if it is a T.
pub fn read<T: Copy + Default>(name: &[u8]) -> Option<T> {
    let mut v = T::default();
    let mut len = core::mem::size_of::<T>();
    // SAFETY: name is NUL-terminated; v and len describe a T.
    let rc = unsafe { je::mallctl(name.as_ptr() as *const c_char, &mut v as *mut T as *mut c_void, &mut len, core::ptr::null_mut(), 0) };
    (rc == 0).then_some(v)
}

fn write<T: Copy>(name: &[u8], mut v: T) -> bool {
    // SAFETY: as in read, the new value is a T.
    unsafe {
        je::mallctl(name.as_ptr() as *const c_char, core::ptr::null_mut(), core::ptr::null_mut(), &mut v as *mut T as *mut c_void, core::mem::size_of::<T>())
            == 0
    }
}

/// Where jemalloc counts the calling thread's allocated and deallocated bytes (usable sizes, on
/// every call), for as long as the thread lives.
pub fn thread_counters() -> Option<[*mut u64; 2]> {
    Some([read::<usize>(b"thread.allocatedp\0")? as *mut u64, read::<usize>(b"thread.deallocatedp\0")? as *mut u64])
}

/// Refreshes the figures that the `stats.` controls read.
pub fn refresh() {
    write(b"epoch\0", 1u64);
}

/// Bytes in physically resident pages of the allocator: active allocations, unused dirty pages
/// and metadata.
pub fn resident() -> u64 {
    refresh();
    read::<usize>(b"stats.resident\0").unwrap_or(0) as u64
}

/// Bytes a purge would give back now: every arena's unused dirty and muzzy pages (the figures
/// of the last `epoch`).
pub fn purgeable() -> u64 {
    refresh();
    let pages = [&b"stats.arenas.4096.pdirty\0"[..], b"stats.arenas.4096.pmuzzy\0"].map(|n| read::<usize>(n).unwrap_or(0));
    (pages[0] + pages[1]) as u64 * read::<usize>(b"arenas.page\0").unwrap_or(4096) as u64
}

/// Purges every arena's unused dirty and muzzy pages.
pub fn purge() {
    // 4096 is MALLCTL_ARENAS_ALL.
    act(b"arena.4096.purge\0");
}

/// Purges, in every arena, the unused pages that the decay times say are due: what jemalloc's
/// background thread would do, keeping the pages freed recently for the allocations to come.
pub fn decay() {
    act(b"arena.4096.decay\0");
}

fn act(name: &[u8]) {
    // SAFETY: name is NUL-terminated; a control that takes no value.
    unsafe { je::mallctl(name.as_ptr() as *const c_char, core::ptr::null_mut(), core::ptr::null_mut(), core::ptr::null_mut(), 0) };
}

/// Decay times for arenas to come and for those that exist.
pub fn set_decay(dirty_ms: Option<u64>, muzzy_ms: Option<u64>) {
    let narenas = read::<u32>(b"arenas.narenas\0").unwrap_or(0);
    for (kind, ms) in [("dirty", dirty_ms), ("muzzy", muzzy_ms)] {
        let Some(ms) = ms else { continue };
        let v = ms as isize;
        write(format!("arenas.{kind}_decay_ms\0").as_bytes(), v);
        for i in 0..narenas {
            write(format!("arena.{i}.{kind}_decay_ms\0").as_bytes(), v);
        }
    }
}
