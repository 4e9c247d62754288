//! How every command writes its output: a reader that stops early (`memtrim ls | head`,
//! a closed stdout) ends the command quietly instead of panicking, as `println!` would.

/// Prints `s` and a newline; a closed pipe (`memtrim ls | head`) is not an error.
pub fn print_or_quiet(s: &str) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}").and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("memtrim: cannot write the output: {e}");
            1
        }
    }
}
