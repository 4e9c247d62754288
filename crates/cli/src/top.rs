//! `memtrim top [--delay SECS] [--sort KEY] [--dir DIR]`: a full-screen view of every live
//! process with a page, refreshed, like htop: a header with totals, the rows of `memtrim ls`
//! (as many columns as the width allows; 80 columns is enough), one-key sorting.
//!
//! The terminal goes into raw mode on the alternate screen and is restored on q, on Ctrl-C,
//! on SIGINT/SIGTERM/SIGHUP and on a panic.
use crate::cli::{self, PageDir};
use crate::pages::{self, Entry};
use crate::view::{self, SortKey};
use core::sync::atomic::{AtomicI32, Ordering::*};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Opts {
    /// Refresh every SECS seconds (from 0.1 to 3600)
    #[arg(short, long, value_name = "SECS", value_parser = delay, default_value = "1")]
    delay: Duration,
    /// Sort by KEY: largest first, or by pid
    #[arg(short, long, value_name = "KEY", value_parser = cli::sort_key(), default_value = "rss")]
    sort: SortKey,
    #[command(flatten)]
    dir: PageDir,
}

fn delay(s: &str) -> Result<Duration, String> {
    cli::seconds(s, |s| (0.1..=3600.0).contains(&s), "from 0.1 to 3600")
}

const KEYS: &str = "q quit  l live  r rss  p pss  t retained  f frag  n pid  T tree  ↑↓ scroll";

/// The terminal as it was, for every way out.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);
/// Write end of the self-pipe the signal handler wakes the loop with.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static RESIZED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGWINCH {
        RESIZED.store(1, Relaxed);
    } else {
        SIGNAL.store(sig, Relaxed);
    }
    let fd = WAKE_FD.load(Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the byte only wakes poll.
        unsafe { libc::write(fd, b"x".as_ptr() as *const libc::c_void, 1) };
    }
}

fn restore() {
    let saved = SAVED.lock().map(|mut g| g.take()).unwrap_or(None);
    if let Some(t) = saved {
        // SAFETY: t came from tcgetattr on the same descriptor.
        unsafe { libc::tcsetattr(0, libc::TCSAFLUSH, &t) };
        // cursor on, attributes off, back to the main screen
        write_all(b"\x1b[0m\x1b[?25h\x1b[?1049l");
    }
}

fn write_all(mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: b is a valid buffer.
        let n = unsafe { libc::write(1, b.as_ptr() as *const libc::c_void, b.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        b = &b[n as usize..];
    }
}

fn enter_raw() -> Result<(), String> {
    // SAFETY: plain termios calls on fd 0; t is a valid out-pointer.
    unsafe {
        let mut t: libc::termios = core::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return Err(format!("cannot read the terminal settings: {}", std::io::Error::last_os_error()));
        }
        let mut raw = t;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL | libc::BRKINT | libc::INPCK | libc::ISTRIP);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        *SAVED.lock().map_err(|_| "lock")? = Some(t);
        if libc::tcsetattr(0, libc::TCSAFLUSH, &raw) != 0 {
            SAVED.lock().map_err(|_| "lock")?.take();
            return Err(format!("cannot set the terminal to raw mode: {}", std::io::Error::last_os_error()));
        }
    }
    // alternate screen, cursor off
    write_all(b"\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
    Ok(())
}

fn install_handlers() -> Result<libc::c_int, String> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array; the handlers only touch atomics and write(2).
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        WAKE_FD.store(fds[1], Relaxed);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGWINCH] {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0; // no SA_RESTART: poll returns EINTR
            libc::sigaction(sig, &sa, core::ptr::null_mut());
        }
    }
    Ok(fds[0])
}

fn term_size() -> (usize, usize) {
    // SAFETY: all-zero is a valid winsize.
    let mut ws: libc::winsize = unsafe { core::mem::zeroed() };
    // SAFETY: ws is a valid out-pointer.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 { (ws.ws_col as usize, ws.ws_row as usize) } else { (80, 24) }
}

struct View {
    key: SortKey,
    tree: bool,
    scroll: usize,
    delay: Duration,
    dir: std::path::PathBuf,
}

