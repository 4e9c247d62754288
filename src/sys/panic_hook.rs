//! A panic inside the library must not unwind into the host (panic = "abort" in Cargo.toml);
//! before the abort, one fixed line and the location go to stderr with write(2), which needs no
//! lock and no allocation (docs/DESIGN.md, trap 6).

pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let mut line = [0u8; 256];
        let mut n = 0;
        let mut put = |b: &[u8]| {
            let k = b.len().min(line.len() - n);
            line[n..n + k].copy_from_slice(&b[..k]);
            n += k;
        };
        put(b"memtrim: internal error (panic) at ");
        if let Some(loc) = info.location() {
            put(loc.file().as_bytes());
            put(b":");
            let mut digits = [0u8; 10];
            let mut i = digits.len();
            let mut v = loc.line();
            loop {
                i -= 1;
                digits[i] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            put(&digits[i..]);
        }
        put(b"; aborting\n");
        // SAFETY: the buffer is valid for n bytes.
        unsafe { libc::write(2, line.as_ptr().cast(), n) };
    }));
}
