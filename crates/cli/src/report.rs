//! `memtrim report PID [--json] [--timeout SECS] [--dir DIR]`: where a live process's memory is,
//! and what a release would return.
//!
//! The process is asked through its page, as `memtrim trim` asks (owner only: the page is opened
//! read-write): report_requested is incremented and the worker woken (a wake on
//! trim_requested, which its sleep waits on, without changing it). The worker gathers the
//! allocator's view (src/report_gather.rs) into `<page>.report`, then sets report_served. This
//! command reads that file (a regular file of the page's owner, never through a symlink),
//! removes it if it was written for its own request (concurrent reports share one file), and
//! adds the kernel's view from /proc/PID/smaps, each mapping classified:
//!
//! - main heap: `[heap]` (glibc's main arena, grown with brk);
//! - thread arenas: the 64 MiB reservations of glibc's thread heaps, by the addresses the
//!   worker read from their heap_info headers (not by a guess from the mappings' shapes);
//! - large mmapped blocks: glibc's mmapped chunks, by the addresses the worker found; a mapping
//!   the kernel merged with other anonymous memory is split by the blocks' resident bytes
//!   (mincore in the process), PSS in the mapping's PSS/RSS ratio, swap by length;
//! - jemalloc arenas (jemalloc backend): jemalloc's extents cannot be told from other anonymous
//!   memory by address, so its own resident figure (stats.resident) is moved out of "other
//!   anonymous" into this category: an estimate, marked as such;
//! - thread stacks: `[stack]`, and a private anonymous read-write mapping directly above an
//!   inaccessible anonymous mapping of at most 1 MiB (the guard page glibc puts below each thread
//!   stack), outside every thread heap; an anonymous mapping that the kernel merged with a stack
//!   counts as stack;
//! - other anonymous: the rest of the private anonymous memory (interpreter arenas such as
//!   pymalloc's or Ruby's heap pages, the program's own mmaps);
//! - code (file-backed, executable, and [vdso]); file data (file-backed, not executable);
//!   shared memory (/dev/shm, SysV, memfd, shared anonymous); memtrim (its page, side pool and
//!   worker stack); kernel ([vvar], [vsyscall]).
//!
//! Then a verdict: how much of the heap is retained, which arenas hold the free bytes, what a
//! release would return, and what the report cost the process.
use crate::cli::{self, PageDir};
use crate::pages;
use crate::request::{Ask, Target};
use crate::smaps::{self, Mapping};
use crate::{json, view};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Opts {
    /// The process
    #[arg(value_parser = cli::pid())]
    pid: u32,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
    /// How long to wait for the process
    #[arg(short, long, value_name = "SECS", value_parser = cli::request_timeout, default_value = "10")]
    timeout: Duration,
    #[command(flatten)]
    dir: PageDir,
}

/// The report file's format version this reader understands.
const VERSION: u64 = 1;
/// The largest report read (parsing takes several times its size in memory, and the file is
/// the process's own claim): a bigger one is refused.
const MAX_REPORT: u64 = 1 << 20;
/// The largest guard page (mapping) below a thread stack that the stack heuristic accepts.
const MAX_GUARD: u64 = 1 << 20;

pub fn main(o: Opts) -> i32 {
    let (pid, as_json, timeout, dir) = (o.pid, o.json, o.timeout, o.dir.path());
    match run(&dir, pid, timeout, as_json) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(why) => {
            eprintln!("memtrim report: pid {pid}: {why}");
            1
        }
    }
}

