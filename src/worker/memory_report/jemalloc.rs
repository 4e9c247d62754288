//! The jemalloc section of the report (its backend): per arena through mallctl after an `epoch`
//! refresh: pactive, pdirty, pmuzzy, mapped, retained, resident, small and large allocated,
//! threads. The prediction is its dirty and muzzy pages (muzzy pages already given back lazily
//! still count in RSS until the kernel reclaims them, so they count here too). jemalloc has no
//! addresses to give, so no residency check: dirty pages it never handed out touched (the
//! cache-oblivious page of each large block, the rest of a fresh mapping) make the figure high by
//! them, about 8 % on tests/c/report_layout.c.
use crate::sys::jemalloc_ctl::{read, refresh};
use memtrim_common::json::Writer;
use std::time::Instant;

/// Per-arena figures, as `stats.arenas.<i>.<name>` (written with `_` for `.`).
const ARENA_FIELDS: [&str; 10] = ["pactive", "pdirty", "pmuzzy", "mapped", "retained", "resident", "base", "internal", "small.allocated", "large.allocated"];

fn ctl<T: Copy + Default>(name: &str) -> Option<T> {
    read::<T>(format!("{name}\0").as_bytes())
}

/// Writes the `jemalloc` member; returns what a release would give back.
pub fn write(w: &mut Writer) -> u64 {
    let t0 = Instant::now();
    refresh();
    let refresh_us = t0.elapsed().as_micros() as u64;
    let page = ctl::<usize>("arenas.page").unwrap_or(4096) as u64;
    let narenas = ctl::<u32>("arenas.narenas").unwrap_or(0);
    let auto = ctl::<u32>("opt.narenas").unwrap_or(narenas);
    w.key("jemalloc").begin_object().field("page", page).field("narenas", narenas).field("auto_arenas", auto).field("refresh_us", refresh_us);
    for k in ["allocated", "active", "metadata", "resident", "mapped", "retained"] {
        w.field(k, ctl::<usize>(&format!("stats.{k}")).unwrap_or(0));
    }
    for k in ["dirty_decay_ms", "muzzy_decay_ms"] {
        w.field(k, ctl::<isize>(&format!("arenas.{k}")).unwrap_or(-1));
    }
    w.key("arenas").begin_array();
    let mut release = 0u64;
    for i in 0..narenas {
        if !ctl::<bool>(&format!("arena.{i}.initialized")).unwrap_or(false) {
            continue;
        }
        w.begin_object().field("index", i).field("huge", i >= auto);
        w.field("nthreads", ctl::<u32>(&format!("stats.arenas.{i}.nthreads")).unwrap_or(0));
        let mut dirty_muzzy = 0;
        for f in ARENA_FIELDS {
            let v = ctl::<usize>(&format!("stats.arenas.{i}.{f}")).unwrap_or(0) as u64;
            if f == "pdirty" || f == "pmuzzy" {
                dirty_muzzy += v;
            }
            w.field(&f.replace('.', "_"), v);
        }
        for f in ["dirty_purged", "muzzy_purged"] {
            w.field(f, ctl::<u64>(&format!("stats.arenas.{i}.{f}")).unwrap_or(0));
        }
        w.field("release_bytes", dirty_muzzy * page).end_object();
        release += dirty_muzzy * page;
    }
    w.end_array().field("release_bytes", release).end_object();
    release
}
