//! `memtrim serve [--listen ADDR] [--dir DIR] [--once FILE]`: the pages of a host for Prometheus.
//!
//! A small HTTP/1.1 server on std::net: `GET /metrics` (and HEAD) answers the exposition text of
//! metrics.rs, `/` a short index, anything else 404 (405 for other methods). Every response
//! closes its connection. One thread per connection, at most --max-connections at once. A
//! request head must arrive within 2 s (or --timeout if shorter) and a response must be taken
//! within --timeout, so slow, silent or vanished clients only ever hold their own thread. With
//! every connection taken, a new one closes the oldest connection already answered (kept open
//! for at most 0.5 s for its client to close first), else (with a 503) the oldest one still
//! sending its head, of the peer address holding most such connections: clients trickling a
//! request (slowloris) or trickling after their answer give way to complete requests, and one
//! address cannot starve the others; only when every connection is answering a complete request
//! is the new one answered 503. One scan
//! runs at a time; the text is rendered before any byte goes out, so a slow reader never
//! holds the scan. Nothing a client sends can make it panic (release builds abort on panic).
//!
//! `--once FILE` writes the same text to FILE atomically (memtrim_common::atomic_file: a temporary file in
//! FILE's directory, then rename; a FILE that is not a regular file is refused) for
//! node_exporter's textfile collector, and exits; `--once -` prints it.
use crate::cli::{self, PageDir};
use crate::metrics::{self, Counters};
use memtrim_common::atomic_file;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Opts {
    /// Address and port to listen on (port 0 picks one; the address is printed on stderr)
    #[arg(short, long, value_name = "ADDR", value_parser = resolve, default_value = "127.0.0.1:9477")]
    listen: SocketAddr,
    /// A client must take the response within this, and send its request within it or 2 s,
    /// whichever is shorter (> 0, <= 3600)
    #[arg(short, long, value_name = "SECS", value_parser = timeout, default_value = "10")]
    timeout: Duration,
    /// Connections held at once (1 to 10000); past it, the oldest one still sending its request
    /// is closed, of the address holding most of them
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000), default_value = "64")]
    max_connections: usize,
    /// Write the text to FILE atomically (temporary file and rename in its directory, mode
    /// 0644) and exit: for node_exporter's textfile collector (name it *.prom); FILE must be a
    /// regular file or absent (a symlink, FIFO or device is refused); - prints it on stdout
    #[arg(long, value_name = "FILE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    once: Option<String>,
    #[command(flatten)]
    dir: PageDir,
}

fn timeout(s: &str) -> Result<Duration, String> {
    cli::seconds(s, |s| s > 0.0 && s <= 3600.0, "(> 0, <= 3600)")
}

/// The longest request head accepted (request line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// A request head must arrive within this (or --timeout if shorter): a scraper sends it at once.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection whose request head has not arrived yet, or that has been answered and is only
/// waiting for its client to close: the kinds that may be closed to make room for a new
/// connection.
struct Waiting {
    id: u64,
    peer: IpAddr,
    /// Its response is sent: closing it costs its client nothing.
    answered: bool,
    /// The same socket as the handler's, to shut it down from the accept loop.
    stream: TcpStream,
}

struct Server {
    dir: PathBuf,
    counters: Counters,
    /// One scan at a time.
    scan_lock: Mutex<()>,
    active: AtomicUsize,
    max_connections: usize,
    /// Oldest first.
    waiting: Mutex<Vec<Waiting>>,
    timeout: Duration,
    /// Last directory error reported on stderr, so that it is reported once per change.
    last_dir_error: Mutex<Option<String>>,
}

pub fn main(o: Opts) -> i32 {
    let Opts { listen: addr, once, timeout, max_connections, dir } = o;
    let dir = dir.path();
    if let Some(file) = once {
        return write_once(&dir, &file);
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("memtrim serve: cannot listen on {addr}: {e}");
            return 1;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    if !dir.is_dir() {
        eprintln!("memtrim serve: warning: {} is not a directory (yet); serving no processes until it is", dir.display());
    }
    eprintln!("memtrim serve: listening on http://{local}/metrics (pages in {})", dir.display());
    let server = Arc::new(Server {
        dir,
        counters: Counters::default(),
        scan_lock: Mutex::new(()),
        active: AtomicUsize::new(0),
        max_connections,
        waiting: Mutex::new(Vec::new()),
        timeout,
        last_dir_error: Mutex::new(None),
    });
    accept_loop(&listener, &server);
    1
}

/// `HOST:PORT`, `[V6]:PORT`, or `:PORT` (every IPv4 address).
/// `--listen ADDR`: HOST:PORT, or :PORT for every address.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    match full.to_socket_addrs() {
        Ok(mut a) => a.next().ok_or_else(|| "no address".to_string()),
        Err(e) => Err(format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:9477)")),
    }
}

