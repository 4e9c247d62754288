//! scripts/bench-soak --smoke: the soak benchmark runs end to end (gunicorn with the Django app
//! of tests/apps, plain glibc and memtrim side by side under its open-loop load, then idle) and
//! leaves nothing running. The script itself fails unless every server answered, no request
//! failed, PSS was sampled throughout and every process of the servers has gone after their
//! stop; this test also reads its table: a row per configuration with requests done and none
//! failed.

mod common;

use common::servers::python_with_django;
use common::{root, run_for, show, text};
use std::process::Command;
use std::time::Duration;

/// The smoke run takes about a minute; its own bounds (start-up, load, timeouts) end it well
/// before this.
const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn soak_smoke_serves_every_request_and_leaves_nothing_running() {
    if python_with_django().is_none() {
        return;
    }
    let o = run_for(Command::new(root().join("scripts/bench-soak")).args(["--smoke", "--no-build"]).current_dir(root()), LIMIT);
    assert!(o.status.success(), "scripts/bench-soak --smoke failed: {}", show(&o));
    let out = text(&o.stdout);
    for config in ["glibc", "memtrim"] {
        let row = out.lines().find(|l| l.starts_with(&format!("| {config} |"))).unwrap_or_else(|| panic!("no table row for {config}: {}", show(&o)));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let done: u64 = cells[2].parse().unwrap_or_else(|_| panic!("requests done of {config} not a number: {row}"));
        assert!(done > 0, "{config} answered no request: {row}");
        assert_eq!(cells[3], "0", "{config} had failed requests: {row}");
    }
}
