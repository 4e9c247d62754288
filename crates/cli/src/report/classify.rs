//! The kernel's view of a process: each mapping of /proc/PID/smaps in a category, by the
//! addresses the report names first (thread heaps, mmapped blocks, CPython's arenas, memtrim's
//! own), then by its shape (see the categories in mod.rs).
use super::allocator_view::Report;
use crate::smaps::Mapping;

/// The largest guard page (mapping) below a thread stack that the stack heuristic accepts.
const MAX_GUARD: u64 = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cat {
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

pub const CATS: [Cat; 13] = [
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
    pub fn key(self) -> &'static str {
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

    pub fn title(self, jemalloc: bool) -> &'static str {
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
pub struct Usage {
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
    pub mappings: u64,
}

/// An address range the report knows: [start, end) with its resident bytes.
pub struct Known {
    pub start: u64,
    pub end: u64,
    pub resident: u64,
    pub cat: Cat,
}

/// The ranges the report names: thread heaps (their whole reservations), mmapped blocks,
/// CPython's arenas and memtrim's own.
pub fn ranges(r: &Report) -> Vec<Known> {
    let heap_max = r.glibc.heap_size_max.max(1 << 20);
    let mut v = Vec::new();
    for h in &r.glibc.heaps {
        v.push(Known { start: h.0, end: h.0 + heap_max, resident: h.3, cat: Cat::ThreadArenas });
    }
    let span = |[start, len, resident]: [u64; 3], cat| Known { start, end: start + len, resident, cat };
    v.extend(r.glibc.mmapped_blocks.iter().map(|&b| span(b, Cat::Mmapped)));
    v.extend(r.python.iter().flat_map(|p| &p.ranges).map(|&a| span(a, Cat::PyArenas)));
    v.extend(r.own.values().map(|&x| span(x, Cat::Memtrim)));
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

pub fn scale(v: u64, num: u64, den: u64) -> u64 {
    if den == 0 { 0 } else { (v as u128 * num as u128 / den as u128) as u64 }
}

pub fn classify(maps: &[Mapping], known: &[Known], shm: &str) -> Vec<(Cat, Usage)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ranges_of_a_report() {
        let r: Report = serde_json::from_str(
            r#"{"glibc":{"heap_size_max":67108864,"heaps":[[134217728,135168,135168,4096,1]],"mmapped_blocks":[[4096,8192,4096]]},"python":{"ranges":[[65536,262144,0]]},"own":{"side_pool":[1048576,4096,4096]}}"#,
        )
        .unwrap();
        let k: Vec<(u64, u64, u64, Cat)> = ranges(&r).iter().map(|k| (k.start, k.end, k.resident, k.cat)).collect();
        assert_eq!(
            k,
            [
                (134217728, 134217728 + 67108864, 4096, Cat::ThreadArenas),
                (4096, 12288, 4096, Cat::Mmapped),
                (65536, 65536 + 262144, 0, Cat::PyArenas),
                (1048576, 1048576 + 4096, 4096, Cat::Memtrim)
            ],
            "a thread heap counts its whole reservation"
        );
    }

    #[test]
    fn shapes() {
        let cat = |maps: &[Mapping], known: &[Known]| {
            let u = classify(maps, known, "/run/pages");
            u.iter().filter(|x| x.1.mappings > 0).map(|x| x.0).collect::<Vec<_>>()
        };
        assert_eq!(cat(&[m(0x1000, 0x2000, "r--p", "[vvar]", 0)], &[]), [Cat::Kernel]);
        assert_eq!(cat(&[m(0x1000, 0x2000, "r-xp", "[vdso]", 0)], &[]), [Cat::Code]);
        assert_eq!(cat(&[m(0x1000, 0x2000, "rw-p", "[stack]", 0)], &[]), [Cat::Stacks]);
        assert_eq!(cat(&[m(0x1000, 0x2000, "r--p", "/usr/lib/x.so", 0)], &[]), [Cat::FileData]);
        assert_eq!(cat(&[m(0x1000, 0x2000, "rw-s", "/memfd:x (deleted)", 0)], &[]), [Cat::Shared]);
        assert_eq!(cat(&[m(0x1000, 0x2000, "rw-s", "", 0)], &[]), [Cat::Shared], "shared anonymous");
        assert_eq!(cat(&[m(0x1000, 0x2000, "rw-s", "/run/pages/memtrim.5.6 (deleted)", 0)], &[]), [Cat::Memtrim], "a page in the page directory");
        assert_eq!(cat(&[m(0x1000, 0x2000, "rw-p", "[anon:x]", 0)], &[]), [Cat::OtherAnon], "a named anonymous mapping");
        assert_eq!(cat(&[m(0x1000, 0x2000, "rw-p", "[new kind]", 0)], &[]), [Cat::Unclassified]);
        // A stack only above a small guard outside every thread heap.
        let stack = [m(0x10000, 0x11000, "---p", "", 0), m(0x11000, 0x20000, "rw-p", "", 0)];
        assert_eq!(cat(&stack, &[]), [Cat::OtherAnon, Cat::Stacks]);
        let big_guard = [m(0x10000, 0x210000, "---p", "", 0), m(0x210000, 0x220000, "rw-p", "", 0)];
        assert_eq!(cat(&big_guard, &[]), [Cat::OtherAnon], "a guard of more than 1 MiB is something else");
        let gap = [m(0x10000, 0x11000, "---p", "", 0), m(0x12000, 0x20000, "rw-p", "", 0)];
        assert_eq!(cat(&gap, &[]), [Cat::OtherAnon], "not directly above the guard");
        let heap = [Known { start: 0x4000000, end: 0x8000000, resident: 0, cat: Cat::ThreadArenas }];
        let in_heap = [m(0x7ff0000, 0x8000000, "---p", "", 0), m(0x8000000, 0x8010000, "rw-p", "", 0)];
        assert_eq!(cat(&in_heap, &heap), [Cat::ThreadArenas, Cat::OtherAnon], "the inaccessible end of a heap's reservation is no guard");
    }

    #[test]
    fn a_known_range_splits_a_merged_mapping_by_its_resident_bytes() {
        // 4 MiB mapping, 3 MiB resident, PSS half of RSS; a 1 MiB block inside, 256 KiB of it
        // resident.
        let mut merged = m(0xa000000, 0xa400000, "rw-p", "", 3 << 20);
        merged.pss = 3 << 19;
        merged.swap = 4 << 20;
        let block = Known { start: 0xa000000, end: 0xa100000, resident: 256 << 10, cat: Cat::Mmapped };
        let u = classify(&[merged], &[block], "/dev/shm");
        let get = |c: Cat| u.iter().find(|x| x.0 == c).unwrap().1;
        let (b, o) = (get(Cat::Mmapped), get(Cat::OtherAnon));
        assert_eq!((b.rss, b.pss, b.swap), (256 << 10, 128 << 10, 1 << 20));
        assert_eq!((o.rss, o.pss, o.swap), ((3 << 20) - (256 << 10), (3 << 19) - (128 << 10), 3 << 20));
        assert_eq!((b.mappings, o.mappings), (0, 1), "the mapping counts for what most of it is");
    }
}
