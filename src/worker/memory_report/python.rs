//! The python section of the report: CPython's object arenas, the last walk of their pools (a
//! fresh one if the interpreter runs one within WALK_WAIT), and their address ranges with
//! resident bytes, read without the interpreter's lock (mincore reads no memory).
use crate::python::{arenas, pymalloc};
use crate::sys::clock;
use crate::worker::residency::Residency;
use memtrim_common::json::Writer;
use memtrim_common::page::Stats;
use std::time::Duration;

const WALK_WAIT: Duration = Duration::from_millis(300);

/// Writes the `python` member.
pub fn write(w: &mut Writer, res: &mut Residency) {
    let asked = clock::unix_ms();
    pymalloc::request(false);
    let fresh = pymalloc::wait_for_walk(asked, WALK_WAIT);
    let mut s = Stats::default();
    pymalloc::fill(&mut s);
    let (fresh_pools, unlisted) = pymalloc::fresh_and_unlisted();
    w.key("python").begin_object();
    w.field("state", s.py_state).field("fresh_walk", fresh).field("measured_at_ms", s.py_measured_at_ms);
    w.field("arenas", s.py_arenas).field("arena_bytes", s.py_arena_bytes);
    w.field("used_pools", s.py_used_pools).field("empty_pools", s.py_empty_pools).field("empty_bytes", s.py_empty_bytes);
    w.field("returned_pools", s.py_returned_pools).field("fresh_pools", fresh_pools);
    w.field("allocated_bytes", s.py_allocated_bytes).field("free_bytes", s.py_free_bytes).field("pool_bytes", pymalloc::pool_size());
    w.field("unlisted_arenas", unlisted).field("released_bytes", s.py_released_bytes).field("released_pools", s.py_released_pools);
    w.field("max_hold_us", s.py_max_hold_us);
    w.key("ranges").begin_array();
    for (start, end) in arenas::ranges(pymalloc::arena_size()) {
        w.numbers(&[start as u64, (end - start) as u64, res.bytes(start, end)]);
    }
    w.end_array().end_object();
}
