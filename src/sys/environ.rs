//! The process environment read by walking `environ`: no allocation, usable before any
//! constructor has run (docs/DESIGN.md, trap 5).
use core::ffi::{CStr, c_char};

unsafe extern "C" {
    static environ: *const *const c_char;
}

/// `NAME=value` entries as bytes, in environ's order (an entry without `=` is skipped).
pub fn pairs() -> impl Iterator<Item = (&'static [u8], &'static [u8])> {
    // SAFETY: environ is a NULL-terminated array of C strings that live as long as the process
    // unless the host calls setenv; we read it once, during initialisation.
    let mut p = unsafe { environ };
    // SAFETY: as above: p walks that array up to its NULL, each entry a C string.
    core::iter::from_fn(move || unsafe {
        loop {
            if p.is_null() || (*p).is_null() {
                return None;
            }
            let entry = CStr::from_ptr(*p).to_bytes();
            p = p.add(1);
            if let Some(eq) = entry.iter().position(|&b| b == b'=') {
                let (name, rest) = entry.split_at(eq);
                return Some((name, rest.get(1..).unwrap_or(&[])));
            }
        }
    })
}

/// The value of the first `name` entry, as getenv reads it (the configuration follows the same
/// rule), if it is UTF-8.
pub fn get(name: &str) -> Option<&'static str> {
    pairs().find(|(k, _)| *k == name.as_bytes()).and_then(|(_, v)| core::str::from_utf8(v).ok())
}
