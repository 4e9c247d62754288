//! The worker thread: one per process, started again in a forked child. It samples, runs the
//! release policy and the limits, publishes the page and answers trim requests; without a
//! shared page (it could not be created) it does the same on a private one. Created with every signal blocked (signals belong to the
//! host); holds nothing the allocation path needs (docs/DESIGN.md, trap 8).
use crate::alloc::{accounting, backend, divert, lazy_start};
use crate::python::pymalloc;
use crate::sys::{procfs, stderr};
use crate::worker::cost_model::Booked;
use crate::worker::limits::{self, LimitWatch};
use crate::worker::page_file::{self, PageFile};
use crate::worker::policy::Policy;
use crate::worker::release;
use crate::worker::sampler::Sampler;
use core::sync::atomic::{AtomicBool, Ordering::*};
use memtrim_common::config::{Allocator, Config};
use memtrim_common::futex;
use memtrim_common::page::{Page, Reason, ReleaseKind, Stats};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The configuration, once it has selected this process for a worker.
static SELECTED: OnceLock<&'static Config> = OnceLock::new();
static STOP: AtomicBool = AtomicBool::new(false);

/// Arms the worker's start, MEMTRIM_START_MS from now (lazy_start), if the configuration and
/// MEMTRIM_ONLY select this process.
pub fn start_if_selected(cfg: &'static Config) {
    let names = procfs::names();
    if cfg.stats && cfg.selects(&names.iter().map(String::as_str).collect::<Vec<_>>()) && SELECTED.set(cfg).is_ok() {
        pymalloc::init(cfg.pymalloc);
        arm(cfg);
    }
}

fn arm(cfg: &Config) {
    lazy_start::arm(Duration::from_millis(cfg.start_ms), spawn);
}

fn spawn() {
    // SAFETY: plain pthread calls; the old mask is restored before returning.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut t: libc::pthread_t = 0;
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        set_own_stack(&mut attr);
        if libc::pthread_create(&mut t, &attr, main, core::ptr::null_mut()) != 0 {
            stderr::line("memtrim: cannot start the worker thread; counting goes on, nothing is published");
        }
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    }
}

/// A stack of the worker's own, not one from glibc's cache of joined threads' stacks: the worker
/// starts while the host runs (lazy_start), and a stack it took from that cache would make the
/// host's next thread allocate a stack and its TLS where it would have reused them.
///
/// # Safety
/// `attr` is initialised (pthread_attr_init).
unsafe fn set_own_stack(attr: &mut libc::pthread_attr_t) {
    const STACK: usize = 256 << 10;
    // SAFETY: a fresh anonymous mapping, whose first page becomes the guard and the rest the
    // stack (never unmapped: the worker lives as long as the process); attr is initialised.
    unsafe {
        let guard = libc::getauxval(libc::AT_PAGESZ) as usize;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
        let p = libc::mmap(core::ptr::null_mut(), STACK + guard, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0);
        if p == libc::MAP_FAILED
            || libc::mprotect(p, guard, libc::PROT_NONE) != 0
            || libc::pthread_attr_setstack(attr, p.cast::<u8>().add(guard).cast(), STACK) != 0
        {
            libc::pthread_attr_setstacksize(attr, STACK);
        }
    }
}

extern "C" fn main(_: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: names the calling thread; the name fits in 16 bytes.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), c"memtrim".as_ptr()) };
    accounting::exclude_this_thread();
    run();
    core::ptr::null_mut()
}

