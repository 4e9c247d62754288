/* memtrim: in-process C API of libmemtrim.so.
 *
 * Link with -lmemtrim, or look the functions up with dlsym(RTLD_DEFAULT, ...) so that the same
 * binary also runs without the library preloaded. */
#ifndef MEMTRIM_H
#define MEMTRIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEMTRIM_STATS_VERSION 1

struct memtrim_stats {
  uint32_t size;            /* bytes of this struct the library filled in */
  uint32_t version;         /* MEMTRIM_STATS_VERSION of the library */
  uint64_t live_bytes;      /* sum of malloc_usable_size() of the blocks allocated now */
  uint64_t peak_live_bytes; /* highest live_bytes seen by a read of the counters */
  uint64_t allocs;          /* blocks handed out; a successful realloc of a block is a free and an alloc */
  uint64_t frees;           /* blocks given back; allocs - frees is the number of live blocks */
  /* later fields are appended, never reordered */
};

/* Fills at most out_size bytes of *out; out->size says how many were filled. 0 on success,
 * -1 if out is NULL or out_size cannot hold the size and version words. */
int memtrim_get_stats(struct memtrim_stats *out, size_t out_size);

/* Releases retained memory now, on the calling thread; returns the bytes by which the
 * process's resident set shrank. */
size_t memtrim_trim(void);

#ifdef __cplusplus
}
#endif

/* ---- The stats page -------------------------------------------------------------------------
 * One file per process, MEMTRIM_SHM_DIR/memtrim-EUID/memtrim.PID.START (a 0700 directory of
 * the process's user; START: start time in clock ticks after boot, so a reused pid is told
 * apart), mode 0600, MEMTRIM_PAGE_FILE_BYTES long. The library's worker thread is the only
 * writer of the stats, under the seqlock `seq` (odd while writing); a reader copies the stats
 * word by word between two equal even reads of `seq` and checks `check`. Layout owned by
 * crates/common/src/page.rs; the stats' fields are declared in crates/common/src/stats.rs.
 *
 * Versioning: `layout_version` is the compatible version. Stats fields are only appended, so a
 * reader reads a page of a version it knows whose `stats_size` is at least the size of the
 * stats it knows: the prefix it knows, at `stats_offset` (the check word covers all
 * `stats_size` bytes). The control block grows into its reserved words, then by moving the
 * stats further: read them at `stats_offset`, not at `offsetof(struct memtrim_page, stats)`. */

#define MEMTRIM_PAGE_MAGIC 0x004d4952544d454dull /* "MEMTRIM\0" little-endian */
#define MEMTRIM_PAGE_LAYOUT_VERSION 2
#define MEMTRIM_PAGE_FILE_BYTES 4096
#define MEMTRIM_PAGE_STATS_OFFSET 96 /* where this version's writers put the stats */
#define MEMTRIM_REASONS 6 /* request, api, retained, idle, pressure, limit */

#ifdef __cplusplus
#define MEMTRIM_STATIC_ASSERT static_assert
#else
#define MEMTRIM_STATIC_ASSERT _Static_assert
#endif
#define MEMTRIM_ASSERT_OFFSET(T, F, N) MEMTRIM_STATIC_ASSERT(offsetof(struct T, F) == N, #T "." #F)

/* BEGIN generated */
/* From the table of fields in crates/common/src/stats.rs: `MEMTRIM_WRITE_HEADER=1 cargo test --test layout`
 * writes it. */
