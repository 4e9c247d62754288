//! The JSON that `ls --json` and `stat --json` print: written by hand (no serde), one object per
//! process. Field names are a contract (DESIGN.md): add fields freely, never rename.
use crate::pages::{Entry, State};
use memtrim_common::limit::Metric;
use memtrim_common::page::{Reason, Stats};
use std::fmt::Write;

/// `s` as a JSON string literal: quotes, backslashes and control characters escaped; anything
/// else (already valid UTF-8) passes through.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Microseconds as a JSON number of milliseconds with three decimals (`12.345`).
pub fn ms_from_us(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

pub fn allocator_name(a: u32) -> String {
    match a {
        memtrim_common::page::ALLOCATOR_GLIBC => "glibc".into(),
        1 => "jemalloc".into(),
        n => format!("unknown-{n}"),
    }
}

/// Why the last release ran (None before the first).
pub fn last_reason(s: &Stats) -> Option<&'static str> {
    if s.trims == 0 {
        return None;
    }
    Reason::ALL.get(s.last_reason as usize).map(|r| r.name())
}

/// One process as a JSON object on one line. `now_ms` is the reader's unix time, for the age.
pub fn object(e: &Entry, now_ms: u64) -> String {
    let s: &Stats = &e.stats;
    let mut o = String::with_capacity(1024);
    let mut first = true;
    let mut field = |name: &str, value: String| {
        o.push_str(if first { "{" } else { "," });
        first = false;
        o.push_str(&string(name));
        o.push(':');
        o.push_str(&value);
    };
    let n = |v: u64| v.to_string();
    field("pid", n(s.pid as u64));
    field("ppid", n(s.ppid as u64));
    field("uid", n(s.uid as u64));
    field("comm", string(&s.comm_str()));
    field("allocator", string(&allocator_name(s.allocator)));
    field("state", string(if e.state == State::Live { "live" } else { "gone" }));
    field("start_ticks", n(s.start_ticks));
    field("updated_at", n(s.updated_at_ms));
    field("age_ms", n(now_ms.saturating_sub(s.updated_at_ms)));
    field("samples", n(s.samples));
    field("live_bytes", n(s.live_bytes));
    field("peak_live_bytes", n(s.peak_live_bytes));
    field("heap_bytes", n(s.heap_bytes));
    field("retained_bytes", n(s.retained_bytes));
    field("frag_ratio", format!("{:.4}", s.frag_ratio()));
    field("rss_bytes", n(s.rss_bytes));
    field("pss_bytes", n(s.pss_bytes));
    field("uss_bytes", n(s.uss_bytes));
    field("swap_bytes", n(s.swap_bytes));
    field("smaps_at", n(s.smaps_at_ms));
    field("allocs", n(s.allocs));
    field("frees", n(s.frees));
    field("live_blocks", n(s.allocs.saturating_sub(s.frees)));
    field("trims", n(s.trims));
    field("released_bytes", n(s.released_bytes));
    field("last_trim_ms", ms_from_us(s.last_trim_us));
    field("max_trim_ms", ms_from_us(s.max_trim_us));
    field("last_trim_at", n(s.last_trim_at_ms));
    field("sample_cost_ms", ms_from_us(s.sample_cost_us));
    field("worker_cpu_ms", ms_from_us(s.worker_cpu_us));
    field("interval_ms", n(s.interval_ms));
    field("smaps_interval_ms", n(s.smaps_interval_ms));
    let reasons: Vec<String> = Reason::ALL.iter().map(|r| format!("{}:{}", string(r.name()), s.releases_by_reason[*r as usize])).collect();
    field("releases_by_reason", format!("{{{}}}", reasons.join(",")));
    field("last_reason", last_reason(s).map_or("null".into(), string));
    field("last_rss_before", n(s.last_rss_before));
    field("last_rss_after", n(s.last_rss_after));
    field("policy_checks", n(s.policy_checks));
    field("skipped_small", n(s.skipped_small));
    field("skipped_backoff", n(s.skipped_backoff));
    field("alloc_rate", n(s.alloc_rate));
    field("idle", (s.idle != 0).to_string());
    field("new_retained", n(s.new_retained));
    field("min_retained", n(s.min_retained));
    field("frag_threshold", if s.frag_threshold_permille == u64::MAX { "null".into() } else { format!("{}.{:03}", s.frag_threshold_permille / 1000, s.frag_threshold_permille % 1000) });
    field("idle_ms", n(s.idle_ms));
    field("psi_stall_ms", n(s.psi_stall_ms));
    field("psi_armed", (s.psi_armed != 0).to_string());
    field("limit_metric", Metric::from_code(s.limit_metric).map_or("null".into(), |m| string(m.name())));
    field("limit_bytes", n(s.limit_bytes));
    field("limit_value", n(s.limit_value));
    field("limit_strikes", n(s.limit_strikes));
    field("limit_violations", n(s.limit_violations));
    field("limit_signals", n(s.limit_signals));
    field("cgroup_limit_bytes", n(s.cgroup_limit_bytes));
    field("hard_limit", n(s.hard_limit));
    field("refused_allocs", n(s.refused_allocs));
    field("py_state", string(memtrim_common::page::py_state_name(s.py_state)));
    field("py_arenas", n(s.py_arenas));
    field("py_arena_bytes", n(s.py_arena_bytes));
    field("py_used_pools", n(s.py_used_pools));
    field("py_empty_pools", n(s.py_empty_pools));
    field("py_empty_bytes", n(s.py_empty_bytes));
    field("py_returned_pools", n(s.py_returned_pools));
    field("py_allocated_bytes", n(s.py_allocated_bytes));
    field("py_free_bytes", n(s.py_free_bytes));
    field("py_measured_at_ms", n(s.py_measured_at_ms));
    field("py_released_bytes", n(s.py_released_bytes));
    field("py_released_pools", n(s.py_released_pools));
    field("py_steps", n(s.py_steps));
    field("py_last_hold_us", n(s.py_last_hold_us));
    field("py_max_hold_us", n(s.py_max_hold_us));
    field("page", string(&e.path.to_string_lossy()));
    o.push('}');
    o
}

/// A JSON array of objects, one per line.
pub fn array(entries: &[&Entry], now_ms: u64) -> String {
    if entries.is_empty() {
        return "[]".into();
    }
    let mut out = String::from("[\n");
    for (i, e) in entries.iter().enumerate() {
        out.push_str("  ");
        out.push_str(&object(e, now_ms));
        out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(string("a\"b\\c\n\x01\x7f"), "\"a\\\"b\\\\c\\n\\u0001\\u007f\"");
        assert_eq!(string("é"), "\"é\"");
        assert_eq!(ms_from_us(12_345), "12.345");
        assert_eq!(ms_from_us(7), "0.007");
    }
}
