//! Finding and reading the stats pages in MEMTRIM_SHM_DIR, from outside the processes.
//!
//! Nothing in the directory is trusted: a name is only a candidate; the file must be a regular
//! file (never a symlink: lstat first, then O_NOFOLLOW, then fstat), exactly page::FILE_BYTES
//! long, owned by the caller (root may read everyone's) and by the process it names (or root),
//! and carry a consistent snapshot (seqlock + check word) whose pid and start time agree with
//! the name. Whatever the content, a page is classified and never crashes the reader.
use memtrim_common::page::{self, Page, ReadError, Stats};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_DIR: &str = "/dev/shm";

/// `--dir DIR`, else MEMTRIM_SHM_DIR, else /dev/shm.
pub fn dir(opt: Option<&str>) -> PathBuf {
    match opt {
        Some(d) => PathBuf::from(d),
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
    Some(ProcInfo {
        state: f.first()?.chars().next()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

/// Whether the process named by (pid, start) still runs (a zombie has finished).
pub fn is_live(pid: u32, start_ticks: u64) -> bool {
    pid != 0 && proc_info(pid).is_some_and(|p| p.start_ticks == start_ticks && !matches!(p.state, 'Z' | 'X' | 'x'))
}

/// The real, effective, saved and filesystem uids of a process.
fn proc_uids(pid: u32) -> Option<[u32; 4]> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("Uid:"))?;
    let v: Vec<u32> = line[4..].split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (v.len() == 4).then(|| [v[0], v[1], v[2], v[3]])
}

/// A page mapped into this process; unmapped on drop.
pub struct Mapped {
    ptr: *mut libc::c_void,
    pub uid: u32,
    /// The file's inode, to find it in the process's mappings.
    pub ino: u64,
    /// The file's change time (creation, for a page never published), unix ms.
    pub ctime_ms: u64,
}

impl Mapped {
    pub fn page(&self) -> &Page {
        // SAFETY: a FILE_BYTES-long shared mapping, page-aligned, alive as long as self.
        unsafe { &*(self.ptr as *const Page) }
    }

    /// Whether the writer has published at least once.
    pub fn published(&self) -> bool {
        self.page().seq.load(core::sync::atomic::Ordering::Acquire) != 0
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: ptr/len from a successful mmap.
        unsafe { libc::munmap(self.ptr, page::FILE_BYTES) };
    }
}

fn cpath(p: &Path) -> Result<CString, Skip> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Skip::Corrupt("NUL in path".into()))
}

/// Opens and maps the page at `path`, read-only or (for trim requests) read-write, after the
/// checks above. Root may open anyone's page; others only their own.
pub fn map(path: &Path, write: bool) -> Result<Mapped, Skip> {
    let me = euid();
    let md = std::fs::symlink_metadata(path).map_err(|e| Skip::Io(format!("{}: {e}", path.display())))?;
    if !md.file_type().is_file() {
        return Err(Skip::NotRegular);
    }
    if me != 0 && md.uid() != me {
        return Err(Skip::OtherUser(md.uid()));
    }
    if md.len() != page::FILE_BYTES as u64 {
        return Err(Skip::Corrupt(format!("{} bytes long, a page is {}", md.len(), page::FILE_BYTES)));
    }
    let c = cpath(path)?;
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | if write { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Skip::PermissionDenied,
            Some(libc::ELOOP) => Skip::NotRegular,
            _ => Skip::Io(format!("{}: {e}", path.display())),
        });
    }
    // SAFETY: fd is open; st is a valid out-pointer; the fd is closed on every path.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        let checked = if libc::fstat(fd, &mut st) != 0 {
            Err(Skip::Io(format!("{}: fstat: {}", path.display(), std::io::Error::last_os_error())))
        } else if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            Err(Skip::NotRegular)
        } else if me != 0 && st.st_uid != me {
            Err(Skip::OtherUser(st.st_uid))
        } else if st.st_size != page::FILE_BYTES as libc::off_t {
            Err(Skip::Corrupt(format!("{} bytes long, a page is {}", st.st_size, page::FILE_BYTES)))
        } else {
            Ok(st.st_uid)
        };
        let ino = st.st_ino;
        let ctime_ms = (st.st_ctime.max(0) as u64) * 1000 + (st.st_ctime_nsec.max(0) as u64) / 1_000_000;
        let uid = match checked {
            Ok(uid) => uid,
            Err(e) => {
                libc::close(fd);
                return Err(e);
            }
        };
        let prot = if write { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let ptr = libc::mmap(core::ptr::null_mut(), page::FILE_BYTES, prot, libc::MAP_SHARED, fd, 0);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if ptr == libc::MAP_FAILED {
            return Err(Skip::Io(format!("{}: mmap: {err}", path.display())));
        }
        Ok(Mapped { ptr, uid, ino, ctime_ms })
    }
}