pub fn main(o: Opts) -> i32 {
    let mut v = View { key: o.sort, tree: true, scroll: 0, delay: o.delay, dir: o.dir.path() };
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(0) != 1 || libc::isatty(1) != 1 } {
        eprintln!("memtrim top: needs a terminal on stdin and stdout (`memtrim ls` prints once)");
        return 1;
    }
    if let Err(e) = std::fs::read_dir(&v.dir) {
        eprintln!("memtrim top: cannot read {}: {e}", v.dir.display());
        return 1;
    }
    let wake = match install_handlers() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("memtrim top: {e}");
            return 1;
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        default_hook(info);
    }));
    if let Err(e) = enter_raw() {
        eprintln!("memtrim top: {e}");
        return 1;
    }
    let code = run(&mut v, wake);
    restore();
    code
}

enum Key {
    Char(u8),
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
}

/// Keys from raw input bytes; escape sequences other than the arrows are skipped.
fn keys(buf: &[u8]) -> Vec<Key> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        i += 1;
        if b != 0x1b {
            out.push(Key::Char(b));
            continue;
        }
        if i >= buf.len() || (buf[i] != b'[' && buf[i] != b'O') {
            continue; // a lone Esc
        }
        i += 1;
        let start = i;
        while i < buf.len() && !(0x40..=0x7e).contains(&buf[i]) {
            i += 1;
        }
        if i >= buf.len() {
            break;
        }
        let seq = &buf[start..=i];
        i += 1;
        match seq {
            b"A" => out.push(Key::Up),
            b"B" => out.push(Key::Down),
            b"5~" => out.push(Key::PageUp),
            b"6~" => out.push(Key::PageDown),
            b"H" | b"1~" => out.push(Key::Home),
            b"F" | b"4~" => out.push(Key::End),
            _ => {}
        }
    }
    out
}

fn run(v: &mut View, wake: libc::c_int) -> i32 {
    let mut next = Instant::now();
    let mut scan = None;
    loop {
        let sig = SIGNAL.load(Relaxed);
        if sig != 0 {
            return 128 + sig;
        }
        if Instant::now() >= next || scan.is_none() {
            scan = pages::scan(&v.dir, false).ok();
            next = Instant::now() + v.delay;
            RESIZED.store(1, Relaxed);
        }
        if RESIZED.swap(0, Relaxed) != 0 {
            let frame = match &scan {
                Some(s) => draw(v, s),
                None => format!("\x1b[Hmemtrim top: cannot read {}\x1b[K\x1b[J", v.dir.display()),
            };
            write_all(frame.as_bytes());
        }
        let timeout = next.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 }];
        // SAFETY: fds is a valid array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.max(0)) };
        if n <= 0 {
            continue; // timeout or EINTR: the loop checks the flags
        }
        let mut buf = [0u8; 256];
        if fds[1].revents != 0 {
            // SAFETY: buf is valid; the pipe is non-blocking.
            while unsafe { libc::read(wake, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) } > 0 {}
        }
        if fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 && fds[0].revents & libc::POLLIN == 0 {
            return 0; // the terminal went away
        }
        if fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        // SAFETY: buf is valid.
        let n = unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n == 0 {
            return 0;
        }
        if n < 0 {
            continue;
        }
        let page_rows = term_size().1.saturating_sub(7).max(1);
        for k in keys(&buf[..n as usize]) {
            match k {
                Key::Char(b'q' | b'Q' | 3 | 4) => return 0,
                Key::Char(b'l') => v.key = SortKey::Live,
                Key::Char(b'r') => v.key = SortKey::Rss,
                Key::Char(b'p') => v.key = SortKey::Pss,
                Key::Char(b't') => v.key = SortKey::Retained,
                Key::Char(b'f') => v.key = SortKey::Frag,
                Key::Char(b'n') => v.key = SortKey::Pid,
                Key::Char(b'h') => v.key = SortKey::Heap,
                Key::Char(b'T') => v.tree = !v.tree,
                Key::Char(b' ') => next = Instant::now(),
                Key::Char(b'j') | Key::Down => v.scroll += 1,
                Key::Char(b'k') | Key::Up => v.scroll = v.scroll.saturating_sub(1),
                Key::PageDown => v.scroll += page_rows,
                Key::PageUp => v.scroll = v.scroll.saturating_sub(page_rows),
                Key::Home => v.scroll = 0,
                Key::End => v.scroll = usize::MAX / 2,
                Key::Char(_) => {}
            }
        }
        RESIZED.store(1, Relaxed);
    }
}

fn clip(s: &str, w: usize) -> String {
    s.chars().take(w).collect()
}