struct memtrim_page_stats {
  /* process */
  uint64_t check;                  /* Checksum of every later word: a reader that sees it disagree has a torn or corrupt page. First, so that fields can be appended after it. */
  uint32_t pid;                    /* Process id. */
  uint32_t ppid;                   /* Parent process id. */
  uint32_t uid;                    /* User id of the process. */
  uint32_t allocator;              /* Backend that serves the host's allocations: glibc or jemalloc. */
  uint64_t start_ticks;            /* Start time of the process in clock ticks after boot (tells a reused pid apart). */
  char comm[16];                   /* Process name (/proc/PID/comm). */
  uint64_t updated_at_ms;          /* Unix time at which the process last published its page (stops moving when the process hangs). */
  uint64_t samples;                /* Publications of the page so far. */
  /* memory */
  uint64_t live_bytes;             /* Bytes the process has allocated and not freed (usable sizes), counted by memtrim. */
  uint64_t peak_live_bytes;        /* Highest live bytes seen by the sampler since the process started. */
  /* allocations */
  uint64_t allocs;                 /* Allocations made by the process (malloc family calls that returned memory; a moving realloc is a free and an allocation). */
  uint64_t frees;                  /* Blocks freed by the process. */
  /* memory */
  uint64_t heap_bytes;             /* Bytes the allocator holds from the system for the heap (glibc: arenas plus mmapped blocks). */
  uint64_t retained_bytes;         /* Heap bytes held by the allocator but not used by the process (heap - live): what a release can give back. */
  uint64_t rss_bytes;              /* Resident set size of the process. */
  uint64_t pss_bytes;              /* Proportional set size (shared pages divided among their sharers; sums over forked workers); absent until the first smaps_rollup read. */
  uint64_t uss_bytes;              /* Unique set size (private pages only: what exiting would free); absent until the first smaps_rollup read. */
  uint64_t swap_bytes;             /* Bytes of the process swapped out; absent until the first smaps_rollup read. */
  uint64_t smaps_at_ms;            /* Unix time of the last smaps_rollup read (PSS, USS, swap). */
  /* releases */
  uint64_t trims;                  /* Releases of retained memory so far (by reason: releases_by_reason). */
  uint64_t released_bytes;         /* Bytes given back to the system by memtrim's releases (RSS before minus after). */
  uint64_t last_trim_us;           /* Duration of the last release; absent before the first. */
  uint64_t max_trim_us;            /* Longest release since the process started; absent before the first. */
  uint64_t last_trim_at_ms;        /* Unix time of the last release; absent before the first. */
  /* worker */
  uint64_t sample_cost_us;         /* What the last sample cost memtrim's worker thread. */
  uint64_t worker_cpu_us;          /* CPU time used by memtrim's worker thread in the process. */
  uint64_t interval_ms;            /* Sampling period (MEMTRIM_INTERVAL_MS). */
  uint64_t smaps_interval_ms;      /* Period of the PSS, USS and swap reads (MEMTRIM_SMAPS_INTERVAL_MS). */
  /* releases */
  uint64_t releases_by_reason[6];  /* Releases of retained memory by reason: request (memtrim trim), api (memtrim_trim()), retained, idle, pressure (PSI), limit. */
  uint64_t last_reason;            /* Why the last release ran. */
  uint64_t last_rss_before;        /* Resident set size just before the last release. */
  uint64_t last_rss_after;         /* Resident set size just after the last release. */
  /* policy */
  uint64_t policy_checks;          /* Samples the release policy looked at. */
  uint64_t skipped_small;          /* Samples in which a release trigger held but too little new retained memory had come (MEMTRIM_MIN_RETAINED). */
  uint64_t skipped_backoff;        /* Samples in which a release trigger held but the spacing after the last release, or the back-off, held it back. */
  uint64_t alloc_rate;             /* Allocations plus frees per second over the last interval. */
  uint64_t idle;                   /* 1 while the release policy sees the process as idle. */
  uint64_t new_retained;           /* Retained memory new since the last release (glibc: growth of the heaps' resident bytes that live growth does not explain; jemalloc: its unused dirty and muzzy pages); automatic releases wait for MEMTRIM_MIN_RETAINED of it. */
  uint64_t min_retained;           /* New retained bytes worth a release (MEMTRIM_MIN_RETAINED). */
  uint64_t frag_threshold_permille; /* Share of the heaps' resident bytes that live blocks do not use that triggers a release while busy (MEMTRIM_FRAG_THRESHOLD); absent when off. */
  uint64_t idle_ms;                /* Quiet time that triggers a release (MEMTRIM_IDLE_MS). */
  uint64_t psi_stall_ms;           /* Memory-pressure stall per second that triggers a release (MEMTRIM_PSI_STALL_MS). */
  uint64_t psi_armed;              /* 1 when a memory-pressure (PSI) trigger is armed. */
  /* limits */
  uint64_t limit_metric;           /* Figure the soft limit (MEMTRIM_LIMIT) bounds: rss, pss, uss or live. */
  uint64_t limit_bytes;            /* Soft limit (MEMTRIM_LIMIT) in bytes, labelled with the figure it bounds (rss, pss, uss, live); absent when none is set. */
  uint64_t limit_value;            /* The figure the soft limit bounds, at the last sample. */
  uint64_t limit_strikes;          /* Consecutive samples over the soft limit. */
  uint64_t limit_violations;       /* Samples in which the process was over its soft limit (MEMTRIM_LIMIT). */
  uint64_t limit_signals;          /* Signals (MEMTRIM_LIMIT_SIGNAL) the process sent itself for staying over its soft limit. */
  uint64_t cgroup_limit_bytes;     /* Memory limit of the process's cgroup; absent when there is none. */
  uint64_t hard_limit;             /* MEMTRIM_HARD_LIMIT: allocations that would take live bytes over it fail; absent when none is set. */
  uint64_t refused_allocs;         /* Allocations refused (ENOMEM) by MEMTRIM_HARD_LIMIT. */
  /* python */
  uint64_t py_state;               /* What memtrim can do with CPython's small-object allocator (pymalloc): none (no CPython), active, unknown layout (a version memtrim does not know), free-threaded, off (MEMTRIM_PYMALLOC=0), stopped. */
  uint64_t py_arenas;              /* CPython's object arenas, at the last walk. */
  uint64_t py_arena_bytes;         /* Resident bytes of CPython's object arenas (pymalloc), at the last walk; absent in other processes. */
  uint64_t py_used_pools;          /* CPython pools in use, at the last walk. */
  uint64_t py_empty_pools;         /* Empty CPython pools still resident past their header, at the last walk. */
  uint64_t py_empty_bytes;         /* Resident bytes of CPython's empty pools past their header: what the next release gives back. */
  uint64_t py_returned_pools;      /* Empty CPython pools already given back, at the last walk. */
  uint64_t py_allocated_bytes;     /* Bytes in allocated blocks of CPython's pools, at the last walk. */
  uint64_t py_free_bytes;          /* Bytes in free blocks of CPython's used pools, at the last walk. */
  uint64_t py_measured_at_ms;      /* Unix time of the last walk of CPython's arenas. */
  uint64_t py_released_bytes;      /* Bytes of CPython's empty pools given back by memtrim. */
  uint64_t py_released_pools;      /* CPython pools whose pages memtrim gave back. */
  uint64_t py_steps;               /* Steps in which memtrim held CPython's interpreter lock to give empty pools back. */
  uint64_t py_last_hold_us;        /* Time the last such step held CPython's interpreter lock. */
  uint64_t py_max_hold_us;         /* Longest time one of memtrim's steps held CPython's interpreter lock. */
  /* policy */
  uint64_t release_skip_reason;    /* Why the last sample did not release: none (it released, or nothing was decided yet), no_trigger (no trigger held), min_retained (too little new retained memory), backoff (the spacing after the last release, or the back-off), budget (a busy-time release would overrun MEMTRIM_BUSY_BUDGET), refaults (the pages of busy-time releases came straight back: tried again later), pending (the last release's pages are not looked at again yet). */
  /* limits */
  uint64_t limit_dry_runs;         /* Signals the soft limit would have sent under MEMTRIM_LIMIT_ACTION=log (a dry run: none was sent). */
  uint64_t limit_deferred;         /* Samples in which the process would have signalled itself for its soft limit but deferred: a sibling worker of the same master was signalled less than MEMTRIM_LIMIT_STAGGER_MS before. */
  uint64_t limit_deferred_until_ms; /* Unix time from which the last deferral lets the process signal itself; absent when it is not deferring. */
  uint64_t budget_rank;            /* Under a cgroup budget (MEMTRIM_LIMIT=cgroup:…, limit_bytes the budget, limit_value the cgroup's usage): this process's place among the cgroup's memtrim processes by retained memory (1: the most, which releases first). */
  uint64_t budget_members;         /* Under a cgroup budget: the cgroup's memtrim processes that share it (this one included). */
  uint64_t budget_largest;         /* Under a cgroup budget: 1 when this process has the largest USS of them, the only one that may be recycled for the budget. */
  /* cost */
  uint64_t process_cpu_us;         /* CPU time of the process (getrusage), memtrim's worker thread excluded: what MEMTRIM_BUSY_BUDGET is a share of. */
  uint64_t minor_faults;           /* Minor page faults of the process (ru_minflt). */
  uint64_t heap_resident_bytes;    /* Resident bytes of the allocator's own heaps (glibc: mincore over the main heap and the thread heaps; jemalloc: stats.resident), which neither interpreter arenas nor file pages move. */
  uint64_t busy_budget_permille;   /* Share of the process's CPU that busy-time releases, and the faults of the pages that come back, may take (MEMTRIM_BUSY_BUDGET); absent when off. */
  uint64_t budget_used_permille;   /* What releases and the faults of their pages took of the process's CPU over the last MEMTRIM_BUDGET_WINDOW_MS. */
  uint64_t release_cpu_us;         /* CPU time memtrim's releases took (worker thread). */
  uint64_t last_release_kind;      /* What the last release did: trim (malloc_trim and the thread arenas' tops), tops (the tops alone), je_decay (jemalloc's due pages), je_purge (all of jemalloc's unused pages). */
  uint64_t last_release_pages;     /* Heap pages the last release made non-resident (mincore before and after; glibc). */
  uint64_t last_refault_pages;     /* Of those, pages resident again MEMTRIM_REFAULT_CHECK_MS later; absent until looked at. */
  uint64_t released_pages;         /* Heap pages made non-resident by every release (glibc). */
  uint64_t refault_pages;          /* Released pages found resident again at their check, all releases. */
  uint64_t fault_cost_ns;          /* CPU cost of one page fault in ns, charged per page that comes back (MEMTRIM_FAULT_COST_NS, or measured at the worker's start). */
  uint64_t survival_trim_permille; /* Share of the pages busy-time trims released that stayed released until their check (moving average); absent until measured. */
  uint64_t survival_tops_permille; /* The same for busy-time releases of the thread arenas' tops alone. */
  /* process */
  uint64_t stats_bytes;            /* Bytes of stats the process's memtrim publishes (set by the reader from the page's header): fields past them, added by a newer memtrim, are absent. */
};
MEMTRIM_STATIC_ASSERT(sizeof(struct memtrim_page_stats) == 752, "memtrim_page_stats size");
/* END generated */

