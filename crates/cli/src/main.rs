//! memtrim: runs programs under libmemtrim.so and reads what the library publishes.
mod args;
mod atomic_file;
mod clean;
mod config_cmd;
mod json;
mod ls;
mod pages;
mod metrics;
mod report;
mod request;
mod run;
mod serve;
mod smaps;
mod stat;
mod top;
mod trim;
mod version;
mod view;

const USAGE: &str = "\
usage: memtrim COMMAND [ARGS]

commands:
  run [OPTIONS] -- CMD ARGS...   run CMD with libmemtrim.so preloaded
  config                         list every MEMTRIM_ variable, its default and meaning
  ls [--json] [--sort KEY]       one row per live process with a stats page, as a tree
  stat PID [--json] [--watch [SECS]]
                                 every field of one process's page, with units and meaning
  top                            full-screen refreshing view (sort keys, q quits)
  trim PID|--all [--timeout SECS]
                                 ask processes to release retained memory now; print the result
  report PID [--json] [--timeout SECS]
                                 where the memory is (allocator and kernel views), what a release would return
  clean                          remove the pages of processes that are gone
  serve [--listen ADDR] [--once FILE]
                                 Prometheus /metrics for every page (default 127.0.0.1:9477)
  (ls, stat, top, trim, report, clean and serve take --dir DIR; default $MEMTRIM_SHM_DIR, else /dev/shm)
  --version                      the version, the library `run` would preload and the glibc it needs
  help                           this text";

fn main() {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    // run passes its command's arguments on as they are (file names need not be UTF-8); every
    // other command takes text.
    if raw.first().is_some_and(|a| a == "run") {
        std::process::exit(run::main(&raw[1..]));
    }
    let args: Vec<String> = match raw.into_iter().map(std::ffi::OsString::into_string).collect() {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("memtrim: argument {bad:?} is not UTF-8");
            std::process::exit(2);
        }
    };
    let code = match args.first().map(String::as_str) {
        Some("config") => config_cmd::main(),
        Some("ls") => ls::main(&args[1..]),
        Some("stat") => stat::main(&args[1..]),
        Some("top") => top::main(&args[1..]),
        Some("trim") => trim::main(&args[1..]),
        Some("report") => report::main(&args[1..]),
        Some("clean") => clean::main(&args[1..]),
        Some("serve") => serve::main(&args[1..]),
        Some("--version" | "-V" | "version") => version::main(),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
