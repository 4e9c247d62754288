//! The benchmarks' Python reader of the stats page (scripts/bench_servers/page.py) refuses what
//! the CLI's reader refuses: stats shorter than the table's, or placed over the header and the
//! control block.
//!
//! Build first: `cargo build --release --workspace && cargo test --release --test attacks_page_py`.
//! Tools: python3 (required on CI, skipped with a message elsewhere).

mod common;

use common::{cli, require_tool, root, run, show, text, TempDir};
use memtrim_common::page::{checksum, MAGIC, STATS_OFFSET, WORDS};
use std::process::Command;

/// A page file whose header puts `words` (sealed here) at `offset`.
fn write_page(path: &std::path::Path, offset: usize, mut words: Vec<u64>) {
    words[0] = checksum(&words);
    let mut b = vec![0u8; 4096];
    b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    b[12..16].copy_from_slice(&((offset + words.len() * 8) as u32).to_le_bytes());
    b[16..24].copy_from_slice(&2u64.to_le_bytes());
    b[24..28].copy_from_slice(&(offset as u32).to_le_bytes());
    b[28..32].copy_from_slice(&((words.len() * 8) as u32).to_le_bytes());
    for (i, w) in words.iter().enumerate() {
        b[offset + i * 8..offset + i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn page_py_refuses_what_the_cli_refuses() {
    if !require_tool("python3") {
        return;
    }
    let tmp = TempDir::new("page-py");
    let pid_word = 4242 | (1 << 32);
    write_page(&tmp.join("short"), STATS_OFFSET, vec![0, pid_word]);
    let mut full = vec![0u64; WORDS];
    full[1] = pid_word;
    write_page(&tmp.join("over"), 32, full);
    for name in ["short", "over"] {
        let script = format!("import sys; sys.path.insert(0, {:?}); import page; print(page.read({:?}) is None)", root().join("scripts/bench_servers").display().to_string(), tmp.join(name).display().to_string());
        let o = run(Command::new("python3").args(["-c", &script]).env("MEMTRIM_CLI", cli()));
        assert_eq!(text(&o.stdout).trim(), "True", "page.py read the page {name} (stats the CLI refuses): {}", show(&o));
    }
}
