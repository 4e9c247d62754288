//! What the kernel says about this process: identity, resident set, PSS/USS/swap.

/// The page size: the kernel's, from the auxiliary vector (no system call).
pub fn page_size() -> usize {
    // SAFETY: no preconditions; the auxiliary vector is there from the start.
    unsafe { libc::getauxval(libc::AT_PAGESZ) as usize }
}

/// Resident bytes, from /proc/self/statm (cheap: no page-table walk).
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * page_size() as u64
}

/// (ppid, start time in clock ticks after boot) from /proc/self/stat.
pub fn ppid_and_start() -> (u32, u64) {
    stat_ppid_and_start("/proc/self/stat")
}

/// The start time (clock ticks after boot) of process `pid`, 0 if it cannot be read.
pub fn start_ticks_of(pid: u32) -> u64 {
    stat_ppid_and_start(&format!("/proc/{pid}/stat")).1
}

fn stat_ppid_and_start(path: &str) -> (u32, u64) {
    let Ok(s) = std::fs::read_to_string(path) else { return (0, 0) };
    // Fields after the command, which is in parentheses and may itself hold spaces.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (field(4) as u32, field(22))
}

pub fn comm() -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(s) = std::fs::read("/proc/self/comm") {
        let s = s.strip_suffix(b"\n").unwrap_or(&s);
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
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
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
/// thread had the worker not been counted. Cheap unless at most two threads remain.
pub fn only_caller_left() -> bool {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse::<u32>().ok())));
    if threads.is_none_or(|n| n > 2) {
        return false;
    }
    // SAFETY: gettid has no preconditions (the syscall: glibc's wrapper is 2.30's).
    let me = unsafe { libc::syscall(libc::SYS_gettid) }.to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
    tasks.flatten().all(|t| {
        t.file_name().to_str() == Some(me.as_str())
            || std::fs::read_to_string(t.path().join("stat"))
                .map(|s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X'])))
                .unwrap_or(true)
    })
}
