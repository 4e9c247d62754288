//! What `ls` and `top` share: sort keys, the process tree order, the columns and a table
//! renderer that fits a width.
use crate::pages::{Entry, printable};
use memtrim_common::fields::{Kind, Unit};
use memtrim_common::page::{FIELDS, Stats};
use memtrim_common::units::format_size;
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Pid,
    Live,
    Heap,
    Retained,
    Rss,
    Pss,
    Frag,
}

pub const SORT_KEYS: &str = "pid, live, heap, retained, rss, pss, frag";

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "pid" => SortKey::Pid,
            "live" => SortKey::Live,
            "heap" => SortKey::Heap,
            "retained" => SortKey::Retained,
            "rss" => SortKey::Rss,
            "pss" => SortKey::Pss,
            "frag" => SortKey::Frag,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Pid => "pid",
            SortKey::Live => "live",
            SortKey::Heap => "heap",
            SortKey::Retained => "retained",
            SortKey::Rss => "rss",
            SortKey::Pss => "pss",
            SortKey::Frag => "frag",
        }
    }

    /// pid ascending; every other key largest first; ties by pid.
    pub fn cmp(self, a: &Stats, b: &Stats) -> Ordering {
        let by = |x: u64, y: u64| y.cmp(&x);
        let o = match self {
            SortKey::Pid => Ordering::Equal,
            SortKey::Live => by(a.live_bytes, b.live_bytes),
            SortKey::Heap => by(a.heap_bytes, b.heap_bytes),
            SortKey::Retained => by(a.retained_bytes, b.retained_bytes),
            SortKey::Rss => by(a.rss_bytes, b.rss_bytes),
            SortKey::Pss => by(a.pss_bytes, b.pss_bytes),
            SortKey::Frag => b.frag_ratio().partial_cmp(&a.frag_ratio()).unwrap_or(Ordering::Equal),
        };
        o.then(a.pid.cmp(&b.pid))
    }
}

/// Entries sorted by `key`, flat.
pub fn sorted<'a>(entries: &[&'a Entry], key: SortKey) -> Vec<&'a Entry> {
    let mut v = entries.to_vec();
    v.sort_by(|a, b| key.cmp(&a.stats, &b.stats));
    v
}

/// Entries in tree order: a process whose parent has a page comes right under it (siblings
/// sorted by `key`), with the prefix that draws the tree ("├─ ", "│  └─ ").
pub fn tree<'a>(entries: &[&'a Entry], key: SortKey) -> Vec<(&'a Entry, String)> {
    let sorted = sorted(entries, key);
    let has_page = |pid: u32| sorted.iter().any(|e| e.stats.pid == pid);
    let is_root = |e: &Entry| e.stats.ppid == e.stats.pid || !has_page(e.stats.ppid);
    let mut out = Vec::with_capacity(sorted.len());
    let mut seen = vec![false; sorted.len()];
    fn walk<'a>(i: usize, sorted: &[&'a Entry], seen: &mut [bool], lead: &str, glyph: &str, last: bool, out: &mut Vec<(&'a Entry, String)>) {
        if seen[i] {
            return;
        }
        seen[i] = true;
        out.push((sorted[i], format!("{lead}{glyph}")));
        let pid = sorted[i].stats.pid;
        let kids: Vec<usize> = (0..sorted.len()).filter(|&j| j != i && !seen[j] && sorted[j].stats.ppid == pid).collect();
        let next_lead = if glyph.is_empty() { lead.to_string() } else { format!("{lead}{}", if last { "   " } else { "│  " }) };
        for (k, &j) in kids.iter().enumerate() {
            let l = k + 1 == kids.len();
            walk(j, sorted, seen, &next_lead, if l { "└─ " } else { "├─ " }, l, out);
        }
    }
    for i in 0..sorted.len() {
        if is_root(sorted[i]) {
            walk(i, &sorted, &mut seen, "", "", true, &mut out);
        }
    }
    // A cycle of parents (pids reused between samples) has no root: show what is left flat.
    for i in 0..sorted.len() {
        walk(i, &sorted, &mut seen, "", "", true, &mut out);
    }
    out
}