fn run(dir: &Path, pid: u32, timeout: Duration, as_json: bool) -> Result<String, String> {
    let (path, start) = pages::locate(dir, pid)?;
    let deadline = Instant::now() + timeout;
    let target = Target::open(&path, pid, start, Ask::Report, deadline)?;
    let (map, stats) = (&target.map, &target.stats);
    let report_path = PathBuf::from(format!("{}{REPORT_SUFFIX}", path.display()));
    // The file is removed by the reader it was written for (the last to ask before it was
    // written); a reader that finds it gone because another took it asks again, within the
    // timeout. Missing again and again although nobody else asked: the process could not write.
    let mut missing = 0;
    let (raw, report) = loop {
        let request = target.post()?;
        target.wait(request, deadline)?;
        match read_report(map) {
            Ok(raw) => {
                let r = Json::parse(&raw).map_err(|e| format!("{}: not a report: {e}", report_path.display()))?;
                if r.get("version").u64() != VERSION {
                    return Err(format!("the report is of version {}, this memtrim reads version {VERSION} (another memtrim version in the process?)", r.get("version").u64()));
                }
                if r.get("pid").u64() != pid as u64 || r.get("start_ticks").u64() != start {
                    return Err(format!("{} describes another process", report_path.display()));
                }
                let written_for = r.get("request").u64() as u32;
                if written_for.wrapping_sub(request) as i32 >= 0 {
                    if written_for == request {
                        let _ = map.remove(REPORT_SUFFIX);
                    }
                    break (raw, r);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if target.requested()? == request {
                    missing += 1;
                }
                if missing >= 5 {
                    return Err(format!(
                        "the process answered but wrote no report ({} is missing: it could not write there, see its stderr, or other `memtrim report`s took it)",
                        report_path.display()
                    ));
                }
            }
            Err(e) => return Err(format!("{}: {e}", report_path.display())),
        }
        if Instant::now() >= deadline {
            return Err("timed out: the report was taken by another `memtrim report` each time".into());
        }
    };
    let maps = smaps::read(pid)?;
    let vm_rss = smaps::vm_rss(pid).unwrap_or(0);
    let shm = dir.display().to_string();
    let a = analyse(&report, &maps, vm_rss, &shm);
    Ok(if as_json { to_json(&a, &report, &raw, pid, &stats.comm_str()) } else { to_text(&a, &report, pid, &stats.comm_str()) })
}

/// The report file's name is the page's followed by this.
const REPORT_SUFFIX: &str = ".report";

/// Reads the report file beside the page `map` (in the directory the page was checked in): a
/// regular file (never followed through a symlink) owned by the page's owner, of a sane size.
fn read_report(map: &pages::Opened) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let owner = map.uid;
    let f = map.open_beside(REPORT_SUFFIX)?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    if md.uid() != owner {
        return Err(bad(format!("owned by uid {}, not by the page's owner {owner}", md.uid())));
    }
    if md.len() > MAX_REPORT {
        return Err(bad(format!("refused: it is {} bytes long, more than the {} this memtrim reads", md.len(), view::size(MAX_REPORT))));
    }
    let mut s = String::new();
    f.take(MAX_REPORT).read_to_string(&mut s)?;
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// A small JSON reader for the report (written by hand by the library).

#[derive(Clone, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number's text, parsed on use (byte counts need all 64 bits).
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

static NULL: Json = Json::Null;

impl Json {
    pub fn parse(s: &str) -> Result<Json, String> {
        let mut p = Parser { b: s.as_bytes(), i: 0, depth: 0 };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at byte {}", p.i));
        }
        Ok(v)
    }

    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(v) => v.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    pub fn at(&self, i: usize) -> &Json {
        match self {
            Json::Arr(v) => v.get(i).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => &[],
        }
    }

    pub fn u64(&self) -> u64 {
        match self {
            Json::Num(s) => s.parse::<u64>().ok().or_else(|| s.parse::<f64>().ok().filter(|f| *f >= 0.0).map(|f| f as u64)).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn i64(&self) -> i64 {
        match self {
            Json::Num(s) => s.parse::<i64>().unwrap_or(0),
            _ => 0,
        }
    }

    pub fn bool(&self) -> bool {
        matches!(self, Json::Bool(true))
    }

    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => "",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        self.depth += 1;
        if self.depth > 64 {
            return Err("nested too deeply".into());
        }
        let v = match self.b.get(self.i) {
            None => Err("unexpected end".into()),
            Some(b'{') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.eat(b':')?;
                        v.push((k, self.value()?));
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(format!("expected , or }} at byte {}", self.i)),
                        }
                    }
                }
                Ok(Json::Obj(v))
            }
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                } else {
                    loop {
                        v.push(self.value()?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(format!("expected , or ] at byte {}", self.i)),
                        }
                    }
                }
                Ok(Json::Arr(v))
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') if self.b[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.b[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.b[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let s = self.i;
                while self.i < self.b.len() && matches!(self.b[self.i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    self.i += 1;
                }
                Ok(Json::Num(String::from_utf8_lossy(&self.b[s..self.i]).into_owned()))
            }
            Some(_) => Err(format!("unexpected byte at {}", self.i)),
        };
        self.depth -= 1;
        v
    }

    fn string(&mut self) -> Result<String, String> {
        if self.b.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.i) else { return Err("unterminated string".into()) };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.b.get(self.i) else { return Err("unterminated string".into()) };
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let h = self.b.get(self.i..self.i + 4).ok_or("bad \\u escape")?;
                            let n = u32::from_str_radix(std::str::from_utf8(h).map_err(|_| "bad \\u escape")?, 16).map_err(|_| "bad \\u escape")?;
                            self.i += 4;
                            let ch = char::from_u32(n).unwrap_or('?');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Classification

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cat {
    MainHeap,
    ThreadArenas,
    Mmapped,
    Jemalloc,
    PyArenas,
    OtherAnon,
    Stacks,
    Code,
    FileData,
    Shared,
    Memtrim,
    Kernel,
    Unclassified,
}

const CATS: [Cat; 13] = [
    Cat::MainHeap,
    Cat::ThreadArenas,
    Cat::Mmapped,
    Cat::Jemalloc,
    Cat::PyArenas,
    Cat::OtherAnon,
    Cat::Stacks,
    Cat::Code,
    Cat::FileData,
    Cat::Shared,
    Cat::Memtrim,
    Cat::Kernel,
    Cat::Unclassified,
];