struct memtrim_page {
  uint64_t magic;
  uint32_t layout_version;     /* the compatible version (MEMTRIM_PAGE_LAYOUT_VERSION) */
  uint32_t header_size;        /* bytes of the file the writer uses: stats_offset + stats_size */
  uint64_t seq;
  uint32_t stats_offset;       /* where the writer's stats start */
  uint32_t stats_size;         /* sizeof(struct memtrim_page_stats) of the writer */
  uint32_t trim_requested;     /* futex word: incremented by `memtrim trim` */
  uint32_t trim_served;        /* futex word: the request the worker served last */
  uint32_t report_requested;   /* the same pair for `memtrim report` */
  uint32_t report_served;
  uint32_t control_reserved[12]; /* zero: room for requests to come */
  struct memtrim_page_stats stats; /* as this version's writers place them: see stats_offset */
};

MEMTRIM_ASSERT_OFFSET(memtrim_page, magic, 0);
MEMTRIM_ASSERT_OFFSET(memtrim_page, layout_version, 8);
MEMTRIM_ASSERT_OFFSET(memtrim_page, header_size, 12);
MEMTRIM_ASSERT_OFFSET(memtrim_page, seq, 16);
MEMTRIM_ASSERT_OFFSET(memtrim_page, stats_offset, 24);
MEMTRIM_ASSERT_OFFSET(memtrim_page, stats_size, 28);
MEMTRIM_ASSERT_OFFSET(memtrim_page, trim_requested, 32);
MEMTRIM_ASSERT_OFFSET(memtrim_page, trim_served, 36);
MEMTRIM_ASSERT_OFFSET(memtrim_page, report_requested, 40);
MEMTRIM_ASSERT_OFFSET(memtrim_page, report_served, 44);
MEMTRIM_ASSERT_OFFSET(memtrim_page, control_reserved, 48);
MEMTRIM_ASSERT_OFFSET(memtrim_page, stats, MEMTRIM_PAGE_STATS_OFFSET);
MEMTRIM_STATIC_ASSERT(sizeof(struct memtrim_stats) == 40, "memtrim_stats size");
MEMTRIM_ASSERT_OFFSET(memtrim_stats, live_bytes, 8);
MEMTRIM_ASSERT_OFFSET(memtrim_stats, frees, 32);

#endif /* MEMTRIM_H */
