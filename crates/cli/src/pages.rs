//! Finding and reading the stats pages in MEMTRIM_SHM_DIR, from outside the processes.
//!
//! Pages are in per-user directories `memtrim-UID` (0700, UID's: nobody else can plant a name
//! there), or directly in the directory (the layout of older libraries). Nothing is trusted: a
//! per-user directory must be a directory of its UID closed to others; a name is only a
//! candidate; the file must be a regular file (never a symlink: fstatat without following,
//! then openat with O_NOFOLLOW, then fstat), exactly page::FILE_BYTES long, owned by the caller
//! (root may read everyone's) and by the process it names (or root), and carry a consistent
//! snapshot (seqlock + check word) whose pid and start time agree with the name. Pages are
//! read with pread, never through a mapping (their owner may truncate them: SIGBUS). Who the
//! process is (ppid, comm, uid) and its RSS come from /proc, not from the page. Whatever the
//! content, a page is classified and never crashes the reader.
use memtrim_common::page::{self, Page, ReadError, Stats};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/dev/shm";

/// `--dir DIR`, else MEMTRIM_SHM_DIR, else /dev/shm.
pub fn dir(opt: Option<&Path>) -> PathBuf {
    match opt {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os("MEMTRIM_SHM_DIR").filter(|v| !v.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(DEFAULT_DIR),
        },
    }
}

pub fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The pid exists, is not a zombie, and started at the time in the page's name.
    Live,
    /// The process died (killed before it could unlink its page) or the pid was reused.
    Gone,
}

/// A page read successfully.
pub struct Entry {
    pub path: PathBuf,
    pub state: State,
    pub stats: Stats,
}

/// Why a candidate is not listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    Gone,
    /// The process lives on, but no longer maps its page (it exec'd a program that does not
    /// run the library): nothing will update or remove the page.
    Abandoned,
    /// Another user's page (only its owner or root may read it).
    OtherUser(u32),
    PermissionDenied,
    NotRegular,
    OtherLayout(u32),
    /// Created but not yet published (the worker is about to write it).
    Starting,
    Torn,
    Corrupt(String),
    Io(String),
    /// A per-user page directory that is not its user's, or is open to others: not read.
    BadDir(String),
}

impl Skip {
    /// Short words for the one-line summary on stderr.
    fn category(&self) -> &'static str {
        match self {
            Skip::Gone => "gone (process exited without removing it; `memtrim clean` removes them)",
            Skip::Abandoned => "abandoned (process runs on without the library, after an exec; `memtrim clean` removes them)",
            Skip::OtherUser(_) | Skip::PermissionDenied => "of other users (unreadable)",
            Skip::NotRegular => "not regular files (symlinks or others, not followed)",
            Skip::OtherLayout(_) => "of another layout version (another memtrim version)",
            Skip::Starting => "not yet published",
            Skip::Torn => "torn (changing too fast to read, or corrupt)",
            Skip::Corrupt(_) => "corrupt",
            Skip::Io(_) => "unreadable",
            Skip::BadDir(_) => "per-user directories not to be trusted (not read)",
        }
    }

    /// For one page, in a sentence.
    pub fn describe(&self) -> String {
        match self {
            Skip::Gone => "its process is gone (stale page; `memtrim clean` removes it)".into(),
            Skip::Abandoned => {
                "its process no longer has the page mapped and stopped updating it (it exec'd a program without the library); `memtrim clean` removes it".into()
            }
            Skip::OtherUser(uid) => format!("it belongs to uid {uid}; only its owner or root can read it"),
            Skip::PermissionDenied => "permission denied; only the page's owner or root can read it".into(),
            Skip::NotRegular => "it is not a regular file (a symlink or other file is never followed)".into(),
            Skip::OtherLayout(v) => format!("its layout version is {v}, this memtrim reads version {}", page::LAYOUT_VERSION),
            Skip::Starting => "the process has not published it yet".into(),
            Skip::Torn => "no consistent snapshot could be read (torn or corrupt)".into(),
            Skip::Corrupt(why) => format!("corrupt: {why}"),
            Skip::Io(e) => e.clone(),
            Skip::BadDir(why) => format!("a per-user page directory {why}; nothing in it is read"),
        }
    }
}