impl Cat {
    fn key(self) -> &'static str {
        match self {
            Cat::MainHeap => "main_heap",
            Cat::ThreadArenas => "thread_arenas",
            Cat::Mmapped => "mmapped_blocks",
            Cat::Jemalloc => "jemalloc_arenas",
            Cat::PyArenas => "python_arenas",
            Cat::OtherAnon => "other_anonymous",
            Cat::Stacks => "stacks",
            Cat::Code => "code",
            Cat::FileData => "file_data",
            Cat::Shared => "shared_memory",
            Cat::Memtrim => "memtrim",
            Cat::Kernel => "kernel",
            Cat::Unclassified => "unclassified",
        }
    }

    fn title(self, jemalloc: bool) -> &'static str {
        match self {
            Cat::MainHeap if jemalloc => "main heap (glibc: memtrim's own)",
            Cat::MainHeap => "main heap (brk)",
            Cat::ThreadArenas if jemalloc => "thread arenas (glibc: memtrim's own)",
            Cat::ThreadArenas => "thread arenas",
            Cat::Mmapped => "large mmapped blocks",
            Cat::Jemalloc => "jemalloc arenas (estimate)",
            Cat::PyArenas => "CPython object arenas (pymalloc)",
            Cat::OtherAnon => "other anonymous",
            Cat::Stacks => "thread stacks",
            Cat::Code => "code",
            Cat::FileData => "file data",
            Cat::Shared => "shared memory",
            Cat::Memtrim => "memtrim",
            Cat::Kernel => "kernel",
            Cat::Unclassified => "unclassified",
        }
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Usage {
    rss: u64,
    pss: u64,
    swap: u64,
    mappings: u64,
}

/// An address range the report knows: [start, end) with its resident bytes.
struct Known {
    start: u64,
    end: u64,
    resident: u64,
    cat: Cat,
}

fn ranges(r: &Json) -> Vec<Known> {
    let g = r.get("glibc");
    let heap_max = g.get("heap_size_max").u64().max(1 << 20);
    let mut v = Vec::new();
    for h in g.get("heaps").arr() {
        let base = h.at(0).u64();
        v.push(Known { start: base, end: base + heap_max, resident: h.at(3).u64(), cat: Cat::ThreadArenas });
    }
    for b in g.get("mmapped_blocks").arr() {
        v.push(Known { start: b.at(0).u64(), end: b.at(0).u64() + b.at(1).u64(), resident: b.at(2).u64(), cat: Cat::Mmapped });
    }
    for a in r.get("python").get("ranges").arr() {
        v.push(Known { start: a.at(0).u64(), end: a.at(0).u64() + a.at(1).u64(), resident: a.at(2).u64(), cat: Cat::PyArenas });
    }
    if let Json::Obj(own) = r.get("own") {
        for (_, x) in own {
            v.push(Known { start: x.at(0).u64(), end: x.at(0).u64() + x.at(1).u64(), resident: x.at(2).u64(), cat: Cat::Memtrim });
        }
    }
    v
}

/// The category of what is left of a mapping once the known ranges are taken out.
fn by_shape(m: &Mapping, prev: Option<&Mapping>, known: &[Known], shm: &str) -> Cat {
    let p = m.path.as_str();
    match p {
        "[heap]" => return Cat::MainHeap,
        "[stack]" => return Cat::Stacks,
        "[vdso]" => return Cat::Code,
        "[vvar]" | "[vvar_vclock]" | "[vsyscall]" | "[uprobes]" => return Cat::Kernel,
        _ => {}
    }
    let is_page = |p: &str| p.strip_prefix(shm).and_then(|r| r.strip_prefix('/')).is_some_and(|n| n.starts_with(memtrim_common::page::FILE_PREFIX));
    if is_page(p) || is_page(p.trim_end_matches(" (deleted)")) {
        return Cat::Memtrim;
    }
    if p.starts_with("/dev/shm/") || p.starts_with("/SYSV") || p.starts_with("/memfd:") || p.starts_with("[anon_shmem") {
        return Cat::Shared;
    }
    if p.starts_with('/') {
        return if m.perms.as_bytes().get(2) == Some(&b'x') { Cat::Code } else { Cat::FileData };
    }
    if !m.anonymous() {
        return Cat::Unclassified;
    }
    if !m.private() {
        return Cat::Shared;
    }
    // A thread stack: read-write, right above a small inaccessible guard mapping that is not
    // part of a thread heap's reservation.
    if let Some(g) = prev {
        let in_heap = known.iter().any(|k| k.cat == Cat::ThreadArenas && g.start >= k.start && g.start < k.end);
        if m.perms.starts_with("rw") && g.end == m.start && g.no_access() && g.anonymous() && g.len() <= MAX_GUARD && !in_heap {
            return Cat::Stacks;
        }
    }
    // The guard itself, below a stack.
    Cat::OtherAnon
}

