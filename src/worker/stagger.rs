//! Staggered recycling (MEMTRIM_LIMIT_STAGGER_MS): the workers of one master take turns, so
//! that a fleet that crosses its limit together is not recycled all at once. Before its limit's
//! signal a worker claims the turn in its master's claim file, `stagger.PPID.PSTART` in the
//! per-user page directory (0700: no other user can plant it; the master's start time tells a
//! reused pid apart). Under an exclusive flock, held only to read and write a number, the file
//! holds the unix time (ms) of the last signal among the siblings: within the window the worker
//! defers, else it writes the time and goes. Siblings crossing at the same sample serialise on
//! the lock: the second reads the first's time. A cgroup budget (MEMTRIM_LIMIT=cgroup:…) takes
//! turns the same way in `budget.HASH`, named for the cgroup. `memtrim clean` removes the files
//! of masters that are gone, and budget files untouched for longer than any window.
use crate::sys::{cgroup, procfs};
use crate::worker::page_file::{Fd, errno, euid, open_user_dir, user_dir};
use memtrim_common::page;
use std::ffi::CString;
use std::time::Duration;

pub enum Turn {
    Go,
    /// A sibling went less than the window ago: this one may go from `until_ms` (unix ms).
    Defer {
        until_ms: u64,
    },
}

/// How long a worker waits for a sibling that holds the lock (only to read and write a number).
const LOCK_TRIES: u32 = 20;
const LOCK_PAUSE: Duration = Duration::from_millis(1);

/// The claim file of this process's master.
pub fn of_master() -> String {
    // SAFETY: no preconditions.
    let ppid = unsafe { libc::getppid() } as u32;
    page::stagger_name(ppid, procfs::start_ticks_of(ppid))
}

/// The claim file of this process's cgroup budget (the processes of one cgroup share it).
pub fn of_cgroup() -> String {
    page::budget_name(&cgroup::membership("self").unwrap_or_default())
}

/// The turn of this process among those sharing the claim file `name` at unix time `now_ms`;
/// Err says why the file could not be used (the caller then goes unstaggered).
pub fn claim(shm_dir: &str, name: &str, window_ms: u64, now_ms: u64) -> Result<Turn, String> {
    let udir = user_dir(shm_dir);
    let dfd = open_user_dir(&udir)?;
    let cname = CString::new(name).map_err(|_| "bad claim file name".to_string())?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: dfd is open; cname is a valid C string.
    let fd = unsafe { libc::openat(dfd.0, cname.as_ptr(), flags, 0o600) };
    if fd < 0 {
        return Err(format!("cannot open {udir}/{name}: {}", errno()));
    }
    let fd = Fd(fd);
    // SAFETY: stat is plain data, valid all-zero; fd is open.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fd is open and st a valid stat to fill.
    if unsafe { libc::fstat(fd.0, &mut st) } != 0 {
        return Err(format!("{udir}/{name}: fstat: {}", errno()));
    }
    // As for a page: only a private regular file of ours, with no other name, is trusted.
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != euid() || st.st_mode & 0o077 != 0 || st.st_nlink != 1 {
        return Err(format!("{udir}/{name} is not a private regular file of uid {} (uid {}, mode {:o}, {} links)", euid(), st.st_uid, st.st_mode, st.st_nlink));
    }
    let mut tries = 0;
    // SAFETY: fd is open; the lock goes with it when it is closed.
    while unsafe { libc::flock(fd.0, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tries += 1;
        if errno().raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(format!("{udir}/{name}: flock: {}", errno()));
        }
        if tries == LOCK_TRIES {
            // a sibling is claiming right now: it goes, this one looks again next sample
            return Ok(Turn::Defer { until_ms: now_ms + window_ms });
        }
        std::thread::sleep(LOCK_PAUSE);
    }
    let mut buf = [0u8; 24];
    // SAFETY: buf is writable for its length; fd is open.
    let n = unsafe { libc::pread(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
    let last: u64 = std::str::from_utf8(buf.get(..n.max(0) as usize).unwrap_or(&[])).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    if last <= now_ms && now_ms - last < window_ms {
        return Ok(Turn::Defer { until_ms: last + window_ms });
    }
    let text = now_ms.to_string();
    // SAFETY: fd is open; text is readable for its length.
    let written = unsafe { libc::ftruncate(fd.0, 0) == 0 && libc::pwrite(fd.0, text.as_ptr().cast(), text.len(), 0) == text.len() as isize };
    if !written {
        return Err(format!("{udir}/{name}: write: {}", errno()));
    }
    Ok(Turn::Go)
}
