//! `memtrim run [OPTIONS] -- CMD ARGS...`: replaces itself with CMD, libmemtrim.so prepended to
//! LD_PRELOAD (what was there stays), so CMD keeps memtrim's pid and its exit status is CMD's.
use crate::cli;
use clap::builder::{OsStringValueParser, TypedValueParser};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct Opts {
    /// libmemtrim.so to preload (default: beside this binary, or in ../lib/ or ../lib/memtrim/
    /// from it, as `memtrim --version` shows)
    #[arg(long, value_name = "PATH")]
    lib: Option<PathBuf>,
    /// Set MEMTRIM_NAME=VALUE for CMD (repeatable), e.g. --set REPORT=1
    #[arg(long, value_name = "NAME=VALUE", value_parser = OsStringValueParser::new().try_map(|s| setting(&s).ok_or("takes NAME=VALUE")))]
    set: Vec<(String, OsString)>,
    /// The command and its arguments, passed on as they are (memtrim's own options too); put --
    /// before a CMD that starts with -
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    command: Vec<OsString>,
}

pub fn main(o: Opts) -> i32 {
    let Opts { lib, set: sets, command } = o;
    let Some((prog, rest)) = command.split_first() else { cli::usage_error("run", "no command given") };
    let lib = match lib.or_else(find_lib) {
        Some(l) if l.exists() => l,
        _ => {
            eprintln!("memtrim run: libmemtrim.so not found ({SEARCHED}); pass --lib PATH");
            return 2;
        }
    };
    let lib = match preload_entry(&lib) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("memtrim run: {e}");
            return 2;
        }
    };
    let preload = match std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        Some(old) => {
            let mut p = lib.into_os_string();
            p.push(":");
            p.push(old);
            p
        }
        None => lib.into_os_string(),
    };
    // The command's environment is this one as getenv reads it: a name given twice keeps its
    // first value (Command on its own would keep the last), as the library would have read it.
    let mut inherited: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    inherited.reverse();
    let err = Command::new(prog).args(rest).env_clear().envs(inherited).env("LD_PRELOAD", preload).envs(sets).exec();
    eprintln!("memtrim run: cannot run {}: {err}", prog.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }
}

/// `NAME=VALUE` as MEMTRIM_NAME and its value (which, like the command's arguments, need not be
/// UTF-8).
fn setting(s: &OsStr) -> Option<(String, OsString)> {
    let b = s.as_bytes();
    let eq = b.iter().position(|&c| c == b'=')?;
    let name = std::str::from_utf8(b.get(..eq)?).ok()?;
    Some((format!("MEMTRIM_{}", name.trim_start_matches("MEMTRIM_")), OsStr::from_bytes(b.get(eq + 1..)?).to_os_string()))
}

/// `lib` as an LD_PRELOAD entry: absolute (a relative entry is looked up from the command's
/// working directory), free of what ld.so splits the list at (spaces and colons), or the
/// pieces of the path would be loaded instead, a relative piece from the working directory, and
/// of `$`, or ld.so would expand $ORIGIN (the command's directory), $LIB or $PLATFORM in it and
/// load another file, or none. A library whose path holds one of those (a venv in "My
/// Projects") is preloaded through a link in a fresh private directory (mkdtemp, 0700) under
/// $XDG_RUNTIME_DIR or /tmp, which stays for the command's children to load it too.
fn preload_entry(lib: &Path) -> Result<PathBuf, String> {
    let abs = lib.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", lib.display()))?;
    if preloadable(&abs) {
        return Ok(abs);
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|d| d.is_absolute() && preloadable(d)).unwrap_or_else(|| "/tmp".into());
    let link = private_dir(&base).map(|d| d.join("libmemtrim.so"));
    match link {
        Some(l) if std::os::unix::fs::symlink(&abs, &l).is_ok() && preloadable(&l) => Ok(l),
        _ => Err(format!(
            "refusing to preload {}: LD_PRELOAD cannot hold a path with a space, a colon or a $ (ld.so would split it and load the pieces, or expand $ORIGIN, $LIB or $PLATFORM in it), and no link to it could be made in {}; install libmemtrim.so in a directory without them, or pass --lib PATH",
            abs.display(),
            base.display()
        )),
    }
}

fn preloadable(p: &Path) -> bool {
    !p.as_os_str().as_bytes().iter().any(|b| matches!(b, b' ' | b':' | b'$'))
}

/// A new directory of this user's alone, `memtrim-run-XXXXXX` in `base`.
fn private_dir(base: &Path) -> Option<PathBuf> {
    let mut template = base.join("memtrim-run-XXXXXX").into_os_string().into_vec();
    template.push(0);
    // SAFETY: a writable NUL-terminated template, which mkdtemp fills in.
    let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if made.is_null() {
        return None;
    }
    template.pop();
    Some(PathBuf::from(OsString::from_vec(template)))
}

/// Where [`find_lib`] looks, for messages.
pub const SEARCHED: &str = "beside the memtrim binary, in ../lib or in ../lib/memtrim";

/// libmemtrim.so beside the binary (a cargo build), in ../lib (an installed tree; the Python
/// wheel's package, whose `memtrim` runs bin/memtrim) or in ../lib/memtrim (the .deb's private
/// directory, off the linker's default path).
pub fn find_lib() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("libmemtrim.so"), dir.join("../lib/libmemtrim.so"), dir.join("../lib/memtrim/libmemtrim.so")]
        .into_iter()
        .find(|p| p.exists())
        .and_then(|p| p.canonicalize().ok())
}
