//! Shared between libmemtrim.so and the memtrim CLI: the configuration table and the units it
//! speaks, the page and report formats, and the way both write files. Nothing here touches the
//! process environment; callers hand in name/value pairs.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
pub mod atomic_file;
pub mod config;
#[macro_use]
pub mod fields;
pub mod futex;
pub mod json;
pub mod limit;
pub mod option_kinds;
pub mod page;
pub mod report;
pub mod stats;
pub mod units;
