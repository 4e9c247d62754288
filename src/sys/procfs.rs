//! What the kernel says about this process: identity, resident set, PSS/USS/swap.

/// The page size: the kernel's, from the auxiliary vector (no system call).
pub fn page_size() -> usize {
    // SAFETY: no preconditions; the auxiliary vector is there from the start.
    unsafe { libc::getauxval(libc::AT_PAGESZ) as usize }
}

/// Resident bytes, from /proc/self/statm (cheap: no page-table walk).
pub fn rss_bytes() -> u64 {
    let mut buf = [0u8; 256];
    let Some(s) = read_small("/proc/self/statm", &mut buf) else { return 0 };
    field(s, 1) * page_size() as u64
}

/// Start time (clock ticks after boot) from /proc/self/stat.
pub fn start_ticks() -> u64 {
    start_ticks_of_path("/proc/self/stat")
}

/// The start time (clock ticks after boot) of process `pid`, 0 if it cannot be read.
pub fn start_ticks_of(pid: u32) -> u64 {
    start_ticks_of_path(&format!("/proc/{pid}/stat"))
}

fn start_ticks_of_path(path: &str) -> u64 {
    let mut buf = [0u8; 1024];
    read_small(path, &mut buf).map_or(0, |s| field(after_comm(s), 22 - 3))
}

/// The fields of a stat line after the command, which is in parentheses and may itself hold
/// spaces (field 3, the state, comes first).
fn after_comm(stat: &[u8]) -> &[u8] {
    stat.iter().rposition(|&b| b == b')').map_or(&[], |i| &stat[i + 1..])
}

/// Whitespace-separated field `n` (from 0) of `s` as a number, 0 if absent.
fn field(s: &[u8], n: usize) -> u64 {
    let w = s.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).nth(n).unwrap_or(b"");
    core::str::from_utf8(w).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A small /proc file whole, in one read into `buf` (std's read_to_string probes with 32-byte
/// reads first: a dozen system calls for each file the worker reads every second).
fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(&buf[..n])
}

pub fn comm() -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut buf = [0u8; 64];
    if let Some(s) = read_small("/proc/self/comm", &mut buf) {
        let s = s.strip_suffix(b"\n").unwrap_or(s);
        let n = s.len().min(15);
        out[..n].copy_from_slice(&s[..n]);
    }
    out
}

/// The names MEMTRIM_ONLY is matched against: comm, and the basenames of the first two
/// command-line words (`python3 app.py`, `ruby /usr/bin/puma`).
pub fn names() -> Vec<String> {
    let mut v = vec![String::from_utf8_lossy(&comm()).trim_end_matches('\0').to_string()];
    if let Ok(cmd) = std::fs::read("/proc/self/cmdline") {
        for w in cmd.split(|&b| b == 0).filter(|w| !w.is_empty()).take(2) {
            let base = w.rsplit(|&b| b == b'/').next().unwrap_or(w);
            v.push(String::from_utf8_lossy(base).into_owned());
        }
    }
    v
}

pub struct Smaps {
    pub pss: u64,
    pub uss: u64,
    pub swap: u64,
}

/// PSS, USS (private clean + dirty) and swap from /proc/self/smaps_rollup. Walks the page
/// tables: milliseconds on a big process, so it runs on its own, slower cadence.
pub fn smaps_rollup() -> Option<Smaps> {
    let mut buf = [0u8; 4096];
    let s = core::str::from_utf8(read_small("/proc/self/smaps_rollup", &mut buf)?).ok()?;
    let mut m = Smaps { pss: 0, uss: 0, swap: 0 };
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(kb)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) else { continue };
        match key {
            "Pss:" => m.pss = kb << 10,
            "Private_Clean:" | "Private_Dirty:" => m.uss += kb << 10,
            "Swap:" => m.swap = kb << 10,
            _ => {}
        }
    }
    Some(m)
}

/// Whether every thread but the caller has exited. A process whose last host thread called
/// pthread_exit lives on while any thread does; glibc would have called exit(0) in that last
/// thread had the worker not been counted. The main thread stays in the count, a zombie, until
/// the whole group has gone, so the caller (never the main thread) is alone when the count is
/// two and the main thread's state, which /proc/self/stat shows, is zombie: one small read.
pub fn only_caller_left() -> bool {
    let mut buf = [0u8; 1024];
    let Some(s) = read_small("/proc/self/stat", &mut buf) else { return false };
    let rest = after_comm(s);
    let state = rest.iter().copied().find(|b| !b.is_ascii_whitespace());
    field(rest, 20 - 3) <= 2 && matches!(state, Some(b'Z' | b'X'))
}
