//! glibc functions newer than the oldest glibc the library loads on (2.28: scripts/glibc-floor
//! checks the built library's symbol versions), found at run time so that the library still
//! loads where they are missing, with a fallback there. Looked up from the worker, never from
//! the malloc family (dlsym may call calloc: docs/DESIGN.md, trap 2).
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// mallinfo2 (glibc 2.33): 0 not looked up yet, 1 missing, else the function.
static MALLINFO2: AtomicUsize = AtomicUsize::new(0);

/// What glibc holds from the system: its arenas plus its mmapped blocks, and the mmapped blocks
/// alone. Before glibc 2.33, from mallinfo, whose int fields keep each figure modulo 4 GiB: the
/// heap is then taken as the least value of that residue that holds the `live` bytes (exact
/// unless more than 4 GiB is retained).
pub fn heap_bytes(live: u64) -> (u64, u64) {
    let f = match MALLINFO2.load(Relaxed) {
        0 => {
            // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
            let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) } as usize;
            let f = if f == 0 { 1 } else { f };
            MALLINFO2.store(f, Relaxed);
            f
        }
        f => f,
    };
    if f != 1 {
        // SAFETY: glibc's mallinfo2, which has this type and no preconditions.
        let m = unsafe { core::mem::transmute::<usize, unsafe extern "C" fn() -> libc::mallinfo2>(f)() };
        return ((m.arena + m.hblkhd) as u64, m.hblkhd as u64);
    }
    #[allow(deprecated)]
    // SAFETY: mallinfo has no preconditions.
    let m = unsafe { libc::mallinfo() };
    let mmapped = u64::from(m.hblkhd as u32);
    (least_holding(u64::from(m.arena as u32) + mmapped, live), mmapped)
}

/// The least value at or above `live` that equals `residue` modulo 4 GiB.
fn least_holding(residue: u64, live: u64) -> u64 {
    const WRAP: u64 = 1 << 32;
    let v = live - live % WRAP + residue % WRAP;
    if v < live { v + WRAP } else { v }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_heap_over_4_gib_is_read_from_its_residue() {
        let gib = 1u64 << 30;
        assert_eq!(super::least_holding(gib, 5 * gib), 5 * gib);
        assert_eq!(super::least_holding(gib + 7, 5 * gib), 5 * gib + 7);
        assert_eq!(super::least_holding(100, 50), 100);
        assert_eq!(super::least_holding(3 * gib, gib), 3 * gib);
    }
}
