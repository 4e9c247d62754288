//! Initialisation, driving the atomic state machine of alloc/lifecycle.rs. Allocations arrive before any constructor runs and
//! count in the shared slot until the constructor has read the configuration and made the
//! thread-exit key; a re-entrant or concurrent caller never waits (docs/DESIGN.md, trap 5). Under
//! AT_SECURE the environment is ignored and no file is created (docs/DESIGN.md, trap 12).
use crate::alloc::lifecycle::{self, State};
use crate::alloc::{accounting, backend, divert};
use crate::python::pymalloc;
use crate::sys::{environ, jemalloc_ctl, panic_hook, stderr};
use crate::worker::{release, report, thread as worker};
use memtrim_common::config::{Allocator, Config, LogLevel};
use std::sync::OnceLock;

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The configuration, once the constructor has read it.
pub fn config() -> Option<&'static Config> {
    CONFIG.get()
}

// A unit-test binary of the library neither runs the constructor nor the destructor: its tests
// run on the system's malloc, with nothing started (the functions stay, as in the library).
#[used]
#[cfg_attr(not(test), unsafe(link_section = ".init_array"))]
static CONSTRUCTOR: extern "C" fn() = constructor;

#[used]
#[cfg_attr(not(test), unsafe(link_section = ".fini_array"))]
static DESTRUCTOR: extern "C" fn() = destructor;

extern "C" fn constructor() {
    if !lifecycle::begin() {
        return;
    }
    panic_hook::install();
    // Under AT_SECURE (setuid and the like) the environment belongs to a less trusted user.
    // SAFETY: getauxval has no preconditions.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    let mut warnings = Vec::new();
    let cfg = if secure { Config::defaults() } else { Config::from_pairs(environ::pairs(), &mut |w| warnings.push(w.to_owned())) };
    if cfg.log >= LogLevel::Warn {
        warnings.iter().for_each(|w| stderr::line(w));
    }
    let alone = backend::glibc_alone();
    if cfg.log >= LogLevel::Info {
        match alone {
            Some(backend::GlibcAlone::Header) => {
                stderr::line("memtrim: glibc's chunk header is not the one glibc 2.28 to 2.41 write: glibc serves alone, nothing is counted")
            }
            Some(backend::GlibcAlone::MallocCheck) => {
                stderr::line("memtrim: glibc checks its heap (MALLOC_CHECK_, glibc.malloc.check) and marks its chunks: glibc serves alone, nothing is counted")
            }
            None => {}
        }
    }
    let (off, hard_limit) = (cfg.disable || alone.is_some(), cfg.hard_limit);
    if backend::active() == Allocator::Jemalloc {
        jemalloc_ctl::set_decay(cfg.dirty_decay_ms, cfg.muzzy_decay_ms);
    }
    let _ = CONFIG.set(cfg);
    if off {
        lifecycle::finish(false);
        return;
    }
    accounting::init(hard_limit);
    // SAFETY: registers plain functions.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child)) };
    lifecycle::finish(true);
    if let Some(cfg) = config().filter(|_| !secure) {
        worker::start_if_selected(cfg);
    }
}

extern "C" fn before_fork() {
    accounting::before_fork();
}

extern "C" fn after_fork_in_parent() {
    accounting::after_fork_in_parent();
}

extern "C" fn after_fork_in_child() {
    accounting::after_fork_in_child();
    divert::after_fork_in_child();
    release::after_fork_in_child();
    pymalloc::after_fork_in_child();
    worker::after_fork_in_child();
}

/// Runs from `exit` (and return from main) after the host's own exit handlers.
extern "C" fn destructor() {
    if lifecycle::state() != State::Ready {
        return;
    }
    worker::stop();
    if config().is_some_and(|c| c.report) {
        report::at_exit();
    }
}
