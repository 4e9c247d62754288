//! The library's own Rust allocations go straight to glibc, never through the exports: they
//! cannot recurse into the shim and are not counted as the host's (docs/DESIGN.md, trap 1).
use crate::sys::glibc;
use core::alloc::{GlobalAlloc, Layout};

/// glibc's malloc returns blocks aligned to 16 on 64-bit targets.
const MALLOC_ALIGN: usize = 16;

pub struct Private;

// SAFETY: every block comes from glibc, at least as aligned as asked (malloc's 16, else
// memalign), and goes back to glibc's free; glibc is thread-safe.
unsafe impl GlobalAlloc for Private {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: glibc's malloc and memalign have no precondition.
        unsafe { if l.align() <= MALLOC_ALIGN { glibc::__libc_malloc(l.size()).cast() } else { glibc::__libc_memalign(l.align(), l.size()).cast() } }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.align() <= MALLOC_ALIGN {
            // SAFETY: glibc's calloc has no precondition.
            unsafe { glibc::__libc_calloc(1, l.size()).cast() }
        } else {
            // SAFETY: l is the caller's valid layout; a non-null block has l.size() bytes.
            unsafe {
                let p = self.alloc(l);
                if !p.is_null() {
                    p.write_bytes(0, l.size());
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, _: Layout) {
        // SAFETY: p came from alloc (GlobalAlloc's contract), so from glibc.
        unsafe { glibc::__libc_free(p.cast()) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        if l.align() <= MALLOC_ALIGN {
            // SAFETY: p is a live glibc block; realloc keeps malloc's alignment.
            return unsafe { glibc::__libc_realloc(p.cast(), new_size).cast() };
        }
        // SAFETY: l.align() is a valid alignment and new_size, rounded to it, fits isize
        // (GlobalAlloc::realloc's contract); q has new_size bytes, p has l.size(), and they are
        // distinct blocks; p is then freed once.
        unsafe {
            let q = self.alloc(Layout::from_size_align_unchecked(new_size, l.align()));
            if !q.is_null() {
                q.copy_from_nonoverlapping(p, l.size().min(new_size));
                self.dealloc(p, l);
            }
            q
        }
    }
}