/// A consistent snapshot of a mapped page that agrees with its name, or why not.
pub fn snapshot(m: &Mapped, pid: u32, start_ticks: u64) -> Result<Stats, Skip> {
    let p = m.page();
    match p.read() {
        Err(ReadError::NotAPage) => Err(Skip::Corrupt("no memtrim magic".into())),
        Err(ReadError::OtherLayout(v)) => Err(Skip::OtherLayout(v)),
        Err(ReadError::Torn) if !m.published() => Err(Skip::Starting),
        Err(ReadError::Torn) => Err(Skip::Torn),
        Ok(s) if s.pid != pid || s.start_ticks != start_ticks => {
            Err(Skip::Corrupt(format!("it describes pid {} started at {}, not its name's", s.pid, s.start_ticks)))
        }
        Ok(s) => Ok(s),
    }
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
    let m = map(path, false)?;
    let snap = snapshot(&m, pid, start_ticks);
    if live && abandoned(&m, &snap, pid) {
        return if include_gone {
            match snap {
                Ok(stats) => Ok(Entry { path: path.to_path_buf(), state: State::Gone, stats }),
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
    if live {
        // A page another user planted for someone else's process: the page's owner must be the
        // process's user (or root, for a process that dropped privileges after starting).
        if m.uid != 0 {
            if let Some(uids) = proc_uids(pid) {
                if !uids.contains(&m.uid) {
                    return Err(Skip::Corrupt(format!("owned by uid {}, but process {pid} runs as uid {}", m.uid, uids[1])));
                }
            }
        }
    }
    Ok(Entry { path: path.to_path_buf(), state: if live { State::Live } else { State::Gone }, stats })
}

/// Whether a live process's page is abandoned: not updated for several intervals (or, never
/// published, created long ago) and no longer mapped by the process, as after an exec into a
/// program without the library. A process that is merely stopped or slow still maps its page.
pub fn abandoned(m: &Mapped, snap: &Result<Stats, Skip>, pid: u32) -> bool {
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
    let m = map(path, false).ok()?;
    let snap = snapshot(&m, pid, start_ticks);
    abandoned(&m, &snap, pid).then_some(m.ino)
}

/// The candidate page files in `dir`: (path, pid, start ticks), sorted by pid.
pub fn candidates(dir: &Path) -> std::io::Result<Vec<(PathBuf, u32, u64)>> {
    let mut v = Vec::new();
    for de in std::fs::read_dir(dir)? {
        let Ok(de) = de else { continue };
        let name = de.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((pid, start)) = page::parse_file_name(name) {
            v.push((de.path(), pid, start));
        }
    }
    v.sort_by_key(|c| (c.1, c.2));
    Ok(v)
}

/// Every page in `dir`, read and classified. Gone pages are listed only with `include_gone`.
pub fn scan(dir: &Path, include_gone: bool) -> std::io::Result<Scan> {
    let mut scan = Scan { dir: dir.to_path_buf(), entries: Vec::new(), skipped: Vec::new() };
    for (path, pid, start) in candidates(dir)? {
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
    let mine: Vec<_> = cands.into_iter().filter(|c| c.1 == pid).collect();
    if let Some((path, _, start)) = mine.iter().find(|c| is_live(c.1, c.2)) {
        return Ok((path.clone(), *start));
    }
    if mine.is_empty() {
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

/// Terminal-safe text: control characters (an escape sequence in a process name) become '?'.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}
