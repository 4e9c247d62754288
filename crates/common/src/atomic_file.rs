//! Every file memtrim writes (the CLI's, and the library's report beside its page) is replaced
//! whole: a new temporary file in the target's directory (O_EXCL|O_NOFOLLOW, so nothing planted
//! there is opened), synced, then renamed over the target. The CLI runs as root and the
//! target's directory may be writable by others: a target that is a symlink, a FIFO, a device or
//! a directory is refused, never written through.
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Replaces `path` with a file of `data` and mode `mode` (whatever the umask). `path` must be
/// absent or a regular file. On any failure `path` is left as it was and no temporary file
/// remains; the error names the path and the reason.
pub fn replace(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    refuse_unless_regular(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, mut f) = create_temporary(&dir, name, mode)?;
    let written = (|| {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()
    })();
    drop(f);
    // Checked again just before the rename, which replaces whatever entry is there by then
    // (never writing through it), so a node planted meanwhile is refused rather than removed.
    let result = written
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))
        .and_then(|()| refuse_unless_regular(path))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display())));
    match result {
        Ok(()) => {
            // the rename itself survives a crash only once the directory is synced
            let _ = std::fs::File::open(&dir).and_then(|d| d.sync_all());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Ok if `path` does not exist or is a regular file (not following a symlink).
fn refuse_unless_regular(path: &Path) -> Result<(), String> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
    };
    let t = md.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "a socket"
    };
    Err(format!("refusing to write {}: it is {what}, not a regular file (remove it, or name another file)", path.display()))
}

/// The longest part of the target's name a temporary name holds: with the rest (at most 24
/// bytes) it stays within NAME_MAX (255) whatever the target's length.
const NAME_PART: usize = 200;

/// A new file `.NAME.PID.N.tmp` in `dir` (NAME cut to NAME_PART bytes): hidden and not ending in
/// the target's extension, so that a reader of `*.prom` and the like never sees it half-written.
fn create_temporary(dir: &Path, name: &str, mode: u32) -> Result<(PathBuf, std::fs::File), String> {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = &name[..name.floor_char_boundary(NAME_PART)];
    let mut last = None;
    for n in 0..16u32 {
        let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), seed.wrapping_add(n)));
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            // something already has this name: leave it alone and take another
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("cannot create a temporary file in {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a temporary file in {}: {}", dir.display(), last.map_or_else(String::new, |e| e.to_string())))
}