pub struct Scan {
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    pub skipped: Vec<(PathBuf, Skip)>,
}

impl Scan {
    pub fn live(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.state == State::Live)
    }

    /// One line for stderr: how many pages were skipped and why, or None.
    pub fn skipped_summary(&self, cmd: &str) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let mut cats: Vec<(&'static str, usize)> = Vec::new();
        for (_, s) in &self.skipped {
            match cats.iter_mut().find(|(c, _)| *c == s.category()) {
                Some((_, n)) => *n += 1,
                None => cats.push((s.category(), 1)),
            }
        }
        let n = self.skipped.len();
        let parts: Vec<String> = cats.iter().map(|(c, k)| format!("{k} {c}")).collect();
        Some(format!("memtrim {cmd}: skipped {n} page{} in {}: {}", if n == 1 { "" } else { "s" }, self.dir.display(), parts.join(", ")))
    }
}

/// What /proc says about a pid.
pub struct ProcInfo {
    pub state: char,
    pub start_ticks: u64,
}

pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may itself hold spaces and parentheses.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcInfo { state: f.first()?.chars().next()?, start_ticks: f.get(19)?.parse().ok()? })
}

/// Whether the process named by (pid, start) still runs (a zombie has finished).
pub fn is_live(pid: u32, start_ticks: u64) -> bool {
    pid != 0 && proc_info(pid).is_some_and(|p| p.start_ticks == start_ticks && !matches!(p.state, 'Z' | 'X' | 'x'))
}

/// Who a live process is, from /proc (never from its page: a page is its process's own claim).
pub struct Identity {
    pub ppid: u32,
    pub comm: [u8; 16],
    /// The effective uid.
    pub uid: u32,
    /// VmRSS, bytes (0 for a process without memory of its own).
    pub rss_bytes: u64,
}

pub fn identity(pid: u32) -> Option<Identity> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.as_bytes();
    let mut comm = [0u8; 16];
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name[..n]);
    let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.split_whitespace());
    let uid = field("Uid:")?.nth(1)?.parse().ok()?;
    let rss_bytes = field("VmRSS:").and_then(|mut v| v.next()?.parse::<u64>().ok()).map_or(0, |k| k << 10);
    Some(Identity { ppid, comm, uid, rss_bytes })
}

/// `stats` of the live process `pid` read from a page owned by `owner`, with who the process
/// is (ppid, comm, uid) and its RSS taken from /proc; or why the page is not the process's. Only
/// the process's user can have written its page (or root, for a process that dropped
/// privileges after creating it): a page another user planted for it is refused.
pub fn verified(mut stats: Stats, pid: u32, owner: u32) -> Result<Stats, Skip> {
    let id = identity(pid).ok_or(Skip::Gone)?;
    if owner != id.uid && owner != 0 {
        return Err(Skip::Corrupt(format!("owned by uid {owner}, but process {pid} runs as uid {}", id.uid)));
    }
    stats.ppid = id.ppid;
    stats.comm = id.comm;
    stats.uid = id.uid;
    stats.rss_bytes = id.rss_bytes;
    Ok(stats)
}

/// A page opened from outside. It is never read through a mapping: its owner can truncate it
/// at any moment, and a read past the end of a mapped file is SIGBUS. Reads are preads into a
/// copy and requests pwrites of one control word; a read-write page keeps a mapping only for
/// the address futex(2) keys on (the kernel touches it, and gives EFAULT when the file is
/// truncated), never dereferenced here.
pub struct Opened {
    fd: std::os::fd::OwnedFd,
    /// The directory it was checked and opened in, and its name there: files beside it are
    /// reached through this descriptor, never through the path again (whose owner could have
    /// swapped the directory for a symlink since).
    dir: std::os::fd::OwnedFd,
    name: CString,
    futex_base: Option<*mut libc::c_void>,
    pub uid: u32,
    /// The file's inode, to find it in the process's mappings.
    pub ino: u64,
    /// The file's change time (creation, for a page never published), unix ms.
    pub ctime_ms: u64,
}

