//! `memtrim clean [--dry-run] [--dir DIR]`: removes the pages of processes that are gone
//! (killed before they could unlink them) or that abandoned them (exec'd a program without the
//! library: the page is no longer mapped and no longer updated). A live process's page is never
//! touched; a symlink or other non-regular file with a page's name, or a file that is not a
//! page (size, magic, owner), is reported and left alone (it is not ours to judge); without
//! root only your own pages go. The limit's claim files (`stagger.PID.START`) of masters that
//! are gone go too, and the claim files of cgroup budgets (`budget.HASH`) untouched for a day.
use crate::cli::PageDir;
use crate::output::print_or_quiet;
use crate::pages;
use std::os::unix::fs::MetadataExt;

#[derive(clap::Args)]
pub struct Opts {
    /// Only list them
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    dir: PageDir,
}

pub fn main(o: Opts) -> i32 {
    let (dry, dir) = (o.dry_run, o.dir.path());
    let cands = match pages::candidates(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("memtrim clean: cannot read {}: {e}", dir.display());
            return 1;
        }
    };
    let me = pages::euid();
    let (mut removed, mut live, mut failed, mut shown) = (0usize, 0usize, 0usize, 0);
    let mut left = Vec::new();
    for (path, pid, start) in cands {
        let (why, judged) = if !pages::is_live(pid, start) {
            ("is gone", None)
        } else if let Some(ino) = pages::abandoned_inode(&path, pid, start) {
            ("runs on without the library", Some(ino))
        } else {
            live += 1;
            continue;
        };
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(_) => continue, // removed meanwhile
        };
        if !md.file_type().is_file() {
            left.push(format!("{}: not a regular file, left alone", path.display()));
            continue;
        }
        if me != 0 && md.uid() != me {
            left.push(format!("{}: belongs to uid {}, left alone", path.display(), md.uid()));
            continue;
        }
        // Only a page goes, whatever the name says: a file of the page's size with the magic,
        // in a per-user directory owned by that directory's user.
        let page = match pages::page_file(&path, md.ino()) {
            Ok(m) => m,
            Err(why) => {
                left.push(format!("{}: {why}, left alone", path.display()));
                continue;
            }
        };
        // The process of an abandoned page could exec back into the library, which replaces
        // the file: remove only the file that was judged.
        if judged.is_some_and(|ino| ino != md.ino()) {
            live += 1;
            continue;
        }
        if dry {
            shown = shown.max(print_or_quiet(&format!("would remove {} (process {pid} {why})", path.display())));
            removed += 1;
            continue;
        }
        // A gone process cannot come back with the same pid and start time. Removed in the
        // directory that was checked: its owner may have swapped it for a symlink since.
        match page.remove("") {
            Ok(()) => {
                let _ = page.remove(memtrim_common::report::SUFFIX);
                shown = shown.max(print_or_quiet(&format!("removed {} (process {pid} {why})", path.display())));
                removed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                eprintln!("memtrim clean: cannot remove {}: {e}", path.display());
                failed += 1;
            }
        }
    }
    // The limit's claim files of masters that are gone (the workers share them, none of them
    // can tell it is the last): small, but one per master start would pile up.
    let mut claims = 0usize;
    for (path, pid, start) in pages::stagger_files(&dir).unwrap_or_default() {
        if pages::is_live(pid, start) {
            continue;
        }
        let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
        if !md.file_type().is_file() || (me != 0 && md.uid() != me) {
            left.push(format!("{}: not a regular file of yours, left alone", path.display()));
            continue;
        }
        claims += remove_claim(&path, &format!("master {pid} is gone"), dry, &mut shown, &mut failed);
    }
    // A budget's claim file (`budget.HASH`) names a cgroup, not a process: one untouched for
    // longer than the longest stagger window holds no turn any more.
    const BUDGET_STALE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    for path in pages::budget_files(&dir).unwrap_or_default() {
        let Ok(md) = std::fs::symlink_metadata(&path) else { continue };
        if md.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age <= BUDGET_STALE) {
            continue;
        }
        if !md.file_type().is_file() || (me != 0 && md.uid() != me) {
            left.push(format!("{}: not a regular file of yours, left alone", path.display()));
            continue;
        }
        claims += remove_claim(&path, "untouched for a day", dry, &mut shown, &mut failed);
    }
    for l in &left {
        eprintln!("memtrim clean: {l}");
    }
    let verb = if dry { "would remove" } else { "removed" };
    shown = shown.max(print_or_quiet(&format!("{verb} {removed} stale page{} from {} ({live} live kept)", if removed == 1 { "" } else { "s" }, dir.display())));
    if claims > 0 {
        shown = shown.max(print_or_quiet(&format!("{verb} {claims} claim file{} of gone masters or old budgets", if claims == 1 { "" } else { "s" })));
    }
    if failed > 0 { 1 } else { shown }
}

/// Removes (or, dry, names) one claim file; 1 if it was (or would be) removed.
fn remove_claim(path: &std::path::Path, why: &str, dry: bool, shown: &mut i32, failed: &mut usize) -> usize {
    if dry {
        *shown = (*shown).max(print_or_quiet(&format!("would remove {} ({why})", path.display())));
        return 1;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            *shown = (*shown).max(print_or_quiet(&format!("removed {} ({why})", path.display())));
            1
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            eprintln!("memtrim clean: cannot remove {}: {e}", path.display());
            *failed += 1;
            0
        }
    }
}
