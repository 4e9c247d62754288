//! The process environment read by walking `environ`: no allocation, usable before any
//! constructor has run (DESIGN.md trap 5).
use core::ffi::{c_char, CStr};

extern "C" {
    static environ: *const *const c_char;
}

/// `NAME=value` pairs with UTF-8 names and values; others are skipped.
pub fn pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    // SAFETY: environ is a NULL-terminated array of C strings that live as long as the process
    // unless the host calls setenv; we read it once, during initialisation.
    let mut p = unsafe { environ };
    core::iter::from_fn(move || unsafe {
        loop {
            if p.is_null() || (*p).is_null() {
                return None;
            }
            let entry = CStr::from_ptr(*p).to_str();
            p = p.add(1);
            if let Some((k, v)) = entry.ok().and_then(|e| e.split_once('=')) {
                return Some((k, v));
            }
        }
    })
}
