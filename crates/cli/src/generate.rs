//! What is generated from the command line's definition (cli.rs): the shell completion scripts
//! and the man pages, so that neither is kept by hand.
use crate::cli::Cli;
use crate::output::print_or_quiet;
use clap::CommandFactory;
use clap_mangen::Man;
use memtrim_common::atomic_file;
use std::path::Path;

/// The shells whose completions the .deb installs.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `memtrim completions SHELL`: the script, on stdout.
pub fn completions(shell: Shell) -> i32 {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "memtrim", &mut script);
    print_or_quiet(String::from_utf8_lossy(&script).trim_end())
}

/// `memtrim man`: memtrim(1) on stdout; with `--out DIR`, memtrim.1 and memtrim-COMMAND.1 for
/// every command (the pages memtrim(1) refers to) written into DIR.
pub fn man(out: Option<&Path>) -> i32 {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("memtrim {}", env!("CARGO_PKG_VERSION"));
    let Some(dir) = out else {
        let mut page = Vec::new();
        return match Man::new(cmd).source(source).render(&mut page) {
            Ok(()) => print_or_quiet(String::from_utf8_lossy(&page).trim_end()),
            Err(e) => {
                eprintln!("memtrim man: {e}");
                1
            }
        };
    };
    let pages = std::iter::once(cmd.clone()).chain(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    for page in pages {
        // Rendered in memory and replaced whole: DIR may hold a symlink planted where a page goes.
        let man = Man::new(page).source(source.clone());
        let mut text = Vec::new();
        let written = man
            .render(&mut text)
            .map_err(|e| format!("cannot render {}: {e}", man.get_filename()))
            .and_then(|()| atomic_file::replace(&dir.join(man.get_filename()), &text, 0o644));
        if let Err(e) = written {
            eprintln!("memtrim man: {e}");
            return 1;
        }
    }
    0
}
