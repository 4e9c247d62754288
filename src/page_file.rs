//! The process's stats page on disk: created 0600 with O_EXCL and O_NOFOLLOW (a planted file
//! or symlink is never opened), mapped shared, unlinked at exit.
use core::sync::atomic::{AtomicPtr, Ordering::*};
use memtrim_common::page::{self, Page};
use std::ffi::CString;

pub struct PageFile {
    page: *mut Page,
    path: CString,
}

/// The page of this process, for the exit hook and the fork hook.
static CURRENT: AtomicPtr<PageFile> = AtomicPtr::new(core::ptr::null_mut());

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl PageFile {
    /// Creates the page of (pid, start) in `dir` and makes it the current one.
    pub fn create(dir: &str, pid: u32, start_ticks: u64) -> Result<&'static PageFile, String> {
        let path = format!("{dir}/{}", page::file_name(pid, start_ticks));
        let cpath = CString::new(path.clone()).map_err(|_| format!("bad path {path:?}"))?;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: cpath is a valid C string.
        let mut fd = unsafe { libc::open(cpath.as_ptr(), flags, 0o600) };
        if fd < 0 && errno().raw_os_error() == Some(libc::EEXIST) {
            // Only this process (before an exec) can have made this name. In a sticky directory
            // such as /dev/shm the unlink fails for another user's file, and the retry with it.
            // SAFETY: as above.
            unsafe {
                libc::unlink(cpath.as_ptr());
                fd = libc::open(cpath.as_ptr(), flags, 0o600);
            }
        }
        if fd < 0 {
            return Err(format!("cannot create {path}: {}", errno()));
        }
        // SAFETY: fd is ours; the mapping is FILE_BYTES long, as the file.
        let map = unsafe {
            let ok = libc::fchmod(fd, 0o600) == 0 && libc::ftruncate(fd, page::FILE_BYTES as libc::off_t) == 0;
            let map = if ok {
                libc::mmap(core::ptr::null_mut(), page::FILE_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
            } else {
                libc::MAP_FAILED
            };
            libc::close(fd);
            map
        };
        if map == libc::MAP_FAILED {
            let e = errno();
            // SAFETY: as above.
            unsafe { libc::unlink(cpath.as_ptr()) };
            return Err(format!("cannot map {path}: {e}"));
        }
        let page = map as *mut Page;
        // SAFETY: a fresh zeroed mapping of the right size.
        unsafe { (*page).init() };
        let pf = Box::leak(Box::new(PageFile { page, path: cpath }));
        CURRENT.store(pf, Release);
        Ok(pf)
    }

    /// Only the worker thread writes the page (DESIGN.md: one writer under the seqlock).
    #[allow(clippy::mut_from_ref)]
    pub fn page(&self) -> &mut Page {
        // SAFETY: the mapping lives as long as the process (it is never unmapped while the
        // worker that owns it runs).
        unsafe { &mut *self.page }
    }
}

/// At exit: the name goes, and a report left unread beside it; the mapping stays (the worker
/// may still be writing to it).
pub fn unlink_current() {
    let pf = CURRENT.swap(core::ptr::null_mut(), AcqRel);
    if !pf.is_null() {
        // SAFETY: pf came from Box::leak in create.
        let path = unsafe { &(*pf).path };
        unsafe { libc::unlink(path.as_ptr()) };
        let mut report = path.as_bytes().to_vec();
        report.extend_from_slice(b".report\0");
        // SAFETY: a NUL-terminated path.
        unsafe { libc::unlink(report.as_ptr().cast()) };
    }
}

/// In a forked child: the parent's page is shared with the parent and stays the parent's; drop
/// the child's mapping of it without touching the file.
pub fn forget_in_child() {
    let pf = CURRENT.swap(core::ptr::null_mut(), AcqRel);
    if !pf.is_null() {
        // SAFETY: pf came from Box::leak; no thread of the child uses it.
        unsafe {
            libc::munmap((*pf).page as *mut libc::c_void, page::FILE_BYTES);
            drop(Box::from_raw(pf));
        }
    }
}
