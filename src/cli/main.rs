//! memtrim: runs programs under libmemtrim.so and reads what the library publishes.
mod config_cmd;
mod run;

const USAGE: &str = "\
usage: memtrim COMMAND [ARGS]

commands:
  run [OPTIONS] -- CMD ARGS...   run CMD with libmemtrim.so preloaded
  config                         list every MEMTRIM_ variable, its default and meaning
  help                           this text";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("run") => run::main(&args[1..]),
        Some("config") => config_cmd::main(),
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
