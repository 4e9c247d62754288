//! glibc's thread heaps as they lie in this process's address space, found without glibc's help:
//! the mappings (/proc/self/maps), reads that cannot fault, and the heaps themselves (each
//! starts on a HEAP_MAX boundary with a heap_info naming its arena). Used by the report and by
//! the release of thread arenas' top chunks.
use core::ffi::c_void;

/// glibc's HEAP_MAX_SIZE on 64-bit targets: thread heaps are aligned to it.
pub const HEAP_MAX: usize = 64 << 20;

pub struct Vma {
    pub start: usize,
    pub end: usize,
    pub perms: [u8; 4],
    /// Empty for an anonymous mapping.
    pub path: String,
}

impl Vma {
    pub fn anon_private_rw(&self) -> bool {
        self.path.is_empty() && &self.perms == b"rw-p"
    }
}

pub fn read_maps() -> Vec<Vma> {
    let Ok(s) = std::fs::read_to_string("/proc/self/maps") else { return Vec::new() };
    let mut v = Vec::new();
    for line in s.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (it.next(), it.next()) else { continue };
        let (_off, _dev, _ino) = (it.next(), it.next(), it.next());
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else { continue };
        let mut p = [b'-'; 4];
        for (d, s) in p.iter_mut().zip(perms.bytes()) {
            *d = s;
        }
        v.push(Vma { start, end, perms: p, path });
    }
    v
}

/// Reads `buf.len()` bytes at `addr` of this process without faulting on a mapping that went
/// away (process_vm_readv; /proc/self/mem if that is refused).
pub fn peek(addr: usize, buf: &mut [u8]) -> bool {
    let local = libc::iovec { iov_base: buf.as_mut_ptr() as *mut c_void, iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut c_void, iov_len: buf.len() };
    // SAFETY: both iovecs describe valid memory of the right length (the remote one may be
    // unmapped: the kernel then returns an error).
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == buf.len() as isize {
        return true;
    }
    if n < 0 && matches!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) {
        use std::os::unix::fs::FileExt;
        return std::fs::File::open("/proc/self/mem").and_then(|f| f.read_exact_at(buf, addr as u64)).is_ok();
    }
    false
}

pub fn peek_words<const N: usize>(addr: usize) -> Option<[usize; N]> {
    let mut b = [0u8; 64];
    let n = N * 8;
    if n > b.len() || !peek(addr, &mut b[..n]) {
        return None;
    }
    let mut w = [0usize; N];
    for (i, x) in w.iter_mut().enumerate() {
        *x = usize::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().ok()?);
    }
    Some(w)
}

#[derive(Clone, Copy)]
pub struct Heap {
    pub base: usize,
    pub size: usize,
    pub mprotect: usize,
    pub ar_ptr: usize,
    pub prev: usize,
}

/// Thread heaps: 64 MiB-aligned starts in private anonymous read-write mappings that begin with
/// a plausible heap_info.
pub fn find_heaps(maps: &[Vma], page: usize) -> Vec<Heap> {
    let mut v = Vec::new();
    for m in maps.iter().filter(|m| m.anon_private_rw()) {
        let mut a = (m.start + HEAP_MAX - 1) & !(HEAP_MAX - 1);
        while a < m.end && v.len() < 4096 {
            if let Some([ar_ptr, prev, size, mprotect]) = peek_words::<4>(a) {
                let plausible = size >= page
                    && size <= HEAP_MAX
                    && mprotect >= size
                    && mprotect <= HEAP_MAX
                    && prev % HEAP_MAX == 0
                    && ar_ptr != 0
                    && ar_ptr % 8 == 0
                    && a + (mprotect.div_ceil(page) * page) <= m.end;
                if plausible {
                    v.push(Heap { base: a, size, mprotect, ar_ptr, prev });
                }
            }
            a += HEAP_MAX;
        }
    }
    v
}
