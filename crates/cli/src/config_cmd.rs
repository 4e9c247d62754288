//! `memtrim config`: every variable the library reads, with its default and meaning.
use memtrim_common::config::VARS;

pub fn main() -> i32 {
    let width = VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for v in VARS {
        println!("{:width$}  default {:8}  {}", v.name, v.default, v.meaning);
    }
    0
}
