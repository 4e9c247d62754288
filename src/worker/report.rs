//! `MEMTRIM_REPORT=1`: one summary line on stderr when the process exits.
use crate::alloc::accounting;
use crate::sys::stderr;
use memtrim_common::units::format_size;

pub fn at_exit() {
    let t = accounting::totals();
    stderr::line(&format!(
        "memtrim: pid {} exit: live {} ({} B), peak live {} ({} B), allocs {}, frees {}",
        std::process::id(),
        format_size(t.live),
        t.live,
        format_size(t.peak),
        t.peak,
        t.allocs,
        t.frees
    ));
}
