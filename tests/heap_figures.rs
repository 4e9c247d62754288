//! The figures the release policy counts glibc's retained memory in, against real processes:
//! what a release would give back is what the policy sees, whatever else the heaps hold; and
//! every release, whoever asks for it, is booked by the cost model, against the process CPU the
//! budget is a share of.

mod common;

use common::{Driven, Json, JsonExt, Proc, PyHost, TempDir, python, read_page, stat_json, wait_for};
use std::process::Command;
use std::time::Duration;

const MIB: i64 = 1 << 20;

/// Live blocks whose pages were never touched (tests/c/sparse_live.c: 192 MiB calloc'd from
/// fresh heap memory) beside 94 MiB of resident free memory: the idle release comes and gives
/// the free memory back, as it does when the live blocks are resident.
#[test]
fn untouched_live_blocks_do_not_hide_resident_free_memory() {
    if common::allocator() != "glibc" {
        return;
    }
    let bin = common::compile("sparse_live.c", &[]);
    let dir = TempDir::new("sparse-live");
    let mut c = Command::new(bin);
    common::under_library(c.arg("30"), dir.path(), 200).env("MEMTRIM_ALLOCATOR", "glibc").env("MEMTRIM_IDLE_MS", "500").env("MEMTRIM_PSI_STALL_MS", "0");
    let h = Driven::spawn(&mut c);
    assert_eq!(h.line(Duration::from_secs(30), String::new), "built");
    let released = wait_for("an idle release", Duration::from_secs(10), || {
        let j = stat_json(dir.path(), h.pid())?;
        let idle = j.field("releases_by_reason").int("idle");
        if idle >= 1 {
            Ok(j.int("released_bytes"))
        } else {
            Err(format!(
                "no idle release: new_retained {} B, heap_resident_bytes {} B, live_bytes {} B, retained_bytes {} B, release_skip_reason {}",
                j.int("new_retained"),
                j.int("heap_resident_bytes"),
                j.int("live_bytes"),
                j.int("retained_bytes"),
                j.str("release_skip_reason")
            ))
        }
    });
    assert!(released >= 64 * MIB, "the idle release gave back {released} B of about 94 MiB free");
}

/// A release through `memtrim_trim()` is charged to the budget as every other one is (its CPU,
/// its kind, its pages): the page shows it as the last release.
#[test]
fn api_releases_are_booked_by_the_cost_model() {
    let Some(py) = python() else { return };
    let env = [("MEMTRIM_IDLE_MS", "0"), ("MEMTRIM_FRAG_THRESHOLD", "off"), ("MEMTRIM_PSI_STALL_MS", "0"), ("MEMTRIM_INTERVAL_MS", "200ms")];
    let mut h = PyHost::start(py, "release_host.py", "api-booked", &env);
    h.page();
    h.ask("frag 20000 16000 16");
    let answer = h.ask("apitrim");
    assert!(answer.starts_with("released "), "apitrim answered {answer:?}");
    let want = if common::allocator() == "glibc" { "trim" } else { "je_purge" };
    wait_for("the API release booked on the page", Duration::from_secs(5), || {
        let j = stat_json(&h.dir.0, h.pid)?;
        let kind = match j.field("last_release_kind") {
            Json::String(k) => k.clone(),
            _ => "absent".to_string(),
        };
        let booked = (j.field("releases_by_reason").int("api"), kind);
        if booked == (1, want.to_string()) { Ok(()) } else { Err(format!("api releases and last_release_kind {booked:?}: {j:?}")) }
    });
}

/// The process's CPU (memtrim's worker excluded), a counter, never goes back: sampled every
/// 20 ms in a process that idles, over 3 s.
#[test]
fn process_cpu_never_goes_back() {
    let dir = TempDir::new("process-cpu");
    let mut c = Command::new(common::idle_sleep());
    common::under_library(c.arg("600"), dir.path(), 20).env("MEMTRIM_ALLOCATOR", common::allocator());
    let h = Proc(c.stdin(std::process::Stdio::null()).spawn().unwrap());
    wait_for("the page", Duration::from_secs(10), || read_page(dir.path(), h.pid()).ok_or(String::new()));
    let mut seen = Vec::new();
    for _ in 0..300 {
        if let Some(s) = read_page(dir.path(), h.pid()) {
            seen.push(s.process_cpu_us);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let back: Vec<_> = seen.windows(2).filter(|w| w[1] < w[0]).map(|w| (w[0], w[1])).collect();
    assert!(back.is_empty(), "process_cpu_us went back {} times of {} reads, e.g. {:?}", back.len(), seen.len(), &back[..back.len().min(3)]);
}

/// A heap that grows by 48 MiB of free memory while its live bytes stay put (tests/c/
/// churned_heap.c), in a process whose mallinfo2 takes milliseconds: the page's heap bytes show
/// the growth within seconds, as the resident bytes of the heaps do, not minutes later.
#[test]
fn heap_growth_at_steady_live_bytes_shows_within_seconds() {
    if common::allocator() != "glibc" {
        return;
    }
    let bin = common::compile("churned_heap.c", &[]);
    let dir = TempDir::new("churned-heap");
    let mut c = Command::new(bin);
    common::under_library(&mut c, dir.path(), 200)
        .env("MEMTRIM_ALLOCATOR", "glibc")
        .env("MEMTRIM_IDLE_MS", "0")
        .env("MEMTRIM_FRAG_THRESHOLD", "off")
        .env("MEMTRIM_PSI_STALL_MS", "0");
    let mut h = Driven::spawn(&mut c);
    assert_eq!(h.line(Duration::from_secs(30), String::new), "built");
    let before = wait_for("a few samples", Duration::from_secs(10), || {
        let j = stat_json(dir.path(), h.pid())?;
        if j.int("samples") >= 5 { Ok(j.int("heap_bytes")) } else { Err(format!("{} samples", j.int("samples"))) }
    });
    assert_eq!(h.ask("grow", String::new), "grown");
    wait_for("the heap's growth on the page", Duration::from_secs(15), || {
        let j = stat_json(dir.path(), h.pid())?;
        let (heap, resident) = (j.int("heap_bytes"), j.int("heap_resident_bytes"));
        if heap >= before + 40 * MIB {
            Ok(())
        } else {
            Err(format!("heap_bytes {heap} B, {before} B before 48 MiB more; heap_resident_bytes {resident} B, live_bytes {} B", j.int("live_bytes")))
        }
    });
    h.end();
}
