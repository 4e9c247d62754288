//! The process's stats page on disk: `MEMTRIM_SHM_DIR/memtrim-EUID/memtrim.PID.START`, in a
//! directory of our own (0700: in a shared sticky directory another user could otherwise plant
//! the predictable name first), created 0600 with O_EXCL and O_NOFOLLOW, mapped shared,
//! unlinked at exit.
use core::sync::atomic::{AtomicPtr, Ordering::*};
use memtrim_common::page::{self, Page};
use std::ffi::CString;

pub struct PageFile {
    page: *mut Page,
    path: CString,
}

/// The page of this process, for the exit hook and the fork hook.
static CURRENT: AtomicPtr<PageFile> = AtomicPtr::new(core::ptr::null_mut());

pub(crate) fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

pub(crate) fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

/// The per-user directory of this process's pages (and their reports) in `dir`.
pub fn user_dir(dir: &str) -> String {
    format!("{dir}/{}", page::dir_name(euid()))
}

/// A file descriptor closed on drop.
pub(crate) struct Fd(pub(crate) libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: an fd this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// Opens the per-user directory `path`, made 0700 if missing. An existing one is used only if
/// it is a directory (not a symlink) of our euid closed to others; it is never changed.
pub(crate) fn open_user_dir(path: &str) -> Result<Fd, String> {
    let c = CString::new(path).map_err(|_| format!("bad path {path:?}"))?;
    // SAFETY: c is a valid C string.
    let made = unsafe { libc::mkdir(c.as_ptr(), 0o700) } == 0;
    if !made && errno().raw_os_error() != Some(libc::EEXIST) {
        return Err(format!("cannot create {path}: {}", errno()));
    }
    // SAFETY: as above.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    // SAFETY: stat is plain data, valid all-zero.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    if fd < 0 {
        let e = errno();
        // SAFETY: as above; st is a valid out-pointer.
        let owner = if unsafe { libc::lstat(c.as_ptr(), &mut st) } == 0 { format!(", owned by uid {}", st.st_uid) } else { String::new() };
        return Err(format!("{path} is not a directory of ours ({e}{owner})"));
    }
    let fd = Fd(fd);
    // SAFETY: fd is open; st is a valid out-pointer.
    if unsafe { libc::fstat(fd.0, &mut st) } != 0 {
        return Err(format!("{path}: fstat: {}", errno()));
    }
    // A umask may have taken bits from a directory made here: it is ours to set.
    // SAFETY: fd is open.
    if made && unsafe { libc::fchmod(fd.0, 0o700) } != 0 {
        return Err(format!("{path}: chmod: {}", errno()));
    }
    let mode = if made { 0o700 } else { st.st_mode & 0o777 };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR || st.st_uid != euid() || mode & 0o077 != 0 {
        return Err(format!("{path} is owned by uid {} with mode {:o}, not a private directory of uid {}", st.st_uid, mode, euid()));
    }
    Ok(fd)
}

impl PageFile {
    /// Creates the page of (pid, start) in the per-user directory in `dir` and makes it the
    /// current one.
    pub fn create(dir: &str, pid: u32, start_ticks: u64) -> Result<&'static PageFile, String> {
        let udir = user_dir(dir);
        let dfd = open_user_dir(&udir)?;
        let name = CString::new(page::file_name(pid, start_ticks)).map_err(|_| "bad page name".to_string())?;
        let path = format!("{udir}/{}", page::file_name(pid, start_ticks));
        let cpath = CString::new(path.clone()).map_err(|_| format!("bad path {path:?}"))?;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: dfd is open; name is a valid C string.
        let mut fd = unsafe { libc::openat(dfd.0, name.as_ptr(), flags, 0o600) };
        if fd < 0 && errno().raw_os_error() == Some(libc::EEXIST) {
            // Only this process (before an exec) can have made this name in our own directory.
            // SAFETY: as above.
            unsafe {
                libc::unlinkat(dfd.0, name.as_ptr(), 0);
                fd = libc::openat(dfd.0, name.as_ptr(), flags, 0o600);
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

    /// Only the worker thread publishes into the page (docs/DESIGN.md: one writer under the
    /// seqlock); every word it writes after `init` is atomic.
    pub fn page(&self) -> &Page {
        // SAFETY: the mapping lives as long as the process (it is never unmapped while the
        // worker that owns it runs).
        unsafe { &*self.page }
    }
}

/// At exit: the name goes, and a report left unread beside it; the mapping stays (the worker
/// may still be writing to it).
pub fn unlink_current() {
    let pf = CURRENT.swap(core::ptr::null_mut(), AcqRel);
    if !pf.is_null() {
        // SAFETY: pf came from Box::leak in create.
        let path = unsafe { &(*pf).path };
        // SAFETY: a C string.
        unsafe { libc::unlink(path.as_ptr()) };
        let mut report = path.as_bytes().to_vec();
        report.extend_from_slice(memtrim_common::report::SUFFIX.as_bytes());
        report.push(0);
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
