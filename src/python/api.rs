//! The CPython entry points memtrim uses, found at run time in the process (the interpreter is
//! the host, not a dependency): nothing here exists in a process that is not Python.
use core::ffi::{CStr, c_char, c_int, c_void};

/// `PyObjectArenaAllocator` (Include/cpython/objimpl.h, unchanged since 3.4).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArenaAllocator {
    pub ctx: *mut c_void,
    pub alloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    pub free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize)>,
}

pub type PendingCall = unsafe extern "C" fn(*mut c_void) -> c_int;

pub struct Api {
    /// PY_VERSION_HEX's major and minor.
    pub version: (u8, u8),
    /// A free-threaded build (3.13t): its objects are in mimalloc's heaps, not in pools.
    pub free_threaded: bool,
    pub get_arena_allocator: unsafe extern "C" fn(*mut ArenaAllocator),
    pub set_arena_allocator: unsafe extern "C" fn(*mut ArenaAllocator),
    pub add_pending_call: unsafe extern "C" fn(PendingCall, *mut c_void) -> c_int,
    pub is_initialized: unsafe extern "C" fn() -> c_int,
    /// `_Py_IsFinalizing` (to 3.12) or `Py_IsFinalizing` (3.13).
    pub is_finalizing: unsafe extern "C" fn() -> c_int,
    pub interpreter_head: unsafe extern "C" fn() -> *mut c_void,
    pub interpreter_next: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
}

/// Looks the interpreter up in the process; `None` in a process without one (or with an
/// interpreter too old to have these functions).
pub fn find() -> Option<Api> {
    // SAFETY: each symbol is cast to the signature CPython's headers give it; a missing one
    // makes the whole lookup `None`.
    unsafe {
        let version_string: unsafe extern "C" fn() -> *const c_char = sym(c"Py_GetVersion")?;
        let text = CStr::from_ptr(version_string()).to_str().ok()?;
        Some(Api {
            version: parse_version(text)?,
            free_threaded: text.contains("free-threading"),
            get_arena_allocator: sym(c"PyObject_GetArenaAllocator")?,
            set_arena_allocator: sym(c"PyObject_SetArenaAllocator")?,
            add_pending_call: sym(c"Py_AddPendingCall")?,
            is_initialized: sym(c"Py_IsInitialized")?,
            is_finalizing: sym(c"Py_IsFinalizing").or_else(|| sym(c"_Py_IsFinalizing"))?,
            interpreter_head: sym(c"PyInterpreterState_Head")?,
            interpreter_next: sym(c"PyInterpreterState_Next")?,
        })
    }
}

/// # Safety
/// `T` must be the function pointer type of the symbol `name`.
pub unsafe fn sym<T: Copy>(name: &CStr) -> Option<T> {
    const { assert!(core::mem::size_of::<T>() == core::mem::size_of::<*mut c_void>()) };
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    // SAFETY: T is pointer-sized (checked above) and the symbol's type (the caller's contract).
    (!p.is_null()).then(|| unsafe { core::mem::transmute_copy(&p) })
}

/// "3.11.2 (main, …) [GCC …]" → (3, 11).
fn parse_version(text: &str) -> Option<(u8, u8)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_version_string() {
        assert_eq!(parse_version("3.11.2 (main, Mar 13 2023) [GCC 12.2.0]"), Some((3, 11)));
        assert_eq!(parse_version("3.13.0rc1 experimental free-threading build"), Some((3, 13)));
        assert_eq!(parse_version("garbage"), None);
    }
}
