//! include/memtrim.h mirrors the page and stats layouts of the Rust code: a C program compiled
//! against the header prints its offsets, which must equal Rust's.
mod common;
use core::mem::{offset_of, size_of};
use memtrim_common::page::{Control, Page, Stats};
use std::process::Command;

macro_rules! offsets {
    ($t:ty, $c:literal: $($f:ident),*) => { vec![$( (format!("{}.{}", $c, stringify!($f)), offset_of!($t, $f)) ),*] };
}

#[test]
fn header_offsets_match_rust() {
    if !common::require_tool("gcc") {
        return;
    }
    let control = offset_of!(Page, control);
    let mut rust = offsets!(Page, "memtrim_page": magic, layout_version, header_size, seq, stats);
    rust.push(("memtrim_page.trim_requested".into(), control + offset_of!(Control, trim_requested)));
    rust.push(("memtrim_page.trim_served".into(), control + offset_of!(Control, trim_served)));
    rust.push(("memtrim_page.report_requested".into(), control + offset_of!(Control, report_requested)));
    rust.push(("memtrim_page.report_served".into(), control + offset_of!(Control, report_served)));
    rust.extend(offsets!(Stats, "memtrim_page_stats": check, pid, ppid, uid, allocator, start_ticks, comm, updated_at_ms,
        samples, live_bytes, peak_live_bytes, allocs, frees, heap_bytes, retained_bytes, rss_bytes, pss_bytes, uss_bytes,
        swap_bytes, smaps_at_ms, trims, released_bytes, last_trim_us, max_trim_us, last_trim_at_ms, sample_cost_us,
        worker_cpu_us, interval_ms, smaps_interval_ms, releases_by_reason, last_reason, last_rss_before, last_rss_after, policy_checks, skipped_small, skipped_backoff,
        alloc_rate, idle, new_retained, min_retained, frag_threshold_permille, idle_ms, psi_stall_ms, psi_armed, limit_metric,
        limit_bytes, limit_value, limit_strikes, limit_violations, limit_signals, cgroup_limit_bytes, hard_limit, refused_allocs,
        py_state, py_arenas, py_arena_bytes, py_used_pools, py_empty_pools, py_empty_bytes, py_returned_pools, py_allocated_bytes, py_free_bytes, py_measured_at_ms, py_released_bytes, py_released_pools, py_steps, py_last_hold_us, py_max_hold_us));
    rust.push(("sizeof.memtrim_page_stats".into(), size_of::<Stats>()));
    rust.push(("sizeof.memtrim_page".into(), size_of::<Page>()));

    let mut c = String::from("#include <stdio.h>\n#include \"memtrim.h\"\nint main(void) {\n");
    for (name, _) in &rust {
        let (t, f) = name.split_once('.').unwrap();
        let expr = if t == "sizeof" { format!("sizeof(struct {f})") } else { format!("offsetof(struct {t}, {f})") };
        c += &format!("  printf(\"{name} %zu\\n\", {expr});\n");
    }
    c += "  return 0;\n}\n";
    let dir = std::env::temp_dir().join(format!("memtrim-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.c"), c).unwrap();
    let st = Command::new("gcc")
        .arg(format!("-I{}", common::root().join("include").display()))
        .args(["-o", "layout", "layout.c"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "the header does not compile (a static assert failed?)");
    let out = common::text(&Command::new(dir.join("layout")).output().unwrap().stdout);
    let expected: String = rust.iter().map(|(n, o)| format!("{n} {o}\n")).collect();
    assert_eq!(out, expected);
    std::fs::remove_dir_all(dir).ok();
}
