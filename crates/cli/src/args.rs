//! What the subcommands' argument parsing shares: `-h`/`--help`, `--dir DIR`, a PID where the
//! command takes one, option values, and usage errors (the reason and the usage on stderr,
//! exit status 2).
//!
//! A parser returns `Result<_, i32>`: `Err(code)` is the exit status to end with, after the
//! help (0) or a usage error (2) has been printed.
use crate::pages;
use crate::view::{self, SortKey};
use std::path::PathBuf;
use std::time::Duration;

/// A subcommand's name (as in `memtrim NAME`) and usage text.
pub struct Cmd {
    pub name: &'static str,
    pub usage: &'static str,
}

impl Cmd {
    /// Says why the arguments are wrong, then the usage; the exit status of a usage error.
    pub fn usage_error(&self, why: &str) -> i32 {
        eprintln!("memtrim {}: {why}\n{}", self.name, self.usage);
        2
    }

    /// The usage on stdout, asked for: exit status 0.
    pub fn help(&self) -> i32 {
        println!("{}", self.usage);
        0
    }
}

/// The words after the subcommand, read one at a time.
pub struct Args<'a> {
    cmd: &'a Cmd,
    words: &'a [String],
    next: usize,
    takes_pid: bool,
    /// `--dir DIR`.
    pub dir: Option<String>,
    /// The PID (a positive number), for a command built `with_pid`.
    pub pid: Option<u32>,
}

impl<'a> Args<'a> {
    pub fn new(cmd: &'a Cmd, words: &'a [String]) -> Args<'a> {
        Args { cmd, words, next: 0, takes_pid: false, dir: None, pid: None }
    }

    /// The first word that is not an option is the PID.
    pub fn with_pid(mut self) -> Args<'a> {
        self.takes_pid = true;
        self
    }

    /// The words not read yet.
    pub fn rest(&self) -> &'a [String] {
        &self.words[self.next..]
    }

    /// The value of the option just read (`--sort KEY`), taken by `parse`; a usage error saying
    /// `why` when it is missing or `parse` refuses it.
    pub fn value<T>(&mut self, why: &str, parse: impl FnOnce(&'a str) -> Option<T>) -> Result<T, i32> {
        self.next().and_then(parse).ok_or_else(|| self.usage_error(why))
    }

    /// A value in seconds (finite, and within what `ok` accepts).
    pub fn seconds(&mut self, why: &str, ok: impl FnOnce(f64) -> bool) -> Result<Duration, i32> {
        self.value(why, |s| s.parse::<f64>().ok().filter(|s| s.is_finite() && ok(*s)).map(Duration::from_secs_f64))
    }

    /// `--sort KEY` (`ls`, `top`).
    pub fn sort_key(&mut self) -> Result<SortKey, i32> {
        self.value(&format!("--sort takes one of: {}", view::SORT_KEYS), SortKey::parse)
    }

    /// `--timeout SECS` of a request to a process (`trim`, `report`).
    pub fn request_timeout(&mut self) -> Result<Duration, i32> {
        self.seconds("--timeout takes seconds (> 0)", |s| s > 0.0 && s < 86400.0)
    }

    /// What every command takes (`--dir DIR`, `-h`/`--help`, the PID); any other word is a usage
    /// error.
    pub fn common(&mut self, word: &str) -> Result<(), i32> {
        match word {
            "--dir" => self.dir = Some(self.value("--dir takes a directory", |d| Some(d.to_string()))?),
            "-h" | "--help" => return Err(self.cmd.help()),
            p if self.takes_pid && self.pid.is_none() && !p.starts_with('-') => match p.parse::<u32>() {
                Ok(n) if n > 0 => self.pid = Some(n),
                _ => return Err(self.usage_error(&format!("{p:?} is not a pid"))),
            },
            other => return Err(self.usage_error(&format!("unknown argument {other}"))),
        }
        Ok(())
    }

    /// The PID, or a usage error saying `why` without one.
    pub fn need_pid(&self, why: &str) -> Result<u32, i32> {
        self.pid.ok_or_else(|| self.usage_error(why))
    }

    /// The page directory: `--dir`, else $MEMTRIM_SHM_DIR, else /dev/shm.
    pub fn page_dir(&self) -> PathBuf {
        pages::dir(self.dir.as_deref())
    }

    pub fn usage_error(&self, why: &str) -> i32 {
        self.cmd.usage_error(why)
    }
}

/// The next word.
impl<'a> Iterator for Args<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let w = self.words.get(self.next)?;
        self.next += 1;
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: Cmd = Cmd { name: "test", usage: "usage: memtrim test" };

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// (pid, dir, -x, --n)
    type Parsed = (Option<u32>, Option<String>, bool, Option<u32>);

    /// Reads every word through `common`, after `-x` (a flag) and `--n N` (a value).
    fn parse(s: &str, pid: bool) -> Result<Parsed, i32> {
        let w = words(s);
        let mut a = Args::new(&CMD, &w);
        if pid {
            a = a.with_pid();
        }
        let (mut x, mut n) = (false, None);
        while let Some(word) = a.next() {
            match word {
                "-x" => x = true,
                "--n" => n = Some(a.value("--n takes a number", |v| v.parse().ok())?),
                other => a.common(other)?,
            }
        }
        Ok((a.pid, a.dir, x, n))
    }

    #[test]
    fn common_words_and_values() {
        assert_eq!(parse("12 -x --dir /d --n 3", true), Ok((Some(12), Some("/d".into()), true, Some(3))));
        assert_eq!(parse("--dir /d", false), Ok((None, Some("/d".into()), false, None)));
        assert_eq!(parse("--help 12", true), Err(0));
        assert_eq!(parse("-h", false), Err(0));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse("--dir", false), Err(2));
        assert_eq!(parse("--n", false), Err(2));
        assert_eq!(parse("--n x", false), Err(2));
        assert_eq!(parse("12", false), Err(2));
        assert_eq!(parse("0", true), Err(2));
        assert_eq!(parse("abc", true), Err(2));
        assert_eq!(parse("12 13", true), Err(2));
        assert_eq!(parse("--bogus", true), Err(2));
    }

    #[test]
    fn seconds_within_range() {
        let w = words("5 0 nan inf 86400 0.5");
        let mut a = Args::new(&CMD, &w);
        assert_eq!(a.request_timeout(), Ok(Duration::from_secs(5)));
        for _ in 0..4 {
            assert_eq!(a.request_timeout(), Err(2));
        }
        assert_eq!(a.seconds("", |s| s >= 0.1), Ok(Duration::from_millis(500)));
        assert_eq!(a.seconds("", |_| true), Err(2), "nothing left");
    }
}
