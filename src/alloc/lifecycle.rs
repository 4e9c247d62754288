//! The library's initialisation state, as an atomic state machine that the constructor (init.rs)
//! drives and the allocation path reads: until it is Ready every thread counts in the shared
//! slot; Off means nothing is counted.
use core::sync::atomic::{AtomicU8, Ordering::*};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum State {
    Uninit,
    Busy,
    Ready,
    Off,
}

static STATE: AtomicU8 = AtomicU8::new(State::Uninit as u8);

#[inline]
pub fn state() -> State {
    match STATE.load(Acquire) {
        0 => State::Uninit,
        1 => State::Busy,
        2 => State::Ready,
        _ => State::Off,
    }
}

/// Uninit to Busy; false if another caller has begun (a re-entrant or concurrent one).
pub fn begin() -> bool {
    STATE.compare_exchange(State::Uninit as u8, State::Busy as u8, AcqRel, Acquire).is_ok()
}

/// Busy to Ready or Off, once the configuration is read and the accounting set up.
pub fn finish(ready: bool) {
    STATE.store(if ready { State::Ready } else { State::Off } as u8, Release);
}