/// The offset in a page file of a control word (`offset_of!(Control, field)`).
pub fn control_offset(field: usize) -> usize {
    core::mem::offset_of!(Page, control) + field
}

impl Opened {
    /// A copy of the whole page as it is now; Err if the file is shorter than a page.
    pub fn copy(&self) -> Result<Box<Page>, Skip> {
        // SAFETY: Page is plain data (integers and atomics), valid all-zero.
        let mut page: Box<Page> = Box::new(unsafe { core::mem::zeroed() });
        let len = core::mem::size_of::<Page>();
        // SAFETY: the buffer is the Box's, len bytes long.
        let n = unsafe { libc::pread(self.raw(), &mut *page as *mut Page as *mut libc::c_void, len, 0) };
        if n != len as isize {
            return Err(Skip::Corrupt(format!("shorter than a page ({n} bytes read)")));
        }
        Ok(page)
    }

    /// The control word at `offset` (see `control_offset`).
    pub fn control(&self, offset: usize) -> std::io::Result<u32> {
        let mut v = [0u8; 4];
        // SAFETY: v is 4 bytes.
        let n = unsafe { libc::pread(self.raw(), v.as_mut_ptr() as *mut libc::c_void, 4, offset as libc::off_t) };
        match n {
            4 => Ok(u32::from_ne_bytes(v)),
            n if n < 0 => Err(std::io::Error::last_os_error()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the page was truncated")),
        }
    }

    /// Stores `v` into the control word at `offset` (a page opened read-write). A single
    /// aligned 4-byte write: the worker never sees half of it.
    pub fn set_control(&self, offset: usize, v: u32) -> std::io::Result<()> {
        // SAFETY: the bytes are 4 long.
        let n = unsafe { libc::pwrite(self.raw(), v.to_ne_bytes().as_ptr() as *const libc::c_void, 4, offset as libc::off_t) };
        match n {
            4 => Ok(()),
            n if n < 0 => Err(std::io::Error::last_os_error()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the page was truncated")),
        }
    }

    /// Removes the file named the page's name followed by `suffix` ("" for the page itself) in
    /// the directory the page was opened in.
    pub fn remove(&self, suffix: &str) -> std::io::Result<()> {
        let name = self.beside(suffix)?;
        // SAFETY: dir is open; name is a valid C string.
        if unsafe { libc::unlinkat(std::os::fd::AsRawFd::as_raw_fd(&self.dir), name.as_ptr(), 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Opens for reading, without following a symlink nor blocking on a FIFO, the file named
    /// the page's name followed by `suffix` in the directory the page was opened in.
    pub fn open_beside(&self, suffix: &str) -> std::io::Result<std::fs::File> {
        let name = self.beside(suffix)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: dir is open; name is a valid C string.
        let fd = unsafe { libc::openat(std::os::fd::AsRawFd::as_raw_fd(&self.dir), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned from here on.
        Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }

    fn beside(&self, suffix: &str) -> std::io::Result<CString> {
        let mut name = self.name.as_bytes().to_vec();
        name.extend_from_slice(suffix.as_bytes());
        CString::new(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    }

    /// The address of the control word at `offset` in the futex mapping (a page opened
    /// read-write): for futex(2) only, never to be read or written here.
    pub fn futex_addr(&self, offset: usize) -> Option<usize> {
        self.futex_base.map(|b| b as usize + offset)
    }

    fn raw(&self) -> libc::c_int {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(b) = self.futex_base {
            // SAFETY: b/len from a successful mmap.
            unsafe { libc::munmap(b, page::FILE_BYTES) };
        }
    }
}

fn cpath(p: &Path) -> Result<CString, Skip> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Skip::Corrupt("NUL in path".into()))
}

fn io_skip(path: &Path, what: &str, e: std::io::Error) -> Skip {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => Skip::PermissionDenied,
        Some(libc::ELOOP) => Skip::NotRegular,
        _ => Skip::Io(format!("{}: {what}{e}", path.display())),
    }
}

/// The uid of the per-user directory holding the page at `path`; None in the flat layout.
fn dir_user(path: &Path) -> Option<u32> {
    path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).and_then(page::parse_dir_name)
}

/// Opens the directory holding the page at `path`: a per-user directory (`memtrim-UID`) is
/// opened without following a symlink and must still be UID's and closed to others.
fn open_parent(path: &Path) -> Result<std::os::fd::OwnedFd, Skip> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let owner = dir_user(path);
    let c = cpath(parent)?;
    let nofollow = if owner.is_some() { libc::O_NOFOLLOW } else { 0 };
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | nofollow) };
    if fd < 0 {
        return Err(io_skip(parent, "", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned from here on.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if let Some(uid) = owner {
        let md = std::fs::File::from(fd.try_clone().map_err(|e| io_skip(parent, "", e))?).metadata().map_err(|e| io_skip(parent, "", e))?;
        user_dir_problem(&md, uid).map_or(Ok(()), |why| Err(Skip::BadDir(why)))?;
    }
    Ok(fd)
}

/// Why a per-user directory of `uid` is not to be trusted, or None.
fn user_dir_problem(md: &std::fs::Metadata, uid: u32) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if !md.file_type().is_dir() {
        Some("not a directory".into())
    } else if md.uid() != uid {
        Some(format!("owned by uid {}, not by uid {uid} whose name it has", md.uid()))
    } else if md.permissions().mode() & 0o077 != 0 {
        Some(format!("open to other users (mode {:o})", md.permissions().mode() & 0o777))
    } else {
        None
    }
}

/// Opens the page at `path`, read-only or (for requests) read-write, after the checks above.
/// Root may open anyone's page; others only their own.
pub fn open(path: &Path, write: bool) -> Result<Opened, Skip> {
    let me = euid();
    let dir = open_parent(path)?;
    let name = cpath(Path::new(path.file_name().ok_or_else(|| Skip::Corrupt("no file name".into()))?))?;
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: stat is plain data, valid all-zero.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: dir is open, name a valid C string, st a valid out-pointer.
    if unsafe { libc::fstatat(std::os::fd::AsRawFd::as_raw_fd(&dir), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io_skip(path, "", std::io::Error::last_os_error()));
    }
    // Checked before opening too: a FIFO would block the open, another user's page fail it.
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Skip::NotRegular);
    }
    if me != 0 && st.st_uid != me {
        return Err(Skip::OtherUser(st.st_uid));
    }
    // SAFETY: as above.
    let fd = unsafe { libc::openat(std::os::fd::AsRawFd::as_raw_fd(&dir), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io_skip(path, "", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just opened and is owned from here on.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: fd is open; st is a valid out-pointer.
    if unsafe { libc::fstat(raw, &mut st) } != 0 {
        return Err(io_skip(path, "fstat: ", std::io::Error::last_os_error()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Skip::NotRegular);
    }
    if me != 0 && st.st_uid != me {
        return Err(Skip::OtherUser(st.st_uid));
    }
    if st.st_size != page::FILE_BYTES as libc::off_t {
        return Err(Skip::Corrupt(format!("{} bytes long, a page is {}", st.st_size, page::FILE_BYTES)));
    }
    let futex_base = if write {
        // SAFETY: a fresh shared mapping of the open file; never dereferenced (see Opened).
        let p = unsafe { libc::mmap(core::ptr::null_mut(), page::FILE_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, raw, 0) };
        if p == libc::MAP_FAILED {
            return Err(io_skip(path, "mmap: ", std::io::Error::last_os_error()));
        }
        Some(p)
    } else {
        None
    };
    let ctime_ms = (st.st_ctime.max(0) as u64) * 1000 + (st.st_ctime_nsec.max(0) as u64) / 1_000_000;
    Ok(Opened { fd, dir, name, futex_base, uid: st.st_uid, ino: st.st_ino, ctime_ms })
}

/// A consistent snapshot of an opened page that agrees with its name, or why not. Each try
/// reads a fresh copy: the seqlock and the check word then judge the copy.
pub fn snapshot(m: &Opened, pid: u32, start_ticks: u64) -> Result<Stats, Skip> {
    let mut published = false;
    for _ in 0..100 {
        let p = m.copy()?;
        let seq = p.seq.load(core::sync::atomic::Ordering::Relaxed);
        published |= seq != 0;
        if seq & 1 == 1 {
            std::thread::yield_now();
            continue;
        }
        return match p.read() {
            Err(ReadError::NotAPage) => Err(Skip::Corrupt("no memtrim magic".into())),
            Err(ReadError::OtherLayout(v)) => Err(Skip::OtherLayout(v)),
            Err(ReadError::BadSize { offset, size }) => Err(Skip::Corrupt(format!(
                "its header puts {size} bytes of stats at offset {offset}; this memtrim reads at least {} inside {} bytes",
                core::mem::size_of::<Stats>(),
                page::FILE_BYTES
            ))),
            Err(ReadError::Torn) if seq == 0 => Err(Skip::Starting),
            Err(ReadError::Torn) => {
                std::thread::yield_now();
                continue;
            }
            Ok(s) if s.pid != pid || s.start_ticks != start_ticks => {
                Err(Skip::Corrupt(format!("it describes pid {} started at {}, not its name's", s.pid, s.start_ticks)))
            }
            Ok(s) => Ok(s),
        };
    }
    Err(if published { Skip::Torn } else { Skip::Starting })
}

/// Reads one candidate page named for (pid, start).
pub fn load(path: &Path, pid: u32, start_ticks: u64, include_gone: bool) -> Result<Entry, Skip> {
    let live = is_live(pid, start_ticks);
    if !live && !include_gone {
        // A gone process's page is not read at all, only reported (its content no longer
        // matters, and the writer may have died mid-publication).
        return match std::fs::symlink_metadata(path) {
            Ok(md) if !md.file_type().is_file() => Err(Skip::NotRegular),
            _ => Err(Skip::Gone),
        };
    }
    let m = open(path, false)?;
    let snap = snapshot(&m, pid, start_ticks);
    if live && abandoned(&m, &snap, pid) {
        return if include_gone {
            match snap {
                Ok(stats) => Ok(Entry { path: path.to_path_buf(), state: State::Gone, stats: unverified(stats, m.uid) }),
                Err(_) => Err(Skip::Abandoned),
            }
        } else {
            Err(Skip::Abandoned)
        };
    }
    let stats = match snap {
        Err(_) if !live => return Err(Skip::Gone),
        r => r?,
    };
    if !live {
        return Ok(Entry { path: path.to_path_buf(), state: State::Gone, stats: unverified(stats, m.uid) });
    }
    let stats = match verified(stats, pid, m.uid) {
        // It exited since it was judged live.
        Err(Skip::Gone) if include_gone => return Ok(Entry { path: path.to_path_buf(), state: State::Gone, stats: unverified(stats, m.uid) }),
        r => r?,
    };
    Ok(Entry { path: path.to_path_buf(), state: State::Live, stats })
}

/// The page of a process /proc no longer describes: the user is the file's owner; the rest is
/// what the page said.
fn unverified(mut stats: Stats, owner: u32) -> Stats {
    stats.uid = owner;
    stats
}

/// Whether a live process's page is abandoned: not updated for several intervals (or, never
/// published, created long ago) and no longer mapped by the process, as after an exec into a
/// program without the library. A process that is merely stopped or slow still maps its page.
pub fn abandoned(m: &Opened, snap: &Result<Stats, Skip>, pid: u32) -> bool {
    let now = now_ms();
    let (age, interval) = match snap {
        Ok(s) => (now.saturating_sub(s.updated_at_ms), s.interval_ms),
        Err(Skip::Starting) => (now.saturating_sub(m.ctime_ms), 1000),
        Err(_) => return false,
    };
    age > interval.saturating_mul(3).saturating_add(2000) && maps_inode(pid, m.ino) == Some(false)
}

/// Whether the process maps a file with this inode (None: its maps cannot be read).
fn maps_inode(pid: u32, ino: u64) -> Option<bool> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let ino = ino.to_string();
    Some(maps.lines().any(|l| l.split_whitespace().nth(4) == Some(ino.as_str())))
}

/// The inode of the page at `path`, whose name is a live process's, if the process has
/// abandoned it.
pub fn abandoned_inode(path: &Path, pid: u32, start_ticks: u64) -> Option<u64> {
    let m = open(path, false).ok()?;
    let snap = snapshot(&m, pid, start_ticks);
    abandoned(&m, &snap, pid).then_some(m.ino)
}

/// The directories that hold pages in `dir`: every per-user directory `memtrim-UID` that is a
/// directory (not a symlink) of UID, closed to others, then `dir` itself (the flat layout of
/// older libraries: last, so that a name planted there for a process with a page of its own is
/// found second); then the per-user directories passed over, with why.
fn page_dirs(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Passed)> {
    let (me, mut good, mut bad) = (euid(), Vec::new(), Vec::new());
    for de in std::fs::read_dir(dir)? {
        let Ok(de) = de else { continue };
        let Some(uid) = de.file_name().to_str().and_then(page::parse_dir_name) else { continue };
        let path = de.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
        match user_dir_problem(&md, uid) {
            Some(why) => bad.push((path, Skip::BadDir(why))),
            None if me != 0 && uid != me => bad.push((path, Skip::OtherUser(uid))),
            None => good.push(path),
        }
    }
    good.push(dir.to_path_buf());
    Ok((good, bad))
}

/// The candidate page files in `dir` and its per-user directories: (path, pid, start ticks),
/// sorted by pid; then what was passed over (see `page_dirs`).
fn listing(dir: &Path) -> std::io::Result<(Vec<Candidate>, Passed)> {
    let (v, passed) = named(dir, page::parse_file_name)?;
    let mut v: Vec<Candidate> = v.into_iter().map(|(path, (pid, start))| (path, pid, start)).collect();
    v.sort_by_key(|c| (c.1, c.2));
    Ok((v, passed))
}

/// The limit's claim files of masters (`stagger.PID.START`) in the per-user directories of
/// `dir`.
pub fn stagger_files(dir: &Path) -> std::io::Result<Vec<Candidate>> {
    Ok(named(dir, page::parse_stagger_name)?.0.into_iter().map(|(path, (pid, start))| (path, pid, start)).collect())
}

/// The claim files of cgroup budgets (`budget.HASH`) in the per-user directories of `dir`.
pub fn budget_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(named(dir, |n| page::is_budget_name(n).then_some(()))?.0.into_iter().map(|(path, ())| path).collect())
}

/// The files in the per-user directories of `dir` whose names `parse` reads.
fn named<T>(dir: &Path, parse: fn(&str) -> Option<T>) -> std::io::Result<(Vec<(PathBuf, T)>, Passed)> {
    let (dirs, mut passed) = page_dirs(dir)?;
    let mut v = Vec::new();
    for d in dirs {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == dir => return Err(e),
            Err(e) => {
                passed.push((d.clone(), io_skip(&d, "", e)));
                continue;
            }
        };
        for de in entries {
            let Ok(de) = de else { continue };
            let name = de.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(t) = parse(name) {
                v.push((de.path(), t));
            }
        }
    }
    Ok((v, passed))
}

/// A page file's path, and the (pid, start ticks) its name says.
pub type Candidate = (PathBuf, u32, u64);
/// What a listing passed over, with why.
type Passed = Vec<(PathBuf, Skip)>;

/// The file at `path` (inode `ino`) opened, if it is a page: a regular file of a page's length
/// that starts with the magic, owned by the user of the per-user directory it is in; or why not.
pub fn page_file(path: &Path, ino: u64) -> Result<Opened, String> {
    let m = open(path, false).map_err(|s| s.describe())?;
    let owner = dir_user(path);
    if m.ino != ino {
        Err("replaced meanwhile".into())
    } else if owner.is_some_and(|uid| uid != m.uid) {
        Err(format!("owned by uid {}, not by its directory's user", m.uid))
    } else if m.copy().map_err(|s| s.describe())?.magic != page::MAGIC {
        Err("not a page (no memtrim magic)".into())
    } else {
        Ok(m)
    }
}

/// The candidate page files in `dir` and its per-user directories: (path, pid, start ticks),
/// sorted by pid.
pub fn candidates(dir: &Path) -> std::io::Result<Vec<Candidate>> {
    Ok(listing(dir)?.0)
}

/// Every page in `dir`, read and classified. Gone pages are listed only with `include_gone`.
pub fn scan(dir: &Path, include_gone: bool) -> std::io::Result<Scan> {
    let (cands, skipped) = listing(dir)?;
    let mut scan = Scan { dir: dir.to_path_buf(), entries: Vec::new(), skipped };
    for (path, pid, start) in cands {
        match load(&path, pid, start, include_gone) {
            Ok(e) => scan.entries.push(e),
            Err(s) => scan.skipped.push((path, s)),
        }
    }
    Ok(scan)
}

/// `scan` for `memtrim CMD`, which says on stderr why `dir` cannot be read (None), or which pages
/// it skipped.
pub fn scan_saying(dir: &Path, include_gone: bool, cmd: &str) -> Option<Scan> {
    let scan = match scan(dir, include_gone) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("memtrim {cmd}: cannot read {}: {e}", dir.display());
            return None;
        }
    };
    if let Some(line) = scan.skipped_summary(cmd) {
        eprintln!("{line}");
    }
    Some(scan)
}

