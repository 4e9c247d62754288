//! One initial-exec TLS word per thread, holding the thread's accounting slot. It is defined and
//! reached in assembly because stable Rust only offers the general-dynamic TLS model in a cdylib,
//! whose `__tls_get_addr` may call malloc after a dlopen (docs/DESIGN.md, trap 3). Initial-exec costs
//! two instructions and never allocates.

// The word's values below a slot address: the thread has not claimed a slot yet, counts in the
// shared slot, is not counted.
pub const UNCLAIMED: usize = 0;
pub const SHARED_WORD: usize = 1;
pub const OFF: usize = 2;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(".pushsection .tbss,\"awT\",@nobits", ".p2align 3", "memtrim_tls_word:", ".zero 8", ".popsection",);

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn get() -> usize {
    let v: usize;
    // SAFETY: reads this thread's own TLS word; static TLS exists from the thread's first instruction.
    unsafe {
        core::arch::asm!(
            "mov {v}, qword ptr [rip + memtrim_tls_word@GOTTPOFF]",
            "mov {v}, qword ptr fs:[{v}]",
            v = out(reg) v,
            options(nostack, preserves_flags, readonly),
        );
    }
    v
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn set(v: usize) {
    // SAFETY: writes this thread's own TLS word.
    unsafe {
        core::arch::asm!(
            "mov {t}, qword ptr [rip + memtrim_tls_word@GOTTPOFF]",
            "mov qword ptr fs:[{t}], {v}",
            t = out(reg) _,
            v = in(reg) v,
            options(nostack, preserves_flags),
        );
    }
}

/// Elsewhere every thread reports through the shared atomic slot: exact, but slower.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn get() -> usize {
    SHARED_WORD
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn set(_: usize) {}