struct Analysis {
    jemalloc: bool,
    usage: Vec<(Cat, Usage)>,
    smaps: Usage,
    vm_rss: u64,
    /// The allocator's view.
    heap: u64,
    live: u64,
    retained: u64,
    /// (arena label, free bytes), most first.
    free: Vec<(String, u64)>,
    free_total: u64,
    /// glibc: free bytes still resident (the arenas' resident bytes less those in use), and
    /// the resident part of the thread arenas' top chunks (which malloc_trim alone leaves).
    free_resident: Option<u64>,
    thread_tops: u64,
    release: u64,
    verdict: Vec<String>,
    /// Free chunk histogram over every glibc arena (host's backend only): (label, count, bytes).
    histogram: Vec<(&'static str, u64, u64)>,
}

impl Analysis {
    fn get(&self, c: Cat) -> Usage {
        self.usage.iter().find(|(k, _)| *k == c).map(|x| x.1).unwrap_or_default()
    }

    fn named_rss(&self) -> u64 {
        self.usage.iter().filter(|(c, _)| *c != Cat::Unclassified).map(|(_, u)| u.rss).sum()
    }
}

fn scale(v: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        0
    } else {
        (v as u128 * num as u128 / den as u128) as u64
    }
}

fn classify(maps: &[Mapping], known: &[Known], shm: &str) -> Vec<(Cat, Usage)> {
    let mut usage: Vec<(Cat, Usage)> = CATS.iter().map(|&c| (c, Usage::default())).collect();
    let mut add = |c: Cat, rss: u64, pss: u64, swap: u64, count: bool| {
        if let Some((_, u)) = usage.iter_mut().find(|(k, _)| *k == c) {
            u.rss += rss;
            u.pss += pss;
            u.swap += swap;
            u.mappings += count as u64;
        }
    };
    for (i, m) in maps.iter().enumerate() {
        let (mut rss, mut pss, mut swap) = (m.rss, m.pss, m.swap);
        let mut main: Option<(Cat, u64)> = None;
        if m.anonymous() && m.private() {
            for k in known.iter().filter(|k| k.start < m.end && k.end > m.start) {
                let overlap = k.end.min(m.end) - k.start.max(m.start);
                let (r, p, s) = if overlap == m.len() {
                    (rss, pss, swap)
                } else {
                    let r = scale(k.resident, overlap, k.end - k.start).min(rss);
                    (r, scale(m.pss, r, m.rss).min(pss), scale(m.swap, overlap, m.len()).min(swap))
                };
                add(k.cat, r, p, s, false);
                if main.is_none_or(|(_, b)| overlap > b) {
                    main = Some((k.cat, overlap));
                }
                rss -= r;
                pss -= p;
                swap -= s;
            }
        }
        let rest = m.len() - main.map_or(0, |x| x.1).min(m.len());
        let cat = by_shape(m, i.checked_sub(1).map(|j| &maps[j]), known, shm);
        if rss > 0 || pss > 0 || swap > 0 || main.is_none() {
            add(cat, rss, pss, swap, false);
        }
        // The mapping counts once, for what most of it is.
        match main {
            Some((c, b)) if b >= rest => add(c, 0, 0, 0, true),
            _ => add(cat, 0, 0, 0, true),
        }
    }
    usage
}

/// What a free chunk of about `size` bytes is called in the histogram.
const BUCKETS: [(&str, u64); 7] = [
    ("< 1 KiB", 1 << 10),
    ("1-4 KiB", 4 << 10),
    ("4-16 KiB", 16 << 10),
    ("16-64 KiB", 64 << 10),
    ("64-256 KiB", 256 << 10),
    ("256 KiB-1 MiB", 1 << 20),
    (">= 1 MiB", u64::MAX),
];

