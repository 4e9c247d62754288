//! `memtrim config`: every variable the library reads, with its default, the values it takes
//! and its meaning.
use memtrim_common::config::VARS;

pub fn main() -> i32 {
    for v in VARS {
        let default = if v.default.is_empty() { "(empty)" } else { v.default };
        println!("{}  default {default}  takes {}\n    {}", v.name, (v.range)(), v.meaning);
    }
    0
}
