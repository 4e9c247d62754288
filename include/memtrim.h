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
 * apart), mode 0600, FILE_BYTES long. The library's worker
 * thread is the only writer of `stats`, under the seqlock `seq` (odd while writing); a reader
 * copies `stats` between two equal even reads of `seq` and checks `stats.check`. Layout owned
 * by crates/common/src/page.rs; fields are only appended. */

#define MEMTRIM_PAGE_MAGIC 0x004d4952544d454dull /* "MEMTRIM\0" little-endian */
#define MEMTRIM_PAGE_LAYOUT_VERSION 1
#define MEMTRIM_PAGE_FILE_BYTES 4096
#define MEMTRIM_REASONS 6 /* request, api, retained, idle, pressure, limit */

struct memtrim_page_stats {
  uint64_t check;              /* checksum of every later word */
  uint32_t pid, ppid, uid, allocator; /* allocator: 0 glibc, 1 jemalloc */
  uint64_t start_ticks;
  char comm[16];
  uint64_t updated_at_ms;      /* unix ms of the last publication */
  uint64_t samples;
  uint64_t live_bytes, peak_live_bytes, allocs, frees;
  uint64_t heap_bytes;         /* what the allocator holds from the system */
  uint64_t retained_bytes;     /* heap_bytes - live_bytes */
  uint64_t rss_bytes, pss_bytes, uss_bytes, swap_bytes;
  uint64_t smaps_at_ms;        /* unix ms of the last smaps_rollup read */
  uint64_t trims, released_bytes, last_trim_us, max_trim_us, last_trim_at_ms;
  uint64_t sample_cost_us, worker_cpu_us;
  uint64_t interval_ms, smaps_interval_ms;
  uint64_t releases_by_reason[MEMTRIM_REASONS];
  uint64_t last_reason, last_rss_before, last_rss_after;
  /* release policy */
  uint64_t policy_checks, skipped_small, skipped_backoff;
  uint64_t alloc_rate;         /* allocations + frees per second over the last interval */
  uint64_t idle;               /* 1 while the process is seen as idle */
  uint64_t new_retained;       /* retained since the last release (resident, unexplained by live) */
  uint64_t min_retained, frag_threshold_permille /* UINT64_MAX: off */, idle_ms, psi_stall_ms;
  uint64_t psi_armed;
  /* memory limits */
  uint64_t limit_metric;       /* 0 none, 1 rss, 2 pss, 3 uss, 4 live */
  uint64_t limit_bytes, limit_value, limit_strikes, limit_violations, limit_signals;
  uint64_t cgroup_limit_bytes;
  uint64_t hard_limit, refused_allocs;
  /* CPython's pymalloc: state (0 none, 1 active, 2 unknown layout, 3 free-threaded, 4 off,
   * 5 stopped), the last walk of its arenas, and the empty pools given back so far */
  uint64_t py_state, py_arenas, py_arena_bytes, py_used_pools, py_empty_pools, py_empty_bytes;
  uint64_t py_returned_pools, py_allocated_bytes, py_free_bytes, py_measured_at_ms;
  uint64_t py_released_bytes, py_released_pools, py_steps, py_last_hold_us, py_max_hold_us;
};

struct memtrim_page {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_size;        /* sizeof(struct memtrim_page) of the writer */
  uint64_t seq;
  uint32_t trim_requested;     /* futex word: incremented by `memtrim trim` */
  uint32_t trim_served;        /* futex word: the request the worker served last */
  uint32_t report_requested;   /* the same pair for `memtrim report` */
  uint32_t report_served;
  struct memtrim_page_stats stats;
};

#define MEMTRIM_ASSERT_OFFSET(T, F, N) MEMTRIM_STATIC_ASSERT(offsetof(struct T, F) == N, #T "." #F)
#ifdef __cplusplus
#define MEMTRIM_STATIC_ASSERT static_assert
#else
#define MEMTRIM_STATIC_ASSERT _Static_assert
#endif
MEMTRIM_ASSERT_OFFSET(memtrim_page, magic, 0);
MEMTRIM_ASSERT_OFFSET(memtrim_page, layout_version, 8);
MEMTRIM_ASSERT_OFFSET(memtrim_page, header_size, 12);
MEMTRIM_ASSERT_OFFSET(memtrim_page, seq, 16);
MEMTRIM_ASSERT_OFFSET(memtrim_page, trim_requested, 24);
MEMTRIM_ASSERT_OFFSET(memtrim_page, trim_served, 28);
MEMTRIM_ASSERT_OFFSET(memtrim_page, report_requested, 32);
MEMTRIM_ASSERT_OFFSET(memtrim_page, report_served, 36);
MEMTRIM_ASSERT_OFFSET(memtrim_page, stats, 40);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, check, 0);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, pid, 8);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, ppid, 12);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, uid, 16);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, allocator, 20);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, start_ticks, 24);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, comm, 32);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, updated_at_ms, 48);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, samples, 56);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, live_bytes, 64);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, peak_live_bytes, 72);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, allocs, 80);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, frees, 88);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, heap_bytes, 96);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, retained_bytes, 104);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, rss_bytes, 112);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, pss_bytes, 120);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, uss_bytes, 128);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, swap_bytes, 136);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, smaps_at_ms, 144);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, trims, 152);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, released_bytes, 160);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, last_trim_us, 168);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, max_trim_us, 176);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, last_trim_at_ms, 184);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, sample_cost_us, 192);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, worker_cpu_us, 200);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, interval_ms, 208);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, smaps_interval_ms, 216);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, releases_by_reason, 224);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, last_reason, 272);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, last_rss_before, 280);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, last_rss_after, 288);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, policy_checks, 296);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, skipped_small, 304);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, skipped_backoff, 312);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, alloc_rate, 320);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, idle, 328);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, new_retained, 336);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, min_retained, 344);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, frag_threshold_permille, 352);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, idle_ms, 360);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, psi_stall_ms, 368);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, psi_armed, 376);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, limit_metric, 384);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, limit_bytes, 392);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, limit_value, 400);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, limit_strikes, 408);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, limit_violations, 416);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, limit_signals, 424);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, cgroup_limit_bytes, 432);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, hard_limit, 440);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, refused_allocs, 448);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_state, 456);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_arenas, 464);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_arena_bytes, 472);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_used_pools, 480);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_empty_pools, 488);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_empty_bytes, 496);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_returned_pools, 504);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_allocated_bytes, 512);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_free_bytes, 520);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_measured_at_ms, 528);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_released_bytes, 536);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_released_pools, 544);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_steps, 552);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_last_hold_us, 560);
MEMTRIM_ASSERT_OFFSET(memtrim_page_stats, py_max_hold_us, 568);
MEMTRIM_STATIC_ASSERT(sizeof(struct memtrim_page_stats) == 576, "memtrim_page_stats size");
MEMTRIM_STATIC_ASSERT(sizeof(struct memtrim_page) == 616, "memtrim_page size");
MEMTRIM_STATIC_ASSERT(sizeof(struct memtrim_stats) == 40, "memtrim_stats size");
MEMTRIM_ASSERT_OFFSET(memtrim_stats, live_bytes, 8);
MEMTRIM_ASSERT_OFFSET(memtrim_stats, frees, 32);

#endif /* MEMTRIM_H */
