//! The command line: every command and option, with its help text, in one clap definition, from
//! which the help, the usage errors (exit status 2), the shell completions and the man pages are
//! all generated (generate.rs). Each command's own options are defined beside it (`Opts` in its
//! file); what several share is here: `--dir DIR`, a PID, a sort key, seconds.
use crate::pages;
use crate::view::{SORT_KEYS, SortKey};
use crate::{clean, fields_cmd, generate, ls, report, run, serve, stat, top, trim};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Runs programs under libmemtrim.so and reads the stats pages it publishes.
#[derive(Parser)]
#[command(name = "memtrim", disable_version_flag = true, arg_required_else_help = true, max_term_width = 100)]
pub struct Cli {
    /// Print the version, the library `run` would preload and the glibc it needs
    #[arg(short = 'V', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run CMD with libmemtrim.so preloaded
    ///
    /// Replaces itself with CMD, libmemtrim.so prepended to LD_PRELOAD (what was there stays),
    /// so that CMD keeps memtrim's pid and its exit status is CMD's.
    Run(run::Opts),
    /// List every MEMTRIM_ variable, its default, the values it takes and its meaning
    Config,
    /// The stats page's fields: offset, type, JSON name and meaning
    ///
    /// The layout of the page, from the table the library writes it by, for readers in other
    /// languages (--json: the layout version and every field's name, JSON name, section,
    /// offset in the stats, size, type, unit, kind and help).
    Fields(fields_cmd::Opts),
    /// One row per live process with a stats page, as a tree
    ///
    /// Children are shown under their parent.
    Ls(ls::Opts),
    /// Every field of one process's page, with units and meaning
    Stat(stat::Opts),
    /// Full-screen refreshing view (sort keys, q quits)
    ///
    /// A full-screen view of the processes with a memtrim page, refreshed every SECS.
    /// Keys: l live, r rss, p pss, t retained, f frag, n pid (sort); T tree on/off;
    /// Up/Down/PgUp/PgDn scroll; space refresh; q quit.
    Top(top::Opts),
    /// Ask processes to release retained memory now; print the result
    ///
    /// Asks the process (every live process of yours with --all) to give retained memory back
    /// now, waits for it and prints the bytes released and how long the release took.
    Trim(trim::Opts),
    /// Where the memory is (allocator and kernel views), what a release would return
    ///
    /// Asks the process for its allocator's view (per arena, free chunks, mmapped blocks), adds
    /// the kernel's view of its mappings (/proc/PID/smaps: main heap, thread arenas, mmapped
    /// blocks, other anonymous memory, stacks, code, file data; RSS, PSS and swap each) and says
    /// what a release would return.
    Report(report::Opts),
    /// Remove the pages of processes that are gone
    Clean(clean::Opts),
    /// Prometheus /metrics for every page
    ///
    /// Serves /metrics in the Prometheus text format: every live process with a page you can
    /// read (all of them as root), with labels pid, ppid, comm, allocator, and the exporter's
    /// own figures. With --once, writes the same text to a file (or stdout) and exits.
    Serve(serve::Opts),
    /// Print the completion script of a shell
    ///
    /// Install it as /usr/share/bash-completion/completions/memtrim (bash),
    /// /usr/share/zsh/vendor-completions/_memtrim (zsh) or
    /// /usr/share/fish/vendor_completions.d/memtrim.fish (fish); the .deb does.
    Completions {
        #[arg(value_enum)]
        shell: generate::Shell,
    },
    /// Print the manual page (roff), or write every page into a directory
    Man {
        /// Write memtrim.1 and memtrim-COMMAND.1 for every command into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The same as --version
    #[command(hide = true)]
    Version,
}

/// `--dir DIR`, of every command that reads pages.
#[derive(clap::Args)]
pub struct PageDir {
    /// The page directory [default: $MEMTRIM_SHM_DIR, else /dev/shm]
    #[arg(long = "dir", value_name = "DIR")]
    given: Option<PathBuf>,
}

impl PageDir {
    pub fn path(&self) -> PathBuf {
        pages::dir(self.given.as_deref())
    }
}

/// A process id: a positive number.
pub fn pid() -> impl TypedValueParser<Value = u32> {
    clap::value_parser!(u32).range(1..)
}

/// A sort key of `ls` and `top`.
pub fn sort_key() -> impl TypedValueParser<Value = SortKey> {
    PossibleValuesParser::new(SORT_KEYS.split(", ")).try_map(|k| SortKey::parse(&k).ok_or("not a sort key"))
}

/// A number of seconds: finite and accepted by `ok` (whose range `range` says).
pub fn seconds(s: &str, ok: impl FnOnce(f64) -> bool, range: &str) -> Result<Duration, String> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && ok(*v)).map(Duration::from_secs_f64).ok_or_else(|| format!("takes seconds {range}"))
}

/// `--timeout SECS` of a request to a process (`trim`, `report`).
pub fn request_timeout(s: &str) -> Result<Duration, String> {
    seconds(s, |v| v > 0.0 && v < 86400.0, "(> 0, < 86400)")
}

/// A usage error found after parsing (what clap cannot check alone), said as clap says its own,
/// with the usage of `memtrim NAME`: exit status 2.
pub fn usage_error(name: &str, why: impl std::fmt::Display) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    match cmd.find_subcommand_mut(name) {
        Some(sub) => sub.error(ErrorKind::ValueValidation, why).exit(),
        None => cmd.error(ErrorKind::ValueValidation, why).exit(),
    }
}