fn run() {
    let Some(cfg) = SELECTED.get().copied() else { return };
    let interval = Duration::from_millis(cfg.interval_ms);
    // The first sample comes one interval after the process (or fork) began, as the limit's
    // view of the live size at start: the rest of it when the start came sooner (lazy_start,
    // MEMTRIM_START_MS). A process that ends or execs before then never makes a page.
    std::thread::sleep(interval.saturating_sub(Duration::from_millis(cfg.start_ms)));
    if STOP.load(Acquire) {
        return;
    }
    let pid = std::process::id();
    let start_ticks = procfs::start_ticks();
    let page = match PageFile::create(&cfg.shm_dir, pid, start_ticks) {
        Ok(p) => p.page(),
        Err(e) => {
            stderr::line(&format!("memtrim: no stats page: {e}; releases and limits go on, nothing is published"));
            private_page()
        }
    };
    let mut limit = LimitWatch::new(cfg, accounting::totals().live);
    let mut sampler = Sampler::new(cfg, pid, start_ticks, limit.needs_smaps());
    let mut policy = Policy::new(cfg);
    let mut served = page.control.trim_served.load(Acquire);
    while !STOP.load(Acquire) {
        if procfs::only_caller_left() {
            // SAFETY: what glibc does when a process's last thread exits; runs the host's
            // exit handlers and ours (which unlink the page).
            unsafe { libc::exit(0) };
        }
        let requested = page.control.trim_requested.load(Acquire);
        divert::drain();
        let asked = requested != served;
        served = requested;
        let mut stats = sampler.sample(false);
        let now = Instant::now();
        let glibc = backend::active() == Allocator::Glibc;
        let decided = policy.decide(&stats, sampler.retained(), glibc, now);
        if let Some((kind, cpu_us)) = release::take_unbooked() {
            policy.book(now, Booked { kind, busy: false, cpu_us, released: None });
        }
        let mut release_for = |reason: Reason, kind: ReleaseKind, stats: &mut Stats| {
            if let Some(out) = release::release(cfg, reason, kind, sampler.heaps()) {
                *stats = sampler.sample(true);
                let booked = Booked { kind, busy: reason == Reason::Retained, cpu_us: out.cpu_us, released: out.pages };
                policy.released(booked, out.us, stats, sampler.retained(), now);
            }
        };
        if let Some((reason, kind)) = if asked { Some((Reason::Request, release::full(glibc))) } else { decided } {
            release_for(reason, kind, &mut stats);
        }
        if let limits::Action::Release = limit.check(&stats, now) {
            release_for(Reason::Limit, release::full(glibc), &mut stats);
            limit.check(&stats, now);
        }
        policy.fill(&mut stats);
        limit.fill(&mut stats);
        stats.hard_limit = cfg.hard_limit.unwrap_or(0);
        stats.refused_allocs = accounting::refused();
        pymalloc::fill(&mut stats);
        page.publish(stats);
        if page.control.trim_served.swap(served, Release) != served {
            futex::wake_all(&page.control.trim_served);
        }
        let report = page.control.report_requested.load(Acquire);
        if report != page.control.report_served.load(Relaxed) {
            crate::worker::memory_report::serve(cfg, pid, start_ticks, report);
            page.control.report_served.store(report, Release);
            futex::wake_all(&page.control.report_served);
        }
        pymalloc::refresh(Duration::from_millis(cfg.smaps_interval_ms));
        wait(&page.control.trim_requested, requested, interval, cfg.pymalloc_every_ms);
    }
}

/// The worker's sleep until the next sample or a request. A walk of CPython's pools that is
/// half done goes on every CONTINUE meanwhile; with MEMTRIM_PYMALLOC_EVERY_MS (for tests),
/// empty pools are given back that often.
fn wait(requested: &core::sync::atomic::AtomicU32, seen: u32, interval: Duration, every_ms: u64) {
    const CONTINUE: Duration = Duration::from_millis(10);
    let end = Instant::now() + interval;
    while let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        let slice = match every_ms {
            0 if pymalloc::continuing() => CONTINUE,
            0 => left,
            ms => Duration::from_millis(ms),
        };
        futex::wait(requested, seen, left.min(slice));
        if every_ms != 0 {
            pymalloc::request(true);
        }
        pymalloc::resume();
        if requested.load(Acquire) != seen {
            return;
        }
    }
}

/// A page in this process's memory alone, for when the shared one cannot be created (another
/// user may plant its name): the loop runs on it as on the shared one, and no one reads it.
fn private_page() -> &'static mut Page {
    // SAFETY: Page is plain integers and atomics, for which all zero is valid: what a fresh
    // page mapping holds before init.
    let page = Box::leak(Box::new(unsafe { core::mem::zeroed::<Page>() }));
    page.init();
    page
}

/// At exit: the worker stops at its next wake-up and the page's name goes now.
pub fn stop() {
    STOP.store(true, Release);
    lazy_start::disarm();
    page_file::unlink_current();
}

/// The child of a fork has no worker: it gets its own page and its own worker, an interval
/// from now (a child that execs or unshares at once stays single-threaded).
pub fn after_fork_in_child() {
    page_file::forget_in_child();
    if let Some(cfg) = SELECTED.get().copied() {
        STOP.store(false, Relaxed);
        arm(cfg);
    }
}
