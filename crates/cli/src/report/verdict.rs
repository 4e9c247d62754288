//! The verdict: what the figures say, in sentences.
use super::allocator_view::Report;
use super::analysis::{Analysis, pct};
use super::classify::Cat;
use crate::{json, view};

fn join_and(v: &[String]) -> String {
    match v.len() {
        0 => String::new(),
        1 => v[0].clone(),
        n => format!("{} and {}", v[..n - 1].join(", "), v[n - 1]),
    }
}

/// The verdict: a line each on what is retained, where, what a release would return, and
/// what else holds the memory; then what the report cost.
pub fn verdict(a: &Analysis, r: &Report) -> Vec<String> {
    let mut v = Vec::new();
    let rss = a.rss();
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
        v.push(format!("a release now would return about {} ({:.0} % of RSS): `memtrim trim {}`", view::size(a.release), pct(a.release, rss), r.pid));
    }
    if !a.jemalloc && a.thread_tops > (1 << 20).max(rss / 50) {
        v.push(format!(
            "{} is resident in the top chunks of thread arenas: a release gives those back, malloc_trim alone does not (glibc shrinks a thread heap only in free(), once its top passes M_TRIM_THRESHOLD, which freeing large blocks raises)",
            view::size(a.thread_tops)
        ));
    }
    v.extend(python_verdict(a, r, rss));
    if r.ruby {
        v.push("Ruby's object heap is in other anonymous memory: pages Ruby maps itself (16 KiB on 3.1, 64 KiB on 3.3), not malloc's, and unmaps once wholly empty; what a release returns of a Ruby process is what it keeps in malloc (long strings, arrays, hashes, C extensions' buffers), the heap above".into());
    }
    let other = a.get(Cat::OtherAnon);
    if other.rss > rss / 4 && other.rss > 4 << 20 {
        v.push(format!(
            "{} ({:.0} % of RSS) is other anonymous memory: {}; no allocator release returns it",
            view::size(other.rss),
            pct(other.rss, rss),
            match (r.python.is_none(), r.ruby) {
                (_, true) => "Ruby's object heap and the program's own mmaps",
                (true, false) => "interpreter heaps (CPython's arenas when memtrim cannot list them) or the program's own mmaps",
                (false, false) => "the program's own mmaps",
            }
        ));
    }
    let files = a.get(Cat::Code).rss + a.get(Cat::FileData).rss;
    let files_pss = a.get(Cat::Code).pss + a.get(Cat::FileData).pss;
    if files > rss / 4 {
        v.push(format!(
            "{} of RSS is file-backed (code, libraries, mapped files; PSS {}): shared with other processes, not the heap",
            view::size(files),
            view::size(files_pss)
        ));
    }
    let c = &r.cost;
    if a.jemalloc {
        v.push(format!(
            "the report cost the process {} ms on its memtrim thread ({} ms of CPU); jemalloc's statistics refresh took {} µs",
            json::ms_from_us(c.total_us),
            json::ms_from_us(c.cpu_us),
            r.jemalloc.as_ref().map_or(0, |j| j.refresh_us)
        ));
    } else {
        v.push(format!(
            "the report cost the process {} ms on its memtrim thread ({} ms of CPU); malloc_info took {} ms and held an arena lock at most {} ms (arena {})",
            json::ms_from_us(c.total_us),
            json::ms_from_us(c.cpu_us),
            json::ms_from_us(c.malloc_info_us),
            json::ms_from_us(c.max_lock_us),
            c.max_lock_arena
        ));
    }
    v
}

