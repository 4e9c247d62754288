//! `memtrim report PID [--json] [--timeout SECS] [--dir DIR]`: where a live process's memory is,
//! and what a release would return.
//!
//! The process is asked through its page, as `memtrim trim` asks (owner only: the page is opened
//! read-write): report_requested is incremented and the worker woken (a wake on
//! trim_requested, which its sleep waits on, without changing it). The worker gathers the
//! allocator's view (src/report_gather.rs) into `<page>.report`, then sets report_served. This
//! command reads that file (a regular file of the page's owner, never through a symlink),
//! removes it if it was written for its own request (concurrent reports share one file), and
//! adds the kernel's view from /proc/PID/smaps, each mapping classified:
//!
//! - main heap: `[heap]` (glibc's main arena, grown with brk);
//! - thread arenas: the 64 MiB reservations of glibc's thread heaps, by the addresses the
//!   worker read from their heap_info headers (not by a guess from the mappings' shapes);
//! - large mmapped blocks: glibc's mmapped chunks, by the addresses the worker found; a mapping
//!   the kernel merged with other anonymous memory is split by the blocks' resident bytes
//!   (mincore in the process), PSS in the mapping's PSS/RSS ratio, swap by length;
//! - jemalloc arenas (jemalloc backend): jemalloc's extents cannot be told from other anonymous
//!   memory by address, so its own resident figure (stats.resident) is moved out of "other
//!   anonymous" into this category: an estimate, marked as such;
//! - thread stacks: `[stack]`, and a private anonymous read-write mapping directly above an
//!   inaccessible anonymous mapping of at most 1 MiB (the guard page glibc puts below each thread
//!   stack), outside every thread heap; an anonymous mapping that the kernel merged with a stack
//!   counts as stack;
//! - other anonymous: the rest of the private anonymous memory (interpreter arenas such as
//!   pymalloc's or Ruby's heap pages, the program's own mmaps);
//! - code (file-backed, executable, and [vdso]); file data (file-backed, not executable);
//!   shared memory (/dev/shm, SysV, memfd, shared anonymous); memtrim (its page, side pool and
//!   worker stack); kernel ([vvar], [vsyscall]).
//!
//! Then a verdict: how much of the heap is retained, which arenas hold the free bytes, what a
//! release would return, and what the report cost the process.
//!
//! allocator_view.rs reads the report file, classify.rs sorts the mappings into those
//! categories, analysis.rs makes the figures, verdict.rs the sentences, render.rs the output.
mod allocator_view;
mod analysis;
mod classify;
mod render;
mod verdict;

use crate::cli::{self, PageDir};
use crate::output::print_or_quiet;
use crate::request::{Ask, Target};
use crate::{pages, smaps, view};
use memtrim_common::report::SUFFIX as REPORT_SUFFIX;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The largest report read (parsing takes several times its size in memory, and the file is
/// the process's own claim): a bigger one is refused.
const MAX_REPORT: u64 = 1 << 20;

#[derive(clap::Args)]
pub struct Opts {
    /// The process
    #[arg(value_parser = cli::pid())]
    pid: u32,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
    /// How long to wait for the process
    #[arg(short, long, value_name = "SECS", value_parser = cli::request_timeout, default_value = "10")]
    timeout: Duration,
    #[command(flatten)]
    dir: PageDir,
}

pub fn main(o: Opts) -> i32 {
    let (pid, as_json, timeout, dir) = (o.pid, o.json, o.timeout, o.dir.path());
    match run(&dir, pid, timeout, as_json) {
        Ok(text) => print_or_quiet(&text),
        Err(why) => {
            eprintln!("memtrim report: pid {pid}: {why}");
            1
        }
    }
}

fn run(dir: &Path, pid: u32, timeout: Duration, as_json: bool) -> Result<String, String> {
    let (path, start) = pages::locate(dir, pid)?;
    let deadline = Instant::now() + timeout;
    let target = Target::open(&path, pid, start, Ask::Report, deadline)?;
    let (map, stats) = (&target.map, &target.stats);
    let report_path = PathBuf::from(format!("{}{REPORT_SUFFIX}", path.display()));
    // The file is removed by the reader it was written for (the last to ask before it was
    // written); a reader that finds it gone because another took it asks again, within the
    // timeout. Missing again and again although nobody else asked: the process could not write.
    let mut missing = 0;
    let (raw, report) = loop {
        let request = target.post()?;
        target.wait(request, deadline)?;
        match read_report(map) {
            Ok(raw) => {
                let r = allocator_view::parse(&raw).map_err(|e| format!("{}: {e}", report_path.display()))?;
                if r.pid != pid as u64 || r.start_ticks != start {
                    return Err(format!("{} describes another process", report_path.display()));
                }
                let written_for = r.request as u32;
                if written_for.wrapping_sub(request) as i32 >= 0 {
                    if written_for == request {
                        let _ = map.remove(REPORT_SUFFIX);
                    }
                    break (raw, r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if target.requested()? == request {
                    missing += 1;
                }
                if missing >= 5 {
                    return Err(format!(
                        "the process answered but wrote no report ({} is missing: it could not write there, see its stderr, or other `memtrim report`s took it)",
                        report_path.display()
                    ));
                }
            }
            Err(e) => return Err(format!("{}: {e}", report_path.display())),
        }
        if Instant::now() >= deadline {
            return Err("timed out: the report was taken by another `memtrim report` each time".into());
        }
    };
    let maps = smaps::read(pid)?;
    let vm_rss = smaps::vm_rss(pid).unwrap_or(0);
    let shm = dir.display().to_string();
    let a = analysis::analyse(&report, &maps, vm_rss, &shm);
    let comm = stats.comm_str();
    Ok(if as_json {
        // Parsed once already: it is JSON.
        let raw: &serde_json::value::RawValue = serde_json::from_str(raw.trim()).map_err(|e| format!("{}: {e}", report_path.display()))?;
        render::to_json(&a, &report, raw, pid, &comm)
    } else {
        render::to_text(&a, &report, pid, &comm)
    })
}

/// Reads the report file beside the page `map` (in the directory the page was checked in): a
/// regular file (never followed through a symlink) owned by the page's owner, of a sane size.
fn read_report(map: &pages::Opened) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let owner = map.uid;
    let f = map.open_beside(REPORT_SUFFIX)?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    if md.uid() != owner {
        return Err(bad(format!("owned by uid {}, not by the page's owner {owner}", md.uid())));
    }
    if md.len() > MAX_REPORT {
        return Err(bad(format!("refused: it is {} bytes long, more than the {} this memtrim reads", md.len(), view::size(MAX_REPORT))));
    }
    let mut s = String::new();
    f.take(MAX_REPORT).read_to_string(&mut s)?;
    Ok(s)
}