fn local_hms() -> String {
    // SAFETY: time/localtime_r with valid pointers.
    unsafe {
        let t = libc::time(core::ptr::null_mut());
        let mut tm: libc::tm = core::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

/// One frame: every line clipped to the width and cleared to its end, so that nothing wraps
/// and nothing of the previous frame stays.
fn draw(v: &mut View, scan: &pages::Scan) -> String {
    let (cols, rows) = term_size();
    let live: Vec<&Entry> = scan.live().collect();
    let sum = |f: fn(&memtrim_common::page::Stats) -> u64| live.iter().map(|e| f(&e.stats)).sum::<u64>();
    let (l, h, r, rss, pss) = (sum(|s| s.live_bytes), sum(|s| s.heap_bytes), sum(|s| s.retained_bytes), sum(|s| s.rss_bytes), sum(|s| s.pss_bytes));
    let (trims, released) = (sum(|s| s.trims), sum(|s| s.released_bytes));
    let frag = if h == 0 { "-".to_string() } else { format!("{:.1}%", r as f64 * 100.0 / h as f64) };
    let mut lines: Vec<String> = Vec::new();
    lines.push(format!(
        "memtrim top - {}  {} process{}  every {:.1} s  sort: {}{}",
        local_hms(),
        live.len(),
        if live.len() == 1 { "" } else { "es" },
        v.delay.as_secs_f64(),
        v.key.name(),
        if v.tree { "  tree" } else { "" }
    ));
    lines.push(format!("Live {}  Heap {}  Retained {} ({frag})", view::size(l), view::size(h), view::size(r)));
    lines.push(format!("RSS {}  PSS {}  Releases {trims}  Released {}", view::size(rss), view::size(pss), view::size(released)));
    let skipped = scan.skipped.len();
    lines.push(if skipped > 0 {
        format!("{skipped} page{} skipped in {}  (memtrim ls says why)", if skipped == 1 { "" } else { "s" }, scan.dir.display())
    } else {
        format!("pages in {}", scan.dir.display())
    });
    let ordered: Vec<(&Entry, String)> =
        if v.tree { view::tree(&live, v.key) } else { view::sorted(&live, v.key).into_iter().map(|e| (e, String::new())).collect() };
    let (header, body) = view::render(&ordered, Some(cols));
    let room = rows.saturating_sub(lines.len() + 2).max(1);
    v.scroll = v.scroll.min(body.len().saturating_sub(room));
    let mut out = String::with_capacity(cols * rows * 2);
    out.push_str("\x1b[H");
    for line in &lines {
        out.push_str(&clip(line, cols));
        out.push_str("\x1b[K\r\n");
    }
    // the header in reverse video, full width
    let h = clip(&header, cols);
    let pad = cols.saturating_sub(h.chars().count());
    // the sorted column's title underlined and bold
    let title = match v.key {
        SortKey::Pid => "PID",
        SortKey::Live => "LIVE",
        SortKey::Heap => "HEAP",
        SortKey::Retained => "RETAINED",
        SortKey::Rss => "RSS",
        SortKey::Pss => "PSS",
        SortKey::Frag => "FRAG%",
    };
    let marked = match h.split(' ').position(|w| w == title) {
        Some(_) => h.split(' ').map(|w| if w == title { format!("\x1b[1;4m{w}\x1b[22;24m") } else { w.to_string() }).collect::<Vec<_>>().join(" "),
        None => h,
    };
    out.push_str(&format!("\x1b[7m{marked}{}\x1b[0m\r\n", " ".repeat(pad)));
    let shown = body.iter().skip(v.scroll).take(room);
    let mut n = 0;
    for line in shown {
        out.push_str(&clip(line, cols));
        out.push_str("\x1b[K\r\n");
        n += 1;
    }
    if body.is_empty() {
        out.push_str(&clip("  (no live process with a memtrim page)", cols));
        out.push_str("\x1b[K\r\n");
        n += 1;
    }
    for _ in n..room {
        out.push_str("\x1b[K\r\n");
    }
    let more = body.len().saturating_sub(v.scroll + room);
    let footer = if more > 0 || v.scroll > 0 { format!("{KEYS}  [{}-{} of {}]", v.scroll + 1, v.scroll + n, body.len()) } else { KEYS.to_string() };
    let f = clip(&footer, cols.saturating_sub(1));
    let pad = cols.saturating_sub(1).saturating_sub(f.chars().count());
    out.push_str(&format!("\x1b[7m{f}{}\x1b[0m\x1b[J", " ".repeat(pad)));
    out
}
