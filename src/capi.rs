//! The in-process C API of include/memtrim.h.
use crate::alloc::lifecycle::{State, state};
use crate::alloc::{accounting, backend};
use crate::init;
use crate::worker::release;
use core::ffi::c_int;
use memtrim_common::config::Allocator;
use memtrim_common::page::Reason;

/// Mirrors `struct memtrim_stats`; fields are only ever appended.
#[repr(C)]
pub struct MemtrimStats {
    size: u32,
    version: u32,
    live_bytes: u64,
    peak_live_bytes: u64,
    allocs: u64,
    frees: u64,
}

const VERSION: u32 = 1;

/// # Safety
/// `out` is null or valid for writes of `out_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memtrim_get_stats(out: *mut MemtrimStats, out_size: usize) -> c_int {
    if out.is_null() || out_size < 8 {
        return -1;
    }
    let n = out_size.min(core::mem::size_of::<MemtrimStats>());
    let mut s = MemtrimStats { size: n as u32, version: VERSION, live_bytes: 0, peak_live_bytes: 0, allocs: 0, frees: 0 };
    // With MEMTRIM_DISABLE=1 nothing is counted: the figures stay zero.
    if state() != State::Off {
        let t = accounting::totals();
        (s.live_bytes, s.peak_live_bytes, s.allocs, s.frees) = (t.live, t.peak, t.allocs, t.frees);
    }
    // SAFETY: n is at most the size of s and of the caller's buffer, a different object.
    unsafe { core::ptr::copy_nonoverlapping(&s as *const MemtrimStats as *const u8, out as *mut u8, n) };
    0
}

/// With MEMTRIM_DISABLE=1 the library is a pure pass-through: nothing is released; nor before
/// the constructor has read the configuration.
#[unsafe(no_mangle)]
pub extern "C" fn memtrim_trim() -> usize {
    match init::config().filter(|_| state() != State::Off) {
        Some(cfg) => {
            let kind = release::full(backend::active() == Allocator::Glibc);
            release::release(cfg, Reason::Api, kind, None).map_or(0, |o| o.released as usize)
        }
        None => 0,
    }
}
