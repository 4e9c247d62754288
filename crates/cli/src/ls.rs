//! `memtrim ls [--json] [--sort KEY] [--all] [--dir DIR]`: one row per live process.
use crate::args::{Args, Cmd};
use crate::pages::{self, Entry, State};
use crate::{json, view};
use std::path::PathBuf;
use view::SortKey;

const USAGE: &str = "\
usage: memtrim ls [--json] [--sort KEY] [--all] [--dir DIR]
  one row per live process with a memtrim page; children are shown under their parent
  --json      a JSON array, one object per process (byte counts in bytes, durations in ms)
  --sort KEY  pid (default), live, heap, retained, rss, pss, frag (largest first)
  --all       also list pages whose process is gone (state \"gone\"; `memtrim clean` removes them)
  --dir DIR   the page directory (default: $MEMTRIM_SHM_DIR, else /dev/shm)";

const CMD: Cmd = Cmd { name: "ls", usage: USAGE };

struct Opts {
    as_json: bool,
    all: bool,
    key: SortKey,
    dir: PathBuf,
}

fn parse(words: &[String]) -> Result<Opts, i32> {
    let mut a = Args::new(&CMD, words);
    let (mut as_json, mut all, mut key) = (false, false, SortKey::Pid);
    while let Some(w) = a.next() {
        match w {
            "--json" => as_json = true,
            "--all" | "-a" => all = true,
            "--sort" | "-s" => key = a.sort_key()?,
            other => a.common(other)?,
        }
    }
    Ok(Opts { as_json, all, key, dir: a.page_dir() })
}

pub fn main(args: &[String]) -> i32 {
    let Opts { as_json, all, key, dir } = match parse(args) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let Some(scan) = pages::scan_saying(&dir, all, "ls") else { return 1 };
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
