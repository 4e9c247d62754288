//! Shared between libmemtrim.so and the memtrim CLI: the configuration table, the units it
//! speaks, and the stats page's layout and table of fields. Nothing here touches the process environment; callers hand in name/value pairs.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
pub mod config;
#[macro_use]
pub mod fields;
pub mod futex;
pub mod limit;
pub mod option_kinds;
pub mod page;
pub mod stats;
pub mod units;