/// CPython's arenas: how full, and what a release gives back of them.
fn python_verdict(a: &Analysis, r: &Report, rss: u64) -> Option<String> {
    let p = r.python.as_ref()?;
    let state = memtrim_common::page::py_state_name(p.state);
    let arenas = a.get(Cat::PyArenas);
    if state != "active" {
        return Some(format!("CPython's pools: {state}; memtrim neither measures nor releases them"));
    }
    Some(format!(
        "CPython's object arenas hold {} of RSS ({:.0} %): {} in objects, {} free in pools in use (only new objects of their sizes reuse it), {} in {} empty pools, which a release gives back (the pages past each pool's header){}",
        view::size(arenas.rss),
        pct(arenas.rss, rss),
        view::size(p.allocated_bytes),
        view::size(p.free_bytes),
        view::size(p.empty_bytes),
        p.empty_pools,
        if p.fresh_walk { "" } else { " (from an earlier walk: the interpreter's main thread did not run Python code within 300 ms)" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::allocator_view::Python;
    use crate::report::classify::{CATS, Usage};

    const MIB: u64 = 1 << 20;

    /// A glibc process of 100 MiB RSS, 60 MiB heap of which 20 MiB live.
    fn analysis(free: &[(&str, u64)], release: u64) -> Analysis {
        Analysis {
            jemalloc: false,
            usage: CATS.iter().map(|&c| (c, Usage::default())).collect(),
            smaps: Usage { rss: 100 * MIB, ..Default::default() },
            vm_rss: 100 * MIB,
            heap: 60 * MIB,
            live: 20 * MIB,
            retained: 40 * MIB,
            free: free.iter().map(|&(l, b)| (l.to_string(), b)).collect(),
            free_total: free.iter().map(|f| f.1).sum(),
            free_resident: Some(30 * MIB),
            thread_tops: 0,
            release,
            verdict: Vec::new(),
            histogram: Vec::new(),
        }
    }

    fn report() -> Report {
        Report { pid: 42, allocator: "glibc".into(), ..Default::default() }
    }

    #[test]
    fn retained_and_where() {
        let v = verdict(&analysis(&[("0 (main)", 40 * MIB)], 30 * MIB), &report());
        assert_eq!(
            v[0],
            "retained 67 % of the heap (40.0 MiB held by the allocator beyond the 20.0 MiB live, of 60.0 MiB); 30.0 MiB of its free bytes are resident"
        );
        assert_eq!(v[1], "arena 0 (main) holds all 40.0 MiB free");
        let v = verdict(&analysis(&[("3", 20 * MIB), ("1", 15 * MIB), ("0 (main)", 5 * MIB)], 30 * MIB), &report());
        assert_eq!(v[1], "arenas 3 and 1 hold 88 % of the 40.0 MiB free", "the fewest arenas that make 80 %");
        let many: Vec<(String, u64)> = (0..10).map(|i| (i.to_string(), 4 * MIB)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(l, b)| (l.as_str(), *b)).collect();
        let v = verdict(&analysis(&many, 30 * MIB), &report());
        assert_eq!(v[1], "the 40.0 MiB free are spread over 10 arenas (80 % in 8)");
    }

    #[test]
    fn what_a_release_returns() {
        let v = verdict(&analysis(&[("0 (main)", 40 * MIB)], 30 * MIB), &report());
        assert_eq!(v[2], "a release now would return about 30.0 MiB (30 % of RSS): `memtrim trim 42`");
        // Less than 1 MiB (or 1 % of RSS) is little.
        let v = verdict(&analysis(&[("0 (main)", 40 * MIB)], MIB / 2), &report());
        assert!(v[2].starts_with("a release now would return little (about 512 KiB)") && v[2].ends_with("or was already given back"), "{}", v[2]);
        let mut a = analysis(&[("0 (main)", 40 * MIB)], 30 * MIB);
        a.thread_tops = 10 * MIB;
        assert!(verdict(&a, &report())[3].starts_with("10.0 MiB is resident in the top chunks of thread arenas"));
    }

    #[test]
    fn what_else_holds_memory() {
        let mut a = analysis(&[], 0);
        for (c, u) in a.usage.iter_mut() {
            match c {
                Cat::OtherAnon => u.rss = 50 * MIB,
                Cat::Code => u.rss = 30 * MIB,
                _ => {}
            }
        }
        let mut r = report();
        r.ruby = true;
        let v = verdict(&a, &r);
        assert!(v.iter().any(|l| l.starts_with("Ruby's object heap is in other anonymous memory")), "{v:#?}");
        assert!(
            v.iter()
                .any(|l| l
                    == "50.0 MiB (50 % of RSS) is other anonymous memory: Ruby's object heap and the program's own mmaps; no allocator release returns it"),
            "{v:#?}"
        );
        assert!(v.iter().any(|l| l.starts_with("30.0 MiB of RSS is file-backed")), "{v:#?}");
        assert!(v.last().unwrap().starts_with("the report cost the process 0.000 ms"));
    }

    #[test]
    fn cpython() {
        let mut a = analysis(&[], 0);
        let mut r = report();
        assert!(python_verdict(&a, &r, 100 * MIB).is_none(), "no Python, no line");
        r.python = Some(Default::default());
        assert_eq!(
            python_verdict(&a, &r, 100 * MIB).unwrap(),
            format!("CPython's pools: {}; memtrim neither measures nor releases them", memtrim_common::page::py_state_name(0))
        );
        let active = (0..8).find(|&s| memtrim_common::page::py_state_name(s) == "active").expect("an active state");
        r.python = Some(Python {
            state: active,
            fresh_walk: true,
            allocated_bytes: 8 * MIB,
            free_bytes: MIB,
            empty_bytes: 2 * MIB,
            empty_pools: 128,
            ranges: Vec::new(),
        });
        a.usage.iter_mut().find(|x| x.0 == Cat::PyArenas).unwrap().1.rss = 12 * MIB;
        assert_eq!(
            python_verdict(&a, &r, 100 * MIB).unwrap(),
            "CPython's object arenas hold 12.0 MiB of RSS (12 %): 8.00 MiB in objects, 1.00 MiB free in pools in use (only new objects of their sizes reuse it), 2.00 MiB in 128 empty pools, which a release gives back (the pages past each pool's header)"
        );
    }
}
