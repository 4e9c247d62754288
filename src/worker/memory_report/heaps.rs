//! glibc's arenas placed in the address space, and what a release would return of each.
//!
//! Placement: the thread heaps found by address (sys/glibc_heaps.rs) are grouped by arena
//! pointer and matched to malloc_info's arenas by address-space total and heap count (`match`:
//! exact, ambiguous when equal totals make the order a guess, nearest when the arena moved
//! between the two reads); the main arena is the brk heap.
//!
//! The prediction (`release_bytes`), per arena: malloc_trim madvises the whole pages inside each
//! free chunk of the bins, [chunk + 48, chunk + size), and gives the main arena's top back
//! through sbrk. From the histogram the expected whole pages of a chunk of size s at a random
//! alignment are max(0, (s - 48) / page - 1). glibc does not record which free pages it already
//! gave back, so after a release that figure overstates: the resident free bytes of the arena
//! are measured instead (mincore over its heaps, less the bytes in use and its top chunk), less
//! the free bytes that are not in whole pages (about a page plus 48 bytes per free chunk, all of
//! a small one); the prediction is the smaller of the two. Bytes in use that were never touched
//! (a calloc from fresh top) make the resident estimate, and so the prediction, low by as much.
//! Each arena's top adds its resident part above `top - 33` rounded down to pages: the main
//! arena's through malloc_trim's sbrk, the thread arenas' through arena_tops.rs (malloc_trim
//! leaves those).
use super::malloc_info::{Arena, Bin};
use crate::sys::glibc_heaps::{Heap, Vma};
use crate::worker::residency::Residency;

/// Bytes before the first page glibc's malloc_trim may release inside a free chunk
/// (sizeof(struct malloc_chunk)).
const CHUNK_HEAD: u64 = 48;
/// glibc's MINSIZE + 1: what a release keeps of an arena's top.
const TOP_KEEP: u64 = 33;

/// Where one arena of malloc_info lies, and what a release returns of it.
#[derive(Default)]
pub struct Placed {
    pub heaps: Vec<Heap>,
    pub matched: &'static str,
    pub resident: u64,
    pub top_resident: u64,
    /// Expected whole free pages, in bytes (bins and top).
    pub whole_free: u64,
    /// Free bytes not in whole pages.
    pub slack: u64,
    pub release: u64,
    /// The main arena's address range (the brk heap).
    pub range: Option<(usize, usize)>,
}

/// Expected whole pages (in bytes) malloc_trim can release from the chunks of one histogram
/// entry, at a random alignment of each chunk: max(0, (s - 48) / page - 1) pages per chunk.
pub fn whole_pages(b: &Bin, page: u64) -> u64 {
    if b.fast || b.count == 0 || b.to < page + CHUNK_HEAD {
        return 0;
    }
    if b.from >= page + CHUNK_HEAD {
        return b.total - b.count * (page + CHUNK_HEAD);
    }
    // Chunks on both sides of the limit: the average chunk stands for all.
    let avg = b.total / b.count;
    avg.saturating_sub(page + CHUNK_HEAD) * b.count
}

