//! libmemtrim.so: preloaded into a host process, it serves the host's malloc family from the
//! host's allocator, counts live bytes, and gives retained memory back. See docs/DESIGN.md.
// A unit-test binary of the library leaves out the exports and the global allocator (below),
// whose callees then look unused there; the library's own build still warns of dead code.
#![cfg_attr(test, allow(dead_code))]
mod alloc;
mod capi;
mod init;
mod python;
mod sys;
mod worker;

// Not in a unit-test binary of the library: its tests run on the system malloc.
#[cfg(not(test))]
#[global_allocator]
static ALLOC: alloc::private_alloc::Private = alloc::private_alloc::Private;

#[cfg(test)]
mod tests {
    /// The unit tests run on the system malloc, with nothing of the library's started.
    #[test]
    fn a_unit_test_binary_has_no_malloc_and_no_constructor() {
        let object_of = |addr: *const libc::c_void| {
            // SAFETY: all-zero is a valid Dl_info, which dladdr fills; it only looks addr up.
            let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
            unsafe { libc::dladdr(addr, &mut info) };
            info.dli_fbase
        };
        // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope, program first.
        let malloc = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) };
        let me = object_of(a_unit_test_binary_has_no_malloc_and_no_constructor as *const libc::c_void);
        assert_ne!(object_of(malloc), me, "the unit-test binary exports malloc: its tests run on the library's");
        assert!(crate::init::config().is_none(), "the library's constructor ran in the unit-test binary");
    }
}