fn analyse(r: &Json, maps: &[Mapping], vm_rss: u64, shm: &str) -> Analysis {
    let jemalloc = r.get("allocator").str() == "jemalloc";
    let known = ranges(r);
    let mut usage = classify(maps, &known, shm);
    let mut smaps = Usage::default();
    for m in maps {
        smaps.rss += m.rss;
        smaps.pss += m.pss;
        smaps.swap += m.swap;
        smaps.mappings += 1;
    }
    let g = r.get("glibc");
    let live = r.get("live_bytes").u64();
    let (heap, release, mut free): (u64, u64, Vec<(String, u64)>) = if jemalloc {
        let je = r.get("jemalloc");
        let page = je.get("page").u64().max(1);
        // jemalloc's extents are not told apart by address: its resident figure moves from
        // "other anonymous" to its own category.
        let resident = je.get("resident").u64();
        let other = usage.iter().find(|(c, _)| *c == Cat::OtherAnon).map(|x| x.1).unwrap_or_default();
        let moved = resident.min(other.rss);
        let moved_pss = scale(other.pss, moved, other.rss);
        for (c, u) in usage.iter_mut() {
            if *c == Cat::OtherAnon {
                u.rss -= moved;
                u.pss -= moved_pss;
            } else if *c == Cat::Jemalloc {
                u.rss += moved;
                u.pss += moved_pss;
                u.mappings = je.get("arenas").arr().len() as u64;
            }
        }
        let free = je
            .get("arenas")
            .arr()
            .iter()
            .map(|a| {
                let unused = (a.get("pactive").u64() * page).saturating_sub(a.get("small_allocated").u64() + a.get("large_allocated").u64());
                let label = if a.get("huge").bool() { format!("{} (huge)", a.get("index").u64()) } else { a.get("index").u64().to_string() };
                (label, (a.get("pdirty").u64() + a.get("pmuzzy").u64()) * page + unused)
            })
            .collect();
        (resident, je.get("release_bytes").u64(), free)
    } else {
        let arenas = g.get("arenas").arr();
        let heap = arenas.iter().map(|a| a.get("system_bytes").u64()).sum::<u64>() + g.get("mmapped_bytes").u64();
        let free = arenas
            .iter()
            .map(|a| {
                let label = if a.get("main").bool() { "0 (main)".to_string() } else { a.get("nr").u64().to_string() };
                (label, a.get("free_fast_bytes").u64() + a.get("free_bin_bytes").u64() + a.get("top_bytes").u64())
            })
            .collect();
        (heap, g.get("release_bytes").u64(), free)
    };
    free.sort_by_key(|f| std::cmp::Reverse(f.1));
    let free_total: u64 = free.iter().map(|f| f.1).sum();
    let mut histogram: Vec<(&'static str, u64, u64)> = BUCKETS.iter().map(|b| (b.0, 0, 0)).collect();
    if !jemalloc {
        for a in g.get("arenas").arr() {
            for s in a.get("sizes").arr() {
                let (total, count) = (s.at(2).u64(), s.at(3).u64());
                let avg = total.checked_div(count).unwrap_or(0);
                if let Some(i) = BUCKETS.iter().position(|b| avg < b.1) {
                    histogram[i].1 += count;
                    histogram[i].2 += total;
                }
            }
        }
    }
    let mut a = Analysis {
        jemalloc,
        usage: Vec::new(),
        smaps,
        vm_rss,
        heap,
        live,
        retained: heap.saturating_sub(live),
        free,
        free_total,
        free_resident: (!jemalloc).then(|| {
            g.get("arenas").arr().iter().filter(|a| a.get("match").str() != "none").map(|a| a.get("resident_bytes").u64().saturating_sub(a.get("in_use_bytes").u64())).sum()
        }),
        // CPython's empty pools go back with the same release
        release: release + r.get("python").get("empty_bytes").u64(),
        thread_tops: if jemalloc { 0 } else { g.get("arenas").arr().iter().filter(|a| !a.get("main").bool()).map(|a| a.get("top_resident_bytes").u64()).sum() },
        verdict: Vec::new(),
        histogram,
    };
    a.usage = std::mem::take(&mut usage);
    a.verdict = verdict(&a, r);
    a
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn join_and(v: &[String]) -> String {
    match v.len() {
        0 => String::new(),
        1 => v[0].clone(),
        n => format!("{} and {}", v[..n - 1].join(", "), v[n - 1]),
    }
}

fn verdict(a: &Analysis, r: &Json) -> Vec<String> {
    let mut v = Vec::new();
    let rss = if a.vm_rss > 0 { a.vm_rss } else { a.smaps.rss };
    let heap_word = if a.jemalloc { "jemalloc's resident heap" } else { "the heap" };
    v.push(format!(
        "retained {:.0} % of {heap_word} ({} held by the allocator beyond the {} live, of {}){}",
        pct(a.retained, a.heap),
        view::size(a.retained),
        view::size(a.live),
        view::size(a.heap),
        match a.free_resident {
            Some(r) => format!("; {} of its free bytes are resident", view::size(r)),
            None => String::new(),
        }
    ));
    // Which arenas hold the free bytes: the fewest that make 80 % of them.
    if a.free_total > 0 {
        let mut sum = 0;
        let mut names = Vec::new();
        for (label, b) in &a.free {
            if sum * 10 >= a.free_total * 8 {
                break;
            }
            sum += b;
            names.push(label.clone());
        }
        let line = if a.free.len() == 1 {
            format!("arena {} holds all {} free", names[0], view::size(a.free_total))
        } else if names.len() <= 3 {
            format!(
                "{} {} {} {:.0} % of the {} free",
                if names.len() == 1 { "arena" } else { "arenas" },
                join_and(&names),
                if names.len() == 1 { "holds" } else { "hold" },
                pct(sum, a.free_total),
                view::size(a.free_total)
            )
        } else {
            format!("the {} free are spread over {} arenas (80 % in {})", view::size(a.free_total), a.free.len(), names.len())
        };
        v.push(line);
    }
    let small = a.release < (1 << 20).max(rss / 100);
    if small {
        v.push(format!(
            "a release now would return little (about {}): what is retained is in partly used pages{}",
            view::size(a.release),
            if a.jemalloc { "" } else { " or was already given back" }
        ));
    } else {
        v.push(format!(
            "a release now would return about {} ({:.0} % of RSS): `memtrim trim {}`",
            view::size(a.release),
            pct(a.release, rss),
            r.get("pid").u64()
        ));
    }
    if !a.jemalloc && a.thread_tops > (1 << 20).max(rss / 50) {
        v.push(format!(
            "{} is resident in the top chunks of thread arenas: a release gives those back, malloc_trim alone does not (glibc shrinks a thread heap only in free(), once its top passes M_TRIM_THRESHOLD, which freeing large blocks raises)",
            view::size(a.thread_tops)
        ));
    }
    v.extend(python_verdict(a, r, rss));
    if r.get("ruby").bool() {
        v.push("Ruby's object heap is in other anonymous memory: pages Ruby maps itself (16 KiB on 3.1, 64 KiB on 3.3), not malloc's, and unmaps once wholly empty; what a release returns of a Ruby process is what it keeps in malloc (long strings, arrays, hashes, C extensions' buffers), the heap above".into());
    }
    let other = a.get(Cat::OtherAnon);
    if other.rss > rss / 4 && other.rss > 4 << 20 {
        v.push(format!(
            "{} ({:.0} % of RSS) is other anonymous memory: {}; no allocator release returns it",
            view::size(other.rss),
            pct(other.rss, rss),
            match (r.get("python").is_null(), r.get("ruby").bool()) {
                (_, true) => "Ruby's object heap and the program's own mmaps",
                (true, false) => "interpreter heaps (CPython's arenas when memtrim cannot list them) or the program's own mmaps",
                (false, false) => "the program's own mmaps",
            }
        ));
    }
    let files = a.get(Cat::Code).rss + a.get(Cat::FileData).rss;
    let files_pss = a.get(Cat::Code).pss + a.get(Cat::FileData).pss;
    if files > rss / 4 {
        v.push(format!("{} of RSS is file-backed (code, libraries, mapped files; PSS {}): shared with other processes, not the heap", view::size(files), view::size(files_pss)));
    }
    let c = r.get("cost");
    if a.jemalloc {
        v.push(format!(
            "the report cost the process {} ms on its memtrim thread ({} ms of CPU); jemalloc's statistics refresh took {} µs",
            json::ms_from_us(c.get("total_us").u64()),
            json::ms_from_us(c.get("cpu_us").u64()),
            r.get("jemalloc").get("refresh_us").u64()
        ));
    } else {
        v.push(format!(
            "the report cost the process {} ms on its memtrim thread ({} ms of CPU); malloc_info took {} ms and held an arena lock at most {} ms (arena {})",
            json::ms_from_us(c.get("total_us").u64()),
            json::ms_from_us(c.get("cpu_us").u64()),
            json::ms_from_us(c.get("malloc_info_us").u64()),
            json::ms_from_us(c.get("max_lock_us").u64()),
            c.get("max_lock_arena").u64()
        ));
    }
    v
}

/// CPython's arenas: how full, and what a release gives back of them.
fn python_verdict(a: &Analysis, r: &Json, rss: u64) -> Option<String> {
    let p = r.get("python");
    if p.is_null() {
        return None;
    }
    let state = memtrim_common::page::py_state_name(p.get("state").u64());
    let arenas = a.get(Cat::PyArenas);
    if state != "active" {
        return Some(format!("CPython's pools: {state}; memtrim neither measures nor releases them"));
    }
    Some(format!(
        "CPython's object arenas hold {} of RSS ({:.0} %): {} in objects, {} free in pools in use (only new objects of their sizes reuse it), {} in {} empty pools, which a release gives back (the pages past each pool's header){}",
        view::size(arenas.rss),
        pct(arenas.rss, rss),
        view::size(p.get("allocated_bytes").u64()),
        view::size(p.get("free_bytes").u64()),
        view::size(p.get("empty_bytes").u64()),
        p.get("empty_pools").u64(),
        if p.get("fresh_walk").bool() { "" } else { " (from an earlier walk: the interpreter's main thread did not run Python code within 300 ms)" }
    ))
}

// ---------------------------------------------------------------------------------------------
// Output

fn to_text(a: &Analysis, r: &Json, pid: u32, comm: &str) -> String {
    let mut o = String::new();
    let rss = if a.vm_rss > 0 { a.vm_rss } else { a.smaps.rss };
    let _ = writeln!(
        o,
        "pid {pid} ({}), allocator {}: RSS {}, PSS {}, swap {}",
        pages::printable(comm),
        r.get("allocator").str(),
        view::size(rss),
        view::size(a.smaps.pss),
        view::size(a.smaps.swap)
    );
    let _ = writeln!(o, "\nwhere the memory is (kernel view, /proc/{pid}/smaps)");
    let _ = writeln!(o, "  {:<38} {:>10} {:>10} {:>10} {:>8}", "", "RSS", "PSS", "swap", "mappings");
    for (c, u) in &a.usage {
        if u.rss == 0 && u.pss == 0 && u.swap == 0 && u.mappings == 0 {
            continue;
        }
        let _ = writeln!(o, "  {:<38} {:>10} {:>10} {:>10} {:>8}", c.title(a.jemalloc), view::size(u.rss), view::size(u.pss), view::size(u.swap), u.mappings);
    }
    let named = a.named_rss();
    let _ = writeln!(
        o,
        "  {:<38} {:>10} {:>10} {:>10} {:>8}   ({:.1} % of VmRSS {} in named categories)",
        "total",
        view::size(a.smaps.rss),
        view::size(a.smaps.pss),
        view::size(a.smaps.swap),
        a.smaps.mappings,
        pct(named, rss),
        view::size(rss)
    );

    let g = r.get("glibc");
    let c = r.get("cost");
    let arenas = g.get("arenas").arr();
    if !arenas.is_empty() {
        let _ = writeln!(
            o,
            "\nglibc arenas{} (malloc_info in {} ms; longest arena lock {} ms)",
            if a.jemalloc { ", memtrim's own allocations" } else { "" },
            json::ms_from_us(c.get("malloc_info_us").u64()),
            json::ms_from_us(c.get("max_lock_us").u64())
        );
        let _ = writeln!(
            o,
            "  {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9}",
            "arena", "system", "in use", "free bins", "top", "free fast", "chunks", "resident", "release", "lock ms"
        );
        for x in arenas {
            let label = if x.get("main").bool() { "0*".to_string() } else { x.get("nr").u64().to_string() };
            let _ = writeln!(
                o,
                "  {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9}",
                label,
                view::size(x.get("system_bytes").u64()),
                view::size(x.get("in_use_bytes").u64()),
                view::size(x.get("free_bin_bytes").u64()),
                view::size(x.get("top_bytes").u64()),
                view::size(x.get("free_fast_bytes").u64()),
                x.get("free_bin_count").u64() + x.get("free_fast_count").u64(),
                if x.get("match").str() == "none" { "?".to_string() } else { view::size(x.get("resident_bytes").u64()) },
                view::size(x.get("release_bytes").u64()),
                json::ms_from_us(x.get("lock_us").u64())
            );
        }
        let _ = writeln!(o, "  (* the main arena, in [heap]; the others are thread arenas)");
        let _ = writeln!(o, "  mmapped blocks: {}, {}", g.get("mmapped_count").u64(), view::size(g.get("mmapped_bytes").u64()));
        if !a.jemalloc && a.histogram.iter().any(|h| h.1 > 0) {
            let _ = write!(o, "  free chunks by size:");
            for (label, n, b) in a.histogram.iter().filter(|h| h.1 > 0) {
                let _ = write!(o, "  {label}: {n} ({})", view::size(*b));
            }
            o.push('\n');
        }
    }
    let je = r.get("jemalloc");
    if !je.is_null() {
        let page = je.get("page").u64().max(1);
        let _ = writeln!(
            o,
            "\njemalloc arenas (resident {}, mapped {}, retained {}, metadata {}; decay dirty {} ms, muzzy {} ms)",
            view::size(je.get("resident").u64()),
            view::size(je.get("mapped").u64()),
            view::size(je.get("retained").u64()),
            view::size(je.get("metadata").u64()),
            je.get("dirty_decay_ms").i64(),
            je.get("muzzy_decay_ms").i64()
        );
        let _ = writeln!(o, "  {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}", "arena", "threads", "active", "allocated", "dirty", "muzzy", "resident", "release");
        for x in je.get("arenas").arr() {
            let label = if x.get("huge").bool() { format!("{} huge", x.get("index").u64()) } else { x.get("index").u64().to_string() };
            let _ = writeln!(
                o,
                "  {:>9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                label,
                x.get("nthreads").u64(),
                view::size(x.get("pactive").u64() * page),
                view::size(x.get("small_allocated").u64() + x.get("large_allocated").u64()),
                view::size(x.get("pdirty").u64() * page),
                view::size(x.get("pmuzzy").u64() * page),
                view::size(x.get("resident").u64()),
                view::size(x.get("release_bytes").u64())
            );
        }
    }
    let _ = writeln!(o, "\nverdict");
    for line in &a.verdict {
        let _ = writeln!(o, "  {line}");
    }
    for n in r.get("notes").arr() {
        let _ = writeln!(o, "  note: {}", pages::printable(n.str()));
    }
    o.truncate(o.trim_end().len());
    o
}

fn to_json(a: &Analysis, r: &Json, raw: &str, pid: u32, comm: &str) -> String {
    let mut o = String::with_capacity(raw.len() + 4096);
    let rss = if a.vm_rss > 0 { a.vm_rss } else { a.smaps.rss };
    let named = a.named_rss();
    let _ = write!(
        o,
        "{{\"pid\":{pid},\"comm\":{},\"allocator\":{},\"rss_bytes\":{rss},\"smaps_rss_bytes\":{},\"pss_bytes\":{},\"swap_bytes\":{},\"mappings\":{}",
        json::string(comm),
        json::string(r.get("allocator").str()),
        a.smaps.rss,
        a.smaps.pss,
        a.smaps.swap,
        a.smaps.mappings
    );
    o.push_str(",\"categories\":{");
    for (i, (c, u)) in a.usage.iter().enumerate() {
        let _ = write!(
            o,
            "{}\"{}\":{{\"title\":{},\"rss_bytes\":{},\"pss_bytes\":{},\"swap_bytes\":{},\"mappings\":{}}}",
            if i == 0 { "" } else { "," },
            c.key(),
            json::string(c.title(a.jemalloc)),
            u.rss,
            u.pss,
            u.swap,
            u.mappings
        );
    }
    let _ = write!(
        o,
        "}},\"thread_top_resident_bytes\":{},\"free_resident_bytes\":{},\"named_rss_bytes\":{named},\"named_fraction\":{:.4},\"heap_bytes\":{},\"live_bytes\":{},\"retained_bytes\":{},\"retained_fraction\":{:.4},\"free_bytes\":{},\"release_bytes\":{}",
        a.thread_tops,
        a.free_resident.map_or("null".to_string(), |r| r.to_string()),
        if rss == 0 { 0.0 } else { named as f64 / rss as f64 },
        a.heap,
        a.live,
        a.retained,
        if a.heap == 0 { 0.0 } else { a.retained as f64 / a.heap as f64 },
        a.free_total,
        a.release
    );
    o.push_str(",\"free_by_arena\":[");
    for (i, (label, b)) in a.free.iter().enumerate() {
        let _ = write!(o, "{}{{\"arena\":{},\"free_bytes\":{b}}}", if i == 0 { "" } else { "," }, json::string(label));
    }
    o.push_str("],\"free_chunk_histogram\":[");
    for (i, (label, n, b)) in a.histogram.iter().enumerate() {
        let _ = write!(o, "{}{{\"size\":{},\"count\":{n},\"bytes\":{b}}}", if i == 0 { "" } else { "," }, json::string(label));
    }
    o.push_str("],\"verdict\":[");
    for (i, line) in a.verdict.iter().enumerate() {
        let _ = write!(o, "{}{}", if i == 0 { "" } else { "," }, json::string(line));
    }
    let _ = write!(o, "],\"allocator_view\":{}}}", raw.trim());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reader() {
        let j = Json::parse(r#"{"a":[1,18446744073709551615,-1],"b":{"c":"x\"y\u00e9"},"t":true,"n":null}"#).unwrap();
        assert_eq!(j.get("a").at(1).u64(), u64::MAX);
        assert_eq!(j.get("a").at(2).i64(), -1);
        assert_eq!(j.get("b").get("c").str(), "x\"yé");
        assert!(j.get("t").bool() && j.get("n").is_null() && j.get("missing").is_null());
        assert!(Json::parse("{\"a\":1} x").is_err());
        assert!(Json::parse(&"[".repeat(100)).is_err());
    }

    fn m(start: u64, end: u64, perms: &str, path: &str, rss: u64) -> Mapping {
        Mapping { start, end, perms: perms.into(), path: path.into(), rss, pss: rss, swap: 0, lazy_free: 0 }
    }

    #[test]
    fn classifies_by_address_then_shape() {
        let maps = vec![
            m(0x1000, 0x3000, "r-xp", "/usr/bin/x", 0x2000),
            m(0x10000, 0x20000, "rw-p", "[heap]", 0x8000),
            m(0x4000000, 0x4100000, "rw-p", "", 0x80000),
            m(0x4100000, 0x8000000, "---p", "", 0),
            m(0x9000000, 0x9001000, "---p", "", 0),
            m(0x9001000, 0x9100000, "rw-p", "", 0x3000),
            m(0xa000000, 0xa400000, "rw-p", "", 0x300000),
            m(0xb000000, 0xb001000, "rw-s", "/dev/shm/memtrim.5.6", 0x1000),
        ];
        let known = vec![
            Known { start: 0x4000000, end: 0x8000000, resident: 0x80000, cat: Cat::ThreadArenas },
            // A mmapped block the kernel merged with other anonymous memory.
            Known { start: 0xa000000, end: 0xa200000, resident: 0x200000, cat: Cat::Mmapped },
        ];
        let u = classify(&maps, &known, "/dev/shm");
        let get = |c: Cat| u.iter().find(|x| x.0 == c).unwrap().1;
        assert_eq!(get(Cat::Code).rss, 0x2000);
        assert_eq!(get(Cat::MainHeap).rss, 0x8000);
        assert_eq!((get(Cat::ThreadArenas).rss, get(Cat::ThreadArenas).mappings), (0x80000, 2));
        assert_eq!(get(Cat::Stacks).rss, 0x3000);
        assert_eq!(get(Cat::Mmapped).rss, 0x200000);
        assert_eq!(get(Cat::OtherAnon).rss, 0x100000);
        assert_eq!(get(Cat::Memtrim).rss, 0x1000);
        let total: u64 = u.iter().map(|x| x.1.rss).sum();
        assert_eq!(total, maps.iter().map(|m| m.rss).sum::<u64>());
    }
}
