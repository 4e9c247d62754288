//! glibc functions newer than the oldest glibc the library loads on (2.28: scripts/glibc-floor
//! checks the built library's symbol versions), found at run time so that the library still
//! loads where they are missing, with a fallback there. Looked up from the worker, never from
//! the malloc family (dlsym may call calloc: DESIGN.md trap 2).
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// mallinfo2 (glibc 2.33): 0 not looked up yet, 1 missing, else the function.
static MALLINFO2: AtomicUsize = AtomicUsize::new(0);

/// What glibc holds from the system: its arenas plus its mmapped blocks. Before glibc 2.33,
/// from mallinfo, whose int fields keep each figure modulo 4 GiB.
pub fn heap_bytes() -> u64 {
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
        return (m.arena + m.hblkhd) as u64;
    }
    #[allow(deprecated)]
    // SAFETY: mallinfo has no preconditions.
    let m = unsafe { libc::mallinfo() };
    u64::from(m.arena as u32) + u64::from(m.hblkhd as u32)
}