pub fn size(v: u64) -> String {
    format_size(v)
}

pub fn frag(s: &Stats) -> String {
    if s.heap_bytes == 0 { "-".into() } else { format!("{:.1}", s.frag_ratio() * 100.0) }
}

/// What a column shows.
pub enum Cell {
    /// A field of the page's table, by its name, shown by its unit: `-` where it does not apply.
    Field(&'static str),
    /// The process name under its tree prefix.
    Command,
    /// Fragmentation, percent.
    Frag,
}

pub struct Col {
    pub title: &'static str,
    pub right: bool,
    /// When the width does not fit, columns with the highest `drop` go first; 0 never goes.
    pub drop: u8,
    pub cell: Cell,
}

pub const COMMAND: &str = "COMMAND";

pub const COLS: &[Col] = &[
    Col { title: "PID", right: true, drop: 0, cell: Cell::Field("pid") },
    Col { title: "PPID", right: true, drop: 6, cell: Cell::Field("ppid") },
    Col { title: COMMAND, right: false, drop: 0, cell: Cell::Command },
    Col { title: "ALLOCATOR", right: false, drop: 7, cell: Cell::Field("allocator") },
    Col { title: "LIVE", right: true, drop: 0, cell: Cell::Field("live_bytes") },
    Col { title: "HEAP", right: true, drop: 3, cell: Cell::Field("heap_bytes") },
    Col { title: "RETAINED", right: true, drop: 0, cell: Cell::Field("retained_bytes") },
    Col { title: "FRAG%", right: true, drop: 2, cell: Cell::Frag },
    Col { title: "RSS", right: true, drop: 0, cell: Cell::Field("rss_bytes") },
    Col { title: "PSS", right: true, drop: 1, cell: Cell::Field("pss_bytes") },
    Col { title: "RELEASES", right: true, drop: 4, cell: Cell::Field("trims") },
    Col { title: "RELEASED", right: true, drop: 5, cell: Cell::Field("released_bytes") },
];

impl Cell {
    fn text(&self, s: &Stats, tree: &str) -> String {
        let name = match self {
            Cell::Command => return format!("{tree}{}", printable(&s.comm_str())),
            Cell::Frag => return frag(s),
            Cell::Field(name) => name,
        };
        let Some(f) = FIELDS.iter().find(|f| f.name == *name) else { return "?".into() };
        match (f.kind, f.unit) {
            _ if !f.applies(s) => "-".into(),
            (Kind::State(_), _) => f.state(s).unwrap_or("?").into(),
            (_, Unit::Bytes) => size(f.number(s)),
            _ => f.number(s).to_string(),
        }
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn cut(s: &str, w: usize) -> String {
    if width(s) <= w { s.to_string() } else { s.chars().take(w.saturating_sub(1)).chain(std::iter::once('…')).collect() }
}

/// The table's header line and rows, padded. With `max_width`, columns are dropped (highest
/// `drop` first) and COMMAND is cut so that every line fits.
pub fn render(rows: &[(&Entry, String)], max_width: Option<usize>) -> (String, Vec<String>) {
    let cells: Vec<Vec<String>> = rows.iter().map(|(e, tree)| COLS.iter().map(|c| c.cell.text(&e.stats, tree)).collect()).collect();
    let mut widths: Vec<usize> = COLS.iter().enumerate().map(|(i, c)| cells.iter().map(|r| width(&r[i])).max().unwrap_or(0).max(width(c.title))).collect();
    let mut shown: Vec<bool> = vec![true; COLS.len()];
    let cmd = COLS.iter().position(|c| c.title == COMMAND).unwrap_or(0);
    if let Some(max) = max_width {
        const CMD_MIN: usize = 10;
        let total = |shown: &[bool], widths: &[usize]| -> usize {
            let n = shown.iter().filter(|&&s| s).count();
            (0..COLS.len()).filter(|&i| shown[i]).map(|i| widths[i]).sum::<usize>() + n.saturating_sub(1)
        };
        loop {
            let over = total(&shown, &widths).saturating_sub(max);
            if over == 0 {
                break;
            }
            let cmd_spare = widths[cmd].saturating_sub(CMD_MIN.max(width(COMMAND)));
            if cmd_spare >= over {
                widths[cmd] -= over;
                break;
            }
            let next = (0..COLS.len()).filter(|&i| shown[i] && COLS[i].drop > 0).max_by_key(|&i| COLS[i].drop);
            match next {
                Some(i) => shown[i] = false,
                None => {
                    widths[cmd] -= cmd_spare;
                    break;
                }
            }
        }
    }
    let line = |texts: &dyn Fn(usize) -> String| -> String {
        let mut l = String::new();
        for i in (0..COLS.len()).filter(|&i| shown[i]) {
            if !l.is_empty() {
                l.push(' ');
            }
            let t = cut(&texts(i), widths[i]);
            let pad = widths[i] - width(&t);
            if COLS[i].right {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(&t);
            } else {
                l.push_str(&t);
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        l.trim_end().to_string()
    };
    let header = line(&|i| COLS[i].title.to_string());
    let body = cells.iter().map(|r| line(&|i| r[i].clone())).collect();
    (header, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::State;
    use std::path::PathBuf;

    fn entry(pid: u32, ppid: u32, live: u64) -> Entry {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"python3");
        Entry { path: PathBuf::new(), state: State::Live, stats: Stats { pid, ppid, live_bytes: live, comm, ..Default::default() } }
    }

    #[test]
    fn tree_puts_children_under_parents() {
        let es = [entry(10, 1, 5), entry(11, 10, 7), entry(12, 10, 9), entry(20, 1, 100), entry(13, 12, 1)];
        let refs: Vec<&Entry> = es.iter().collect();
        let t: Vec<(u32, String)> = tree(&refs, SortKey::Pid).into_iter().map(|(e, p)| (e.stats.pid, p)).collect();
        assert_eq!(t, vec![(10, "".into()), (11, "├─ ".into()), (12, "└─ ".into()), (13, "   └─ ".into()), (20, "".into())]);
        let t: Vec<u32> = tree(&refs, SortKey::Live).into_iter().map(|(e, _)| e.stats.pid).collect();
        assert_eq!(t, vec![20, 10, 12, 13, 11]);
    }

    #[test]
    fn cycles_are_still_shown() {
        let es = [entry(10, 11, 5), entry(11, 10, 7)];
        let refs: Vec<&Entry> = es.iter().collect();
        assert_eq!(tree(&refs, SortKey::Pid).len(), 2);
    }

    #[test]
    fn render_fits_80_columns() {
        let es = [entry(4194304, 4194303, 1 << 40)];
        let refs: Vec<&Entry> = es.iter().collect();
        let rows = tree(&refs, SortKey::Pid);
        let (h, b) = render(&rows, Some(80));
        assert!(width(&h) <= 80 && width(&b[0]) <= 80, "{h}\n{}", b[0]);
        assert!(h.contains("LIVE") && h.contains("RSS") && h.contains("COMMAND"));
        let (h, b) = render(&rows, None);
        assert!(h.contains("ALLOCATOR") && h.contains("RELEASED"));
        assert!(COLS.iter().all(|c| !matches!(c.cell, Cell::Field(n) if !FIELDS.iter().any(|f| f.name == n))), "a column names no field");
        assert!(b[0].contains("glibc") && b[0].contains("1.00 TiB"), "{}", b[0]);
        assert!(b[0].trim_end().ends_with("-        0      0 B"), "no PSS before the first smaps read: {}", b[0]);
    }
}