/// Gives each thread arena of malloc_info its heaps (the main arena gets none).
pub fn match_heaps(arenas: &[Arena], heaps: &[Heap]) -> Vec<Placed> {
    let mut placed: Vec<Placed> = arenas.iter().map(|_| Placed::default()).collect();
    // Groups by arena pointer: (ar_ptr, total size, heap indices).
    let mut groups: Vec<(usize, u64, Vec<usize>)> = Vec::new();
    for (i, h) in heaps.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == h.ar_ptr) {
            Some(g) => {
                g.1 += h.size as u64;
                g.2.push(i);
            }
            None => groups.push((h.ar_ptr, h.size as u64, vec![i])),
        }
    }
    let mut taken = vec![false; groups.len()];
    // Exact matches first (address-space total and heap count), then the nearest total.
    for pass in 0..2 {
        for (a, p) in arenas.iter().zip(placed.iter_mut()).filter(|(a, p)| a.nr != 0 && p.heaps.is_empty()) {
            let cands: Vec<usize> = (0..groups.len())
                .filter(|&g| !taken[g])
                .filter(|&g| pass == 1 || (groups[g].1 == a.aspace && groups[g].2.len() as u64 == a.subheaps.max(1)))
                .collect();
            let pick = if pass == 0 { cands.first().copied() } else { cands.iter().copied().min_by_key(|&g| groups[g].1.abs_diff(a.aspace)) };
            let Some(g) = pick else { continue };
            if pass == 1 && groups[g].1.abs_diff(a.aspace) > (a.aspace / 4).max(1 << 20) {
                continue;
            }
            taken[g] = true;
            p.matched = if pass == 1 {
                "nearest"
            } else if cands.len() > 1 {
                "ambiguous"
            } else {
                "exact"
            };
            p.heaps = groups[g].2.iter().map(|&i| heaps[i]).collect();
        }
    }
    placed
}

/// What a release returns of an arena: its resident free bytes less those not in whole pages,
/// at most its expected whole free pages, plus its top's resident whole pages.
fn release(resident_free: u64, slack: u64, whole_free: u64, top_release: u64) -> u64 {
    resident_free.saturating_sub(slack).min(whole_free) + top_release
}

