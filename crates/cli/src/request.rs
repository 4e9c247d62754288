//! Asking a process's worker for something through its page, as `memtrim trim` (a release) and
//! `memtrim report` (a report) do: the page is opened read-write (only its owner or root can),
//! a request counter is incremented (pread, then pwrite of the word: the page is never touched
//! through a mapping, see pages::Opened) and the worker woken (it sleeps on trim_requested), and
//! the worker answers by setting the matching served counter to the request it has served and
//! waking it. Two requesters at once may post the same number: both are answered when it is
//! served. No signal is sent (signals belong to the host).
use crate::pages::{self, Opened, Skip};
use core::mem::offset_of;
use memtrim_common::futex;
use memtrim_common::page::{Control, Stats};
use std::path::Path;
use std::time::{Duration, Instant};

/// What is asked for.
#[derive(Clone, Copy)]
pub enum Ask {
    /// Give retained memory back now (trim_requested, trim_served).
    Release,
    /// Write the allocator's view into `<page>.report` (report_requested, report_served).
    Report,
}

impl Ask {
    /// The offsets in the page file of its (requested, served) counters.
    pub fn counters(self) -> (usize, usize) {
        let (r, s) = match self {
            Ask::Release => (offset_of!(Control, trim_requested), offset_of!(Control, trim_served)),
            Ask::Report => (offset_of!(Control, report_requested), offset_of!(Control, report_served)),
        };
        (pages::control_offset(r), pages::control_offset(s))
    }

    /// What only the page's owner or root can do.
    fn what(self) -> &'static str {
        match self {
            Ask::Release => "request a release",
            Ask::Report => "ask for a report",
        }
    }

    /// Why a request that was not answered in time was not.
    fn timed_out(self) -> &'static str {
        match self {
            Ask::Release => "the request was not served within the timeout (its memtrim worker is stuck or not running",
            Ask::Report => "the report was not written within the timeout (its memtrim worker is stuck, not running, or of a version without reports",
        }
    }

    fn exited(self) -> &'static str {
        match self {
            Ask::Release => "the process exited before serving the request",
            Ask::Report => "the process exited before writing the report",
        }
    }
}

/// The page of a live process, opened to ask its worker for one thing.
pub struct Target {
    ask: Ask,
    pub map: Opened,
    pub pid: u32,
    pub start_ticks: u64,
    /// The page when it was opened.
    pub stats: Stats,
}

impl Target {
    /// Opens `path`, the page of (pid, start), read-write after the checks of `pages::map`,
    /// refuses another user's page (unless root), and reads it; a page not yet published is
    /// waited for until `publish_by`.
    pub fn open(path: &Path, pid: u32, start: u64, ask: Ask, publish_by: Instant) -> Result<Target, String> {
        let me = pages::euid();
        let what = ask.what();
        let map = pages::open(path, true).map_err(|s| match s {
            Skip::OtherUser(uid) => {
                format!("permission denied: the page {} belongs to uid {uid} and you are uid {me}; only its owner or root can {what}", path.display())
            }
            Skip::PermissionDenied => format!("permission denied opening {}: only the page's owner or root can {what}", path.display()),
            other => format!("{}: {}", path.display(), other.describe()),
        })?;
        if me != 0 && map.uid != me {
            return Err(format!("permission denied: the page belongs to uid {}; only its owner or root can {what}", map.uid));
        }
        // A page created a moment ago is published within the worker's first interval.
        let stats = loop {
            match pages::snapshot(&map, pid, start) {
                Err(Skip::Starting) if Instant::now() < publish_by => std::thread::sleep(Duration::from_millis(20)),
                r => break r.and_then(|s| pages::verified(s, pid, map.uid)).map_err(|s| format!("{}: {}", path.display(), s.describe()))?,
            }
        };
        if !pages::is_live(pid, start) {
            return Err("the process is gone (stale page; `memtrim clean` removes it)".into());
        }
        Ok(Target { ask, map, pid, start_ticks: start, stats })
    }

    /// Posts one request and wakes the worker; returns the request's number.
    pub fn post(&self) -> Result<u32, String> {
        let at = self.ask.counters().0;
        let request = self.map.control(at).map_err(truncated)?.wrapping_add(1);
        self.map.set_control(at, request).map_err(truncated)?;
        // The worker sleeps on trim_requested: a report wakes it without asking for a release.
        if let Some(word) = self.map.futex_addr(Ask::Release.counters().0) {
            futex::wake_all_at(word);
        }
        Ok(request)
    }

    /// The number of the last request posted (by anyone).
    pub fn requested(&self) -> Result<u32, String> {
        self.map.control(self.ask.counters().0).map_err(truncated)
    }

    /// Waits until the worker has served `request` (and published what it did), the deadline
    /// passes, or the process exits.
    pub fn wait(&self, request: u32, deadline: Instant) -> Result<(), String> {
        let ask = self.ask;
        let at = ask.counters().1;
        loop {
            let served = self.map.control(at).map_err(truncated)?;
            if served.wrapping_sub(request) as i32 >= 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "timed out: {}; page last updated {} ago)",
                    ask.timed_out(),
                    crate::stat::human_ms(pages::now_ms().saturating_sub(self.stats.updated_at_ms))
                ));
            }
            if !pages::is_live(self.pid, self.start_ticks) {
                return Err(ask.exited().into());
            }
            let nap = (deadline - now).min(Duration::from_millis(200));
            match self.map.futex_addr(at) {
                // Returns at once (EFAULT) if the file was truncated: the next read says so.
                Some(word) => futex::wait_at(word, served, nap),
                None => std::thread::sleep(nap.min(Duration::from_millis(20))),
            }
        }
    }
}

fn truncated(e: std::io::Error) -> String {
    format!("cannot use the page: {e}")
}