fn write_once(dir: &Path, file: &str) -> i32 {
    let counters = Counters::default();
    let (text, err) = metrics::scrape(dir, &counters, false);
    if let Some(e) = err {
        eprintln!("memtrim serve: warning: {e}");
    }
    if file == "-" {
        let mut out = std::io::stdout().lock();
        return match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => 0,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => 0,
            Err(e) => {
                eprintln!("memtrim serve: cannot write the output: {e}");
                1
            }
        };
    }
    match atomic_file::replace(Path::new(file), text.as_bytes(), 0o644) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("memtrim serve: {e}");
            1
        }
    }
}

fn accept_loop(listener: &TcpListener, server: &Arc<Server>) {
    let mut last_error_report: Option<Instant> = None;
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok((s, peer)) => (s, peer.ip()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and the like: say so now and then, wait a little, go on.
                if last_error_report.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    eprintln!("memtrim serve: accept: {e}");
                    last_error_report = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if !server.make_room() {
            server.counters.rejected.fetch_add(1, Relaxed);
            refuse(&stream, &server.counters);
            continue;
        }
        next_id += 1;
        let id = next_id;
        let Ok(clone) = stream.try_clone() else { continue };
        server.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(Waiting { id, peer, answered: false, stream: clone });
        server.active.fetch_add(1, AcqRel);
        let s = Arc::clone(server);
        // The closure owns the stream; if the thread cannot start, the stream is dropped
        // (closed) with it.
        let spawned = std::thread::Builder::new().name("memtrim-http".into()).stack_size(256 * 1024).spawn(move || {
            struct Slot<'a>(&'a AtomicUsize);
            impl Drop for Slot<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, AcqRel);
                }
            }
            let _slot = Slot(&s.active);
            handle(&s, stream, id, peer);
        });
        if spawned.is_err() {
            server.leave_waiting(id);
            server.active.fetch_sub(1, AcqRel);
            server.counters.rejected.fetch_add(1, Relaxed);
        }
    }
}

impl Server {
    /// Whether a new connection may be served. With every connection taken, the oldest one
    /// already answered is closed; failing that, the oldest one still waiting for its request
    /// head, of the peer address with most such connections, is answered 503 and closed (its
    /// thread then ends). Closed connections whose threads have not ended yet still count, up to
    /// twice the limit, so that the threads stay bounded.
    fn make_room(&self) -> bool {
        let active = self.active.load(Acquire);
        if active < self.max_connections {
            return true;
        }
        if active >= 2 * self.max_connections {
            return false;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = waiting.iter().position(|w| w.answered) {
            let done = waiting.remove(i);
            drop(waiting);
            let _ = done.stream.shutdown(std::net::Shutdown::Both);
            return true;
        }
        let mut per_peer: HashMap<IpAddr, usize> = HashMap::new();
        for w in waiting.iter() {
            *per_peer.entry(w.peer).or_default() += 1;
        }
        let Some((heaviest, _)) = per_peer.into_iter().max_by_key(|&(_, n)| n) else { return false };
        let Some(oldest) = waiting.iter().position(|w| w.peer == heaviest) else { return false };
        let evicted = waiting.remove(oldest);
        drop(waiting);
        self.counters.rejected.fetch_add(1, Relaxed);
        refuse(&evicted.stream, &self.counters);
        true
    }

    /// Takes connection `id` off the waiting list; false if it was no longer there (closed to
    /// make room).
    fn leave_waiting(&self, id: u64) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.iter().position(|w| w.id == id) {
            Some(i) => {
                waiting.remove(i);
                true
            }
            None => false,
        }
    }
}

