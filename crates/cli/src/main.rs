//! memtrim: runs programs under libmemtrim.so and reads what the library publishes.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
mod clean;
mod cli;
mod config_cmd;
mod fields_cmd;
mod generate;
mod json;
mod ls;
mod metrics;
mod output;
mod pages;
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

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        _ if cli.version => version::main(),
        Some(Command::Run(o)) => run::main(o),
        Some(Command::Config) => config_cmd::main(),
        Some(Command::Fields(o)) => fields_cmd::main(o),
        Some(Command::Ls(o)) => ls::main(o),
        Some(Command::Stat(o)) => stat::main(o),
        Some(Command::Top(o)) => top::main(o),
        Some(Command::Trim(o)) => trim::main(o),
        Some(Command::Report(o)) => report::main(o),
        Some(Command::Clean(o)) => clean::main(o),
        Some(Command::Serve(o)) => serve::main(o),
        Some(Command::Completions { shell }) => generate::completions(shell),
        Some(Command::Man { out }) => generate::man(out.as_deref()),
        Some(Command::Version) => version::main(),
        // Without arguments clap prints the usage (exit 2); any other argument is a command or
        // --version.
        None => cli::usage_error("", "which command?"),
    };
    std::process::exit(code);
}