/// Residency and the release prediction of each glibc arena; `brk` is the current break.
pub fn predict(arenas: &[Arena], placed: &mut [Placed], maps: &[Vma], brk: usize, res: &mut Residency, page: u64) {
    let main_vma = maps.iter().find(|m| m.path == "[heap]");
    for (a, p) in arenas.iter().zip(placed.iter_mut()) {
        p.whole_free = a.bins.iter().map(|b| whole_pages(b, page)).sum();
        p.slack = (a.binned().0 + a.fast_bytes).saturating_sub(p.whole_free);
        // The top chunk ends the main heap at the break, or a thread arena's newest heap (the
        // one no other heap names as previous); a release gives back its whole pages past the
        // header (malloc_trim for the main arena, arena_tops.rs for the others).
        let top_end = if a.nr == 0 {
            p.matched = "brk";
            let Some(m) = main_vma.filter(|m| brk > m.start && brk <= m.end) else {
                p.matched = "none";
                continue;
            };
            p.range = Some((m.start, brk));
            p.resident = res.bytes(m.start, brk);
            brk
        } else {
            let Some(h) = p.heaps.iter().find(|h| !p.heaps.iter().any(|o| o.prev == h.base)) else {
                p.matched = "none";
                continue;
            };
            let end = h.base + h.size;
            p.resident = p.heaps.iter().map(|h| res.bytes(h.base, h.base + h.size)).sum();
            end
        };
        p.top_resident = res.bytes(top_end.saturating_sub(a.top as usize).next_multiple_of(page as usize), top_end);
        let top_extra = a.top.saturating_sub(TOP_KEEP) / page * page;
        let top_release = res.bytes(top_end.saturating_sub(top_extra as usize), top_end);
        p.release = release(p.resident.saturating_sub(a.in_use + p.top_resident), p.slack, p.whole_free, top_release);
        p.whole_free += top_extra;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn bin(from: u64, to: u64, total: u64, count: u64) -> Bin {
        Bin { from, to, total, count, ..Default::default() }
    }

    #[test]
    fn whole_pages_of_a_histogram_entry() {
        // Too small to hold a whole page past the chunk header at every alignment.
        assert_eq!(whole_pages(&bin(2017, 2017, 2017, 1), PAGE), 0);
        assert_eq!(whole_pages(&bin(4096, 4143, 4143, 1), PAGE), 0);
        // Exactly a page and a header: (s - 48) / page - 1 = 0 on average.
        assert_eq!(whole_pages(&bin(4144, 4144, 4144, 1), PAGE), 0);
        // Every chunk past the limit: total less a page and a header per chunk.
        assert_eq!(whole_pages(&bin(9009, 9009, 99099, 11), PAGE), 99099 - 11 * 4144);
        assert_eq!(whole_pages(&bin(1 << 20, 1 << 20, 1 << 20, 1), PAGE), (1 << 20) - 4144);
        // Straddling the limit: the average chunk stands for all.
        assert_eq!(whole_pages(&bin(2017, 9009, 2017 + 9009 * 3, 4), PAGE), ((2017 + 9009 * 3) / 4 - 4144) * 4);
        // Fast chunks are never given back, nor is an empty entry.
        assert_eq!(whole_pages(&Bin { fast: true, ..bin(9009, 9009, 9009, 1) }, PAGE), 0);
        assert_eq!(whole_pages(&bin(9009, 9009, 0, 0), PAGE), 0);
        // A 64 KiB page needs chunks of more than 64 KiB.
        assert_eq!(whole_pages(&bin(9009, 9009, 99099, 11), 65536), 0);
    }

    #[test]
    fn release_is_bounded_by_resident_free_bytes() {
        // Nothing given back yet: the whole pages bound it.
        assert_eq!(release(100 << 20, 1 << 20, 50 << 20, 4096), (50 << 20) + 4096);
        // After a release: only what is still resident, less the partial pages.
        assert_eq!(release(3 << 20, 1 << 20, 50 << 20, 0), 2 << 20);
        assert_eq!(release(1 << 19, 1 << 20, 50 << 20, 8192), 8192);
    }

    fn arena(nr: u32, aspace: u64, subheaps: u64) -> Arena {
        Arena { nr, aspace, subheaps, ..Default::default() }
    }

    fn heap(base: usize, size: usize, ar_ptr: usize) -> Heap {
        Heap { base, size, mprotect: size, ar_ptr, prev: 0 }
    }

    const M: usize = 64 << 20;

    #[test]
    fn heaps_match_their_arenas() {
        let arenas = [arena(0, 1 << 20, 0), arena(1, 3 << 20, 2), arena(2, 1 << 20, 1), arena(3, 9 << 20, 1)];
        // Arena 1 has two heaps (2 + 1 MiB); arena 2 one of 1 MiB; arena 3 grew by 1 MiB
        // between malloc_info and the heap walk.
        let heaps = [heap(M, 2 << 20, 0x100), heap(2 * M, 1 << 20, 0x200), heap(3 * M, 1 << 20, 0x100), heap(4 * M, 10 << 20, 0x300)];
        let p = match_heaps(&arenas, &heaps);
        assert!(p[0].heaps.is_empty() && p[0].matched.is_empty(), "the main arena is placed by brk, not here");
        assert_eq!((p[1].matched, p[1].heaps.iter().map(|h| h.base).collect::<Vec<_>>()), ("exact", vec![M, 3 * M]));
        assert_eq!((p[2].matched, p[2].heaps.iter().map(|h| h.base).collect::<Vec<_>>()), ("exact", vec![2 * M]));
        assert_eq!((p[3].matched, p[3].heaps.iter().map(|h| h.base).collect::<Vec<_>>()), ("nearest", vec![4 * M]));
    }

    #[test]
    fn equal_arenas_match_ambiguously_and_strangers_not_at_all() {
        let arenas = [arena(1, 1 << 20, 1), arena(2, 1 << 20, 1), arena(3, 1 << 20, 1)];
        // Two heaps of the same size for two arenas; a third heap far larger than any arena.
        let heaps = [heap(M, 1 << 20, 0x100), heap(2 * M, 1 << 20, 0x200), heap(3 * M, 60 << 20, 0x300)];
        let p = match_heaps(&arenas, &heaps);
        assert_eq!((p[0].matched, p[0].heaps[0].base), ("ambiguous", M));
        assert_eq!((p[1].matched, p[1].heaps[0].base), ("exact", 2 * M));
        assert!(p[2].heaps.is_empty() && p[2].matched.is_empty(), "a heap 59 MiB off is not arena 3's");
    }
}
