//! `memtrim ls [--json] [--sort KEY] [--all] [--dir DIR]`: one row per live process.
use crate::pages::{self, Entry, State};
use crate::{json, view};
use view::SortKey;

const USAGE: &str = "\
usage: memtrim ls [--json] [--sort KEY] [--all] [--dir DIR]
  one row per live process with a memtrim page; children are shown under their parent
  --json      a JSON array, one object per process (byte counts in bytes, durations in ms)
  --sort KEY  pid (default), live, heap, retained, rss, pss, frag (largest first)
  --all       also list pages whose process is gone (state \"gone\"; `memtrim clean` removes them)
  --dir DIR   the page directory (default: $MEMTRIM_SHM_DIR, else /dev/shm)";

pub fn main(args: &[String]) -> i32 {
    let mut as_json = false;
    let mut all = false;
    let mut key = SortKey::Pid;
    let mut dir: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => as_json = true,
            "--all" | "-a" => all = true,
            "--sort" | "-s" => match it.next().and_then(|k| SortKey::parse(k)) {
                Some(k) => key = k,
                None => return usage(&format!("--sort takes one of: {}", view::SORT_KEYS)),
            },
            "--dir" => match it.next() {
                Some(d) => dir = Some(d.clone()),
                None => return usage("--dir takes a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let dir = pages::dir(dir.as_deref());
    let scan = match pages::scan(&dir, all) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("memtrim ls: cannot read {}: {e}", dir.display());
            return 1;
        }
    };
    if let Some(line) = scan.skipped_summary("ls") {
        eprintln!("{line}");
    }
    let entries: Vec<&Entry> = scan.entries.iter().filter(|e| all || e.state == State::Live).collect();
    let now = pages::now_ms();
    let out = if as_json {
        json::array(&view::sorted(&entries, key), now)
    } else {
        let rows = view::tree(&entries, key);
        let (header, body) = view::render(&rows, None);
        let mut s = header;
        for (line, (e, _)) in body.iter().zip(&rows) {
            s.push('\n');
            s.push_str(line);
            if e.state == State::Gone {
                s.push_str("  (gone)");
            }
        }
        s
    };
    print_or_quiet(&out)
}

/// Prints `s` and a newline; a closed pipe (`memtrim ls | head`) is not an error.
pub fn print_or_quiet(s: &str) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}").and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("memtrim: cannot write the output: {e}");
            1
        }
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("memtrim ls: {why}\n{USAGE}");
    2
}
