//! Torn reads: a writer publishes as fast as it can while a reader hammers the same page through
//! a second, read-only mapping of the same file (as the CLI maps a process's page). Every field
//! the writer publishes derives from one counter, so any snapshot `Page::read` returns as Ok must
//! equal the one publication of its counter, field for field. A plain copy without the seqlock
//! is taken alongside, to show that the race is real (informational: how often it tears depends
//! on the scheduling).
use memtrim_common::page::{FILE_BYTES, Page, ReadError, Stats};
use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

const WORDS: usize = core::mem::size_of::<Stats>() / 8;

/// The publication number `n`: every word of Stats a different function of n (whatever fields
/// the layout has) but stats_bytes, live_bytes n itself, so that a mix of two publications cannot
/// look like one.
fn stats_of(n: u64) -> Stats {
    let mut s = Stats::default();
    let live = core::mem::offset_of!(Stats, live_bytes) / 8;
    let check = core::mem::offset_of!(Stats, check) / 8;
    // SAFETY: Stats is repr(C) plain data, a whole number of u64 words (asserted in page.rs).
    let words = unsafe { &mut *(&mut s as *mut Stats as *mut [u64; WORDS]) };
    for (i, w) in words.iter_mut().enumerate() {
        let k = 2 * i as u64 + 3;
        *w = match i {
            _ if i == live => n,
            _ if i == check => 0,
            _ => n.wrapping_mul(0x9e37_79b9_7f4a_7c15 ^ k).rotate_left((k % 61) as u32),
        };
    }
    // what the writer and the reader set: the length of the writer's stats
    s.stats_bytes = core::mem::size_of::<Stats>() as u64;
    s
}

fn expected(n: u64) -> Stats {
    let mut s = stats_of(n);
    s.seal();
    s
}

/// A FILE_BYTES file mapped twice: (read-write for the writer, read-only for the reader).
fn two_mappings() -> (usize, usize) {
    let path = std::env::temp_dir().join(format!("memtrim-torn-test.{}", std::process::id()));
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: plain syscalls on a file of our own; the mappings live until the process exits.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o600);
        assert!(fd >= 0, "open {}: {}", path.display(), std::io::Error::last_os_error());
        libc::unlink(c.as_ptr());
        assert_eq!(libc::ftruncate(fd, FILE_BYTES as libc::off_t), 0);
        let w = libc::mmap(core::ptr::null_mut(), FILE_BYTES, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        let r = libc::mmap(core::ptr::null_mut(), FILE_BYTES, libc::PROT_READ, libc::MAP_SHARED, fd, 0);
        assert!(w != libc::MAP_FAILED && r != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        assert_ne!(w, r);
        libc::close(fd);
        (w as usize, r as usize)
    }
}

#[test]
fn reader_never_gets_an_inconsistent_snapshot() {
    let (w, r) = two_mappings();
    // SAFETY: w is a fresh zeroed read-write mapping of the page, used only by the writer.
    unsafe { (*(w as *mut Page)).init() };
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, published) = (stop.clone(), published.clone());
        std::thread::spawn(move || {
            // SAFETY: the page's mapping, of which this thread is the only writer.
            let page = unsafe { &*(w as *const Page) };
            let mut n = 1u64;
            while !stop.load(Relaxed) {
                page.publish(stats_of(n));
                n += 1;
            }
            published.store(n - 1, Relaxed);
        })
    };
    // SAFETY: a read-only mapping of the same page.
    let page = unsafe { &*(r as *const Page) };
    let (mut ok, mut torn, mut bad, mut naive_torn, mut distinct) = (0u64, 0u64, Vec::new(), 0u64, 0u64);
    let mut last_n = 0;
    // from the first publication on (before it the page is all zeros, which read() rejects)
    while page.seq.load(Acquire) == 0 {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        match page.read() {
            Ok(s) => {
                ok += 1;
                let n = s.live_bytes;
                if s != expected(n) && bad.len() < 5 {
                    bad.push(format!("{s:?}"));
                }
                if n != last_n {
                    distinct += 1;
                    last_n = n;
                }
            }
            Err(ReadError::Torn) => torn += 1,
            Err(e) => panic!("read() failed with {e:?} on a valid page"),
        }
        // the same copy without the seqlock
        // SAFETY: valid memory; the result is only compared.
        let raw = unsafe { core::ptr::read_volatile(page.stats.as_ptr() as *const Stats) };
        if raw != expected(raw.live_bytes) {
            naive_torn += 1;
        }
    }
    stop.store(true, Relaxed);
    writer.join().unwrap();
    let published = published.load(Relaxed);
    eprintln!(
        "writer published {published} times; reader: {ok} consistent snapshots ({distinct} distinct), {torn} reads gave up (Torn), \
         {naive_torn} plain copies without the seqlock were inconsistent"
    );
    assert!(bad.is_empty(), "read() returned inconsistent snapshots:\n{}", bad.join("\n"));
    assert!(published > 10_000, "the writer published only {published} times: no hammering");
    assert!(ok > 1_000, "only {ok} successful reads: the reader did not get through");
    assert!(distinct > 100, "the reader saw only {distinct} distinct publications: it did not race the writer");
}

/// The check word catches what the seqlock cannot: a page corrupted outside it (another
/// process scribbling, a bad copy), one word at a time.
#[test]
fn any_single_corrupted_word_is_rejected() {
    let words = core::mem::size_of::<Stats>() / 8;
    for i in 0..words {
        let mut buf = vec![0u64; FILE_BYTES / 8];
        // SAFETY: buf is FILE_BYTES long and 8-aligned, as a page mapping.
        let page = unsafe { &mut *(buf.as_mut_ptr() as *mut Page) };
        page.init();
        page.publish(stats_of(12345));
        assert_eq!(page.read(), Ok(expected(12345)));
        // flip one bit of word i (the check word included)
        page.stats[i].fetch_xor(1 << (i % 64), Relaxed);
        assert_eq!(page.read(), Err(ReadError::Torn), "flipping a bit of word {i} of Stats went unnoticed");
    }
}