/// 503 without blocking the accept loop: a socket we have sent nothing on takes it whole (a
/// write that would block is dropped). The socket is shut down, which also wakes its handler.
fn refuse(stream: &TcpStream, counters: &Counters) {
    let _ = stream.set_nonblocking(true);
    let body = "too many connections\n";
    let mut s = stream;
    let _ = s.write_all(response_head(503, "text/plain; charset=utf-8", body.len(), &[]).as_bytes());
    let _ = s.write_all(body.as_bytes());
    counters.count_http(503);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

enum HeadError {
    /// Closed (or reset) before sending anything.
    Closed,
    Timeout,
    TooLarge,
    Bad,
}

/// Reads the request head (up to the empty line) before `deadline`.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        if stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).is_err() {
            return Err(HeadError::Closed);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(if buf.is_empty() { HeadError::Closed } else { HeadError::Bad }),
            Ok(n) => {
                let from = buf.len().saturating_sub(3);
                buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                if let Some(end) = head_end(&buf, from) {
                    buf.truncate(end);
                    return Ok(buf);
                }
                if buf.len() > MAX_HEAD {
                    return Err(HeadError::TooLarge);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(HeadError::Timeout),
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// Where the head ends (after "\r\n\r\n" or "\n\n"), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    for (i, w) in tail.windows(2).enumerate() {
        if w == b"\n\n" {
            return Some(from + i + 2);
        }
        if w == b"\n\r" && tail.get(i + 2) == Some(&b'\n') {
            return Some(from + i + 3);
        }
    }
    None
}

/// A parsed request line: method and path (query string dropped).
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(head.get(..line_end)?).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    Some((method, path))
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn response_head(code: u16, content_type: &str, len: usize, extra: &[(&str, &str)]) -> String {
    let mut h = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        reason_phrase(code)
    );
    for (k, v) in extra {
        h.push_str(k);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>memtrim</title></head><body>\n<h1>memtrim serve</h1>\n<p><a href=\"/metrics\">/metrics</a>: every process under libmemtrim.so, in the Prometheus text format.</p>\n</body></html>\n";

const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long an answered connection is kept open for its client to close first.
const LINGER: Duration = Duration::from_millis(500);

fn handle(server: &Server, mut stream: TcpStream, id: u64, peer: IpAddr) {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + server.timeout.min(HEAD_TIMEOUT);
    let head = read_head(&mut stream, deadline);
    if !server.leave_waiting(id) {
        return; // closed to make room for a newer connection, and answered 503
    }
    let (code, ctype, body, head_only, extra): (u16, &str, String, bool, &[(&str, &str)]) = match head {
        Err(HeadError::Closed) => return,
        Err(HeadError::Timeout) => {
            server.counters.timeouts.fetch_add(1, Relaxed);
            (408, "text/plain; charset=utf-8", "request timeout\n".into(), false, &[])
        }
        Err(HeadError::TooLarge) => (431, "text/plain; charset=utf-8", "request head too large\n".into(), false, &[]),
        Err(HeadError::Bad) => (400, "text/plain; charset=utf-8", "bad request\n".into(), false, &[]),
        Ok(head) => match request_line(&head) {
            None => (400, "text/plain; charset=utf-8", "bad request\n".into(), false, &[]),
            Some((method, path)) if method == "GET" || method == "HEAD" => {
                let head_only = method == "HEAD";
                match path {
                    "/metrics" => (200, METRICS_TYPE, scrape(server), head_only, &[]),
                    "/" => (200, "text/html; charset=utf-8", INDEX.into(), head_only, &[]),
                    _ => (404, "text/plain; charset=utf-8", "not found; the metrics are at /metrics\n".into(), head_only, &[]),
                }
            }
            Some(_) => (405, "text/plain; charset=utf-8", "only GET and HEAD\n".into(), false, &[("Allow", "GET, HEAD")]),
        },
    };
    server.counters.count_http(code);
    let head = response_head(code, ctype, body.len(), extra);
    let _ = stream.set_write_timeout(Some(server.timeout));
    let sent = stream.write_all(head.as_bytes()).and_then(|_| if head_only { Ok(()) } else { stream.write_all(body.as_bytes()) });
    if sent.is_err() {
        return; // the client vanished or stopped reading: drop the connection
    }
    // Close gracefully: say we are done, then let the client close first (closing with unread
    // input would reset the connection and could lose the response at the client), for LINGER
    // at most in all, however the client trickles; meanwhile a new connection may close it.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let Ok(clone) = stream.try_clone() else { return };
    server.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(Waiting { id, peer, answered: true, stream: clone });
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 1024];
    let mut drained = 0usize;
    while drained < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    server.leave_waiting(id);
}

fn scrape(server: &Server) -> String {
    let _one = server.scan_lock.lock().unwrap_or_else(|e| e.into_inner());
    let (text, err) = metrics::scrape(&server.dir, &server.counters, true);
    let mut last = server.last_dir_error.lock().unwrap_or_else(|e| e.into_inner());
    if err != *last {
        match &err {
            Some(e) => eprintln!("memtrim serve: {e}"),
            None => eprintln!("memtrim serve: {} is readable again", server.dir.display()),
        }
        *last = err;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Some(("GET", "/metrics")));
        assert_eq!(request_line(b"GET /metrics?x=1 HTTP/1.0\n\n"), Some(("GET", "/metrics")));
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"GET  /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b""), None);
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(head_end(b"ab", 5), None);
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(resolve("127.0.0.1:9477").unwrap().port(), 9477);
        assert!(resolve(":9477").unwrap().ip().is_unspecified());
        assert!(resolve("[::1]:0").is_ok());
        assert!(resolve("nonsense").is_err());
    }
}
