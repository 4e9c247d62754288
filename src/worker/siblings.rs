//! The memtrim processes that share this process's cgroup budget (MEMTRIM_LIMIT=cgroup:…): the
//! live pages of the same user in the same page directory whose process's /proc/PID/cgroup is
//! this process's. Each page is checked as the CLI checks one (a private regular file of ours,
//! opened without following links, read whole with pread into a buffer, then `Page::read`).
use crate::sys::{cgroup, procfs};
use crate::worker::page_file::{Fd, euid, open_user_dir, user_dir};
use memtrim_common::page::{self, Page};
use std::ffi::CString;

/// What the budget needs of a sibling.
pub struct Sibling {
    pub pid: u32,
    pub retained: u64,
    pub uss: u64,
}

/// The other processes of this cgroup with a page in `shm_dir` (empty if none can be read).
pub fn of_cgroup(shm_dir: &str, own_pid: u32) -> Vec<Sibling> {
    let Some(own) = cgroup::membership("self") else { return Vec::new() };
    let udir = user_dir(shm_dir);
    let Ok(dfd) = open_user_dir(&udir) else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(&udir) else { return Vec::new() };
    let mut v = Vec::new();
    for de in entries.flatten() {
        let name = de.file_name();
        let Some((pid, start)) = name.to_str().and_then(page::parse_file_name) else { continue };
        if pid == own_pid || procfs::start_ticks_of(pid) != start || cgroup::membership(&pid.to_string()).as_deref() != Some(own.as_str()) {
            continue;
        }
        if let Some(s) = read_page(&dfd, &name.to_string_lossy()) {
            v.push(Sibling { pid, retained: s.retained_bytes, uss: s.uss_bytes });
        }
    }
    v
}

fn read_page(dfd: &Fd, name: &str) -> Option<page::Stats> {
    let cname = CString::new(name).ok()?;
    // SAFETY: dfd is open; cname is a valid C string.
    let fd = Fd(unsafe { libc::openat(dfd.0, cname.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC) });
    if fd.0 < 0 {
        return None;
    }
    // SAFETY: stat is plain data, valid all-zero; fd is open.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fd is open and st a valid stat to fill.
    if unsafe { libc::fstat(fd.0, &mut st) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFREG
        || st.st_uid != euid()
        || (st.st_size as usize) < core::mem::size_of::<Page>()
    {
        return None;
    }
    // SAFETY: Page is plain data (integers and atomics), valid all-zero.
    let mut p: Box<Page> = Box::new(unsafe { core::mem::zeroed() });
    let len = core::mem::size_of::<Page>();
    // SAFETY: the buffer is the Box's, len bytes long.
    let n = unsafe { libc::pread(fd.0, &mut *p as *mut Page as *mut libc::c_void, len, 0) };
    if n != len as isize {
        return None;
    }
    p.read().ok()
}
