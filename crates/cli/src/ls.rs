//! `memtrim ls [--json] [--sort KEY] [--all] [--dir DIR]`: one row per live process.
use crate::cli::{self, PageDir};
use crate::output::print_or_quiet;
use crate::pages::{self, Entry, State};
use crate::{json, view};
use view::SortKey;

#[derive(clap::Args)]
pub struct Opts {
    /// A JSON array, one object per process (byte counts in bytes, durations in ms)
    #[arg(long)]
    json: bool,
    /// Sort by KEY: largest first, or by pid
    #[arg(short, long, value_name = "KEY", value_parser = cli::sort_key(), default_value = "pid")]
    sort: SortKey,
    /// Also list pages whose process is gone (state "gone"; `memtrim clean` removes them)
    #[arg(short, long)]
    all: bool,
    #[command(flatten)]
    dir: PageDir,
}

pub fn main(o: Opts) -> i32 {
    let (as_json, all, key, dir) = (o.json, o.all, o.sort, o.dir.path());
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
