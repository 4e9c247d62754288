//! scripts/bench-soak --smoke: the soak benchmark runs end to end (gunicorn with the Django app
//! of tests/apps, plain glibc, memtrim and memtrim-passive side by side under its open-loop load,
//! then idle) and leaves nothing running. The script itself fails unless every server answered,
//! no request failed, PSS was sampled throughout, every memtrim worker's page was read and every
//! process of the servers has gone after their stop; this test also reads its tables: a row per
//! configuration with requests done and none failed (and the reclaimable bound R for the memtrim
//! ones), a row per memtrim configuration in "What memtrim did" with every worker's page read and
//! its releases counted (none by memtrim-passive, whose triggers are all off), and memtrim's
//! goals with the no-failure one met.

mod common;

use common::servers::python_with_django;
use common::{root, run_for, show, text};
use std::process::Command;
use std::time::Duration;

/// The smoke run takes about a minute; its own bounds (start-up, load, timeouts) end it well
/// before this.
const LIMIT: Duration = Duration::from_secs(240);
const MEMTRIM_CONFIGS: [&str; 2] = ["memtrim", "memtrim-passive"];

/// The cells of `config`'s row in the first table after the line `heading` (the whole output
/// when it is empty), or a panic that shows the output.
fn row<'a>(out: &'a str, heading: &str, config: &str) -> Vec<&'a str> {
    let mut lines = out.lines();
    if !heading.is_empty() {
        lines.find(|l| *l == heading).unwrap_or_else(|| panic!("no {heading:?} in the output: {out}"));
    }
    let line = lines.find(|l| l.starts_with(&format!("| {config} |"))).unwrap_or_else(|| panic!("no row for {config} after {heading:?}: {out}"));
    line.split('|').map(str::trim).collect()
}

#[test]
fn soak_smoke_serves_every_request_and_leaves_nothing_running() {
    if python_with_django().is_none() {
        return;
    }
    let o = run_for(Command::new(root().join("scripts/bench-soak")).args(["--smoke", "--no-build"]).current_dir(root()), LIMIT);
    assert!(o.status.success(), "scripts/bench-soak --smoke failed: {}", show(&o));
    let out = text(&o.stdout);
    for config in ["glibc", "memtrim", "memtrim-passive"] {
        let cells = row(&out, "", config);
        let done: u64 = cells[2].parse().unwrap_or_else(|_| panic!("requests done of {config} not a number: {cells:?}"));
        assert!(done > 0, "{config} answered no request: {cells:?}");
        assert_eq!(cells[3], "0", "{config} had failed requests: {cells:?}");
        if MEMTRIM_CONFIGS.contains(&config) {
            assert!(cells[10].parse::<f64>().is_ok(), "R of {config} not a number: {cells:?}");
        }
    }
    for config in MEMTRIM_CONFIGS {
        let cells = row(&out, "## What memtrim did", config);
        assert_eq!(cells[2], "3", "{config}: not every worker's page read as the load ended: {cells:?}");
        for (i, what) in [(3, "busy"), (4, "idle")] {
            let n: u64 = cells[i].parse().unwrap_or_else(|_| panic!("{what} releases of {config} not a number: {cells:?}"));
            if config == "memtrim-passive" {
                assert_eq!(n, 0, "memtrim-passive made {what} releases: {cells:?}");
            }
        }
    }
    let goals = row(&out, "## Goals", "memtrim");
    assert_eq!(goals.len(), 9, "memtrim's goals: want 6: {goals:?}");
    assert_eq!(goals[7], "met: 0 <= 0", "memtrim's no-failure goal: {goals:?}");
}