/// The page file of the live process `pid` in `dir` (judged by its name only), or a sentence
/// saying why there is none.
pub fn locate(dir: &Path, pid: u32) -> Result<(PathBuf, u64), String> {
    let cands = candidates(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    // A name in another user's directory is not this process's page (whatever it holds, see
    // `verified`), and must not hide the one that is.
    let uid = identity(pid).map(|id| id.uid);
    let mine: Vec<_> = cands.into_iter().filter(|c| c.1 == pid && dir_user(&c.0).is_none_or(|u| u == 0 || Some(u) == uid)).collect();
    if let Some((path, _, start)) = mine.iter().find(|c| is_live(c.1, c.2)) {
        return Ok((path.clone(), *start));
    }
    if mine.is_empty() {
        let me = euid();
        if let Some(id) = identity(pid).filter(|id| me != 0 && id.uid != me) {
            return Err(format!("permission denied: pid {pid} runs as uid {}, you are uid {me}; only its owner or root can read its page", id.uid));
        }
        return Err(format!(
            "no page for pid {pid} in {} (is it running under libmemtrim.so with MEMTRIM_STATS=1, and with this MEMTRIM_SHM_DIR? --dir DIR)",
            dir.display()
        ));
    }
    let names: Vec<String> = mine.iter().map(|c| c.0.display().to_string()).collect();
    Err(format!("process {pid} is gone: stale page {} (`memtrim clean` removes it)", names.join(", ")))
}

/// The live page of `pid` in `dir`, read, or a sentence saying why there is none.
pub fn find(dir: &Path, pid: u32) -> Result<Entry, String> {
    let (path, start) = locate(dir, pid)?;
    load(&path, pid, start, false).map_err(|s| format!("cannot use {}: {}", path.display(), s.describe()))
}

/// Terminal-safe text: control characters (an escape sequence in a process name) and Unicode's
/// bidirectional controls (which reorder the rest of a line on a terminal that honours them)
/// become '?'.
pub fn printable(s: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    s.chars().map(|c| if c.is_control() || bidi(c) { '?' } else { c }).collect()
}
