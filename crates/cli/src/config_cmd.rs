//! `memtrim config`: every variable the library reads, with its default, the values it takes
//! and its meaning.
use crate::output::print_or_quiet;
use memtrim_common::config::VARS;

pub fn main() -> i32 {
    let rows: Vec<String> = VARS
        .iter()
        .map(|v| {
            let default = if v.default.is_empty() { "(empty)" } else { v.default };
            format!("{}  default {default}  takes {}\n    {}", v.name, (v.range)(), v.meaning)
        })
        .collect();
    print_or_quiet(&rows.join("\n"))
}
