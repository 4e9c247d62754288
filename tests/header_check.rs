//! The glibc backend's start-up check of glibc's chunk header (glibc::header_holds) must accept
//! every header glibc writes: with an mmap threshold of 0 (MALLOC_MMAP_THRESHOLD_=0, or
//! glibc.malloc.mmap_threshold) the probe block is mmapped, and the library must still count.
mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn an_mmapped_probe_block_still_counts() {
    if !require_tool("gcc") || allocator() != "glibc" {
        return;
    }
    let bin = compile("stats_probe.c", &[]);
    for (name, value) in [("MALLOC_MMAP_THRESHOLD_", "0"), ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=0")] {
        let o = run_for(preloaded(Command::new(&bin).env(name, value).env("MEMTRIM_LOG", "info")), Duration::from_secs(20));
        assert!(o.status.success(), "{name}={value}: {}", show(&o));
        let live_during: u64 = text(&o.stdout)
            .lines()
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("live_during=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no live_during in {}", show(&o)));
        assert!(
            live_during >= 1 << 20 && !text(&o.stderr).contains("serves alone"),
            "{name}={value}: live_during={live_during}, the library counted nothing\n{}",
            show(&o)
        );
    }
}
