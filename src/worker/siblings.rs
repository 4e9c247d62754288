//! The memtrim processes that share this process's cgroup budget (MEMTRIM_LIMIT=cgroup:…): the
//! live pages of the same user in the same page directory whose process's /proc/PID/cgroup is
//! this process's. Each page is checked as the CLI checks one (a private regular file of ours,
//! opened without following links, read whole with pread into a buffer, then `Page::read`; a copy
//! caught mid-write is taken again).
use crate::sys::{cgroup, procfs};
use crate::worker::page_file::{Fd, euid, open_user_dir, user_dir};
use core::sync::atomic::Ordering::Relaxed;
use memtrim_common::page::{self, Page, ReadError};
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
    let len = core::mem::size_of::<Page>();
    consistent(|p| {
        // SAFETY: the buffer is the Box's, len bytes long; fd is open.
        unsafe { libc::pread(fd.0, p as *mut Page as *mut libc::c_void, len, 0) == len as isize }
    })
}

/// Copies of a page taken while its writer was mid-update (a few microseconds) are taken again:
/// a sibling left out of a sample could make this process take itself for the largest of fewer.
const COPIES: usize = 20;

/// The stats of the first consistent copy `copy` makes into a buffer, of up to COPIES; none if a
/// copy cannot be made, the page was never published, is corrupt or is not one this reader knows.
fn consistent(mut copy: impl FnMut(&mut Page) -> bool) -> Option<page::Stats> {
    // SAFETY: Page is plain data (integers and atomics), valid all-zero.
    let mut p: Box<Page> = Box::new(unsafe { core::mem::zeroed() });
    let mut torn_at = 0;
    for _ in 0..COPIES {
        if !copy(&mut p) {
            return None;
        }
        match p.seq.load(Relaxed) {
            0 => return None,
            // the copy does not change: its reader would wait on it in vain
            seq if seq & 1 == 1 => std::thread::yield_now(),
            // torn twice under the same even sequence: the bytes are corrupt, not being written
            seq => match p.read() {
                Err(ReadError::Torn) if seq == torn_at => return None,
                Err(ReadError::Torn) => {
                    torn_at = seq;
                    std::thread::yield_now()
                }
                r => return r.ok(),
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrim_common::page::Stats;

    fn published(pid: u32) -> Box<Page> {
        // SAFETY: as in `consistent`.
        let mut p: Box<Page> = Box::new(unsafe { core::mem::zeroed() });
        p.init();
        p.publish(Stats { pid, retained_bytes: 5 << 20, ..Default::default() });
        p
    }

    /// A copy caught mid-write is followed by another: one whose sequence is odd, and one whose
    /// sequence was copied even before the writer began, so that only the check word disagrees.
    #[test]
    fn a_copy_taken_mid_write_is_taken_again() {
        let good = published(42);
        for odd in [1, 0] {
            let mut copies = 0;
            let got = consistent(|p| {
                copies += 1;
                // SAFETY: both are plain data of the same type.
                unsafe { core::ptr::copy_nonoverlapping(&*good, p, 1) };
                if copies == 1 {
                    p.seq.fetch_add(odd, Relaxed);
                    p.stats[3].fetch_add(1, Relaxed);
                }
                true
            });
            assert_eq!(got.map(|s| (s.pid, s.retained_bytes)), Some((42, 5 << 20)), "odd sequence {odd}, after {copies} copies");
            assert_eq!(copies, 2, "odd sequence {odd}");
        }
    }

    /// A page never published, or one that stays mid-write, gives none, after at most COPIES.
    #[test]
    fn an_unpublished_or_stuck_page_gives_none() {
        let mut copies = 0;
        assert!(
            consistent(|_| {
                copies += 1;
                true
            })
            .is_none()
        );
        assert_eq!(copies, 1, "an unpublished page is not copied again");
        let stuck = published(7);
        stuck.seq.fetch_add(1, Relaxed);
        copies = 0;
        let got = consistent(|p| {
            copies += 1;
            // SAFETY: as above.
            unsafe { core::ptr::copy_nonoverlapping(&*stuck, p, 1) };
            true
        });
        assert!(got.is_none());
        assert_eq!(copies, COPIES);
    }

    /// A page whose check word disagrees under the same even sequence in two copies is corrupt,
    /// not mid-write (a writer makes the sequence odd first): it is not copied a third time.
    #[test]
    fn a_corrupt_page_is_given_up_at_the_second_copy() {
        let corrupt = published(7);
        corrupt.stats[3].fetch_add(1, Relaxed);
        let mut copies = 0;
        let got = consistent(|p| {
            copies += 1;
            // SAFETY: as above.
            unsafe { core::ptr::copy_nonoverlapping(&*corrupt, p, 1) };
            true
        });
        assert!(got.is_none());
        assert_eq!(copies, 2, "a corrupt page was copied {copies} times");
    }
}
