//! Shared between libmemtrim.so and the memtrim CLI: the configuration table and the units it
//! speaks. Nothing here touches the process environment; callers hand in name/value pairs.
pub mod config;
pub mod futex;
pub mod limit;
pub mod option_kinds;
pub mod page;
pub mod units;
