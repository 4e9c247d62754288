/* Exact accounting through every export of the malloc family, from several threads.
 *
 * Each thread keeps a table of blocks and runs a long random mix of operations on it: malloc,
 * calloc, realloc (from NULL, to 0, growing, shrinking, failing), reallocarray, memalign (also
 * with alignments that are not powers of two), posix_memalign, aligned_alloc, valloc, pvalloc,
 * free and cfree, with sizes from 0 to a few hundred KiB (some blocks are mmapped chunks). The
 * program sums the usable sizes of the blocks it holds — glibc's own malloc_usable_size() when
 * glibc serves (and checks that the library's exported malloc_usable_size agrees), the exported
 * one on the jemalloc backend (backend.h) — and, at quiescent points (all threads
 * parked at a barrier, or joined), compares that sum and the number of held blocks with the
 * library's live_bytes and allocs - frees, byte for byte. In a second phase every block is freed
 * by a different thread than the one that allocated it; live bytes must return exactly to their
 * start. All along, another thread calls memtrim_trim() every half millisecond: on glibc each
 * release diverts the host's allocations to the library's side pool and defers frees while it
 * runs; on jemalloc it purges the arenas.
 *
 * Usage: accounting [THREADS [OPS_PER_THREAD [SEED]]]. Prints "allocator: glibc|jemalloc" (the
 * allocator seen serving the program). Exit 0 when every check holds; every failed check is
 * printed with what was expected and what the library said. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "probe.h"

#define MAX_THREADS 16
#define SLOTS 256
#define CHECKPOINTS 4

static get_stats_fn get_stats;
static trim_fn trim;
/* The reference for the byte counts (backend.h): glibc's own malloc_usable_size, looked up in
 * libc.so.6, when glibc serves (the library's exported malloc_usable_size must then agree with
 * it); the exported one on jemalloc. */
static enum serving serving;
static size_t (*ref_usable)(void *);

struct block {
  unsigned char *p;
  size_t usable;
  unsigned char tag;
};

struct worker {
  pthread_t th;
  int id;
  uint64_t rng;
  long ops;
  struct block slots[SLOTS];
  /* what this thread holds now: sum of usable sizes and number of blocks */
  uint64_t held_bytes;
  int64_t held_blocks;
  /* counts of each operation, to show the mix was exercised */
  long n_op[32];
  long errors;
  char first_error[256];
};

static struct worker workers[MAX_THREADS];
static int nthreads = 4;
static long ops_per_thread = 1000000;
static pthread_barrier_t barrier;
static long page;
static int failures;
/* Huge sizes read from a volatile, so that the compiler neither warns nor folds the calls. */
static volatile size_t size_max = SIZE_MAX;
/* GCC knows posix_memalign and calloc: it assumes *memptr is unchanged on failure and that calloc
 * memory reads as zero, which would blind the checks below. Call posix_memalign through a
 * volatile pointer and read calloc memory through volatile loads (and compile with -fno-builtin). */
static int (*volatile posix_memalign_v)(void **, size_t, size_t) = posix_memalign;

enum {
  OP_MALLOC, OP_CALLOC, OP_REALLOC_NULL, OP_REALLOCARRAY_NULL, OP_MEMALIGN, OP_POSIX_MEMALIGN,
  OP_ALIGNED_ALLOC, OP_VALLOC, OP_PVALLOC, OP_FREE, OP_CFREE, OP_REALLOC_ZERO, OP_REALLOC_GROW,
  OP_REALLOC_SHRINK, OP_REALLOCARRAY, OP_FAIL_MALLOC, OP_FAIL_REALLOC, OP_FAIL_REALLOCARRAY,
  OP_FAIL_CALLOC, OP_FAIL_POSIX_MEMALIGN, OP_MALLOC_ZERO, OP_COUNT
};
static const char *op_names[OP_COUNT] = {
  "malloc", "calloc", "realloc(NULL,n)", "reallocarray(NULL,..)", "memalign", "posix_memalign",
  "aligned_alloc", "valloc", "pvalloc", "free", "cfree", "realloc(p,0)", "realloc-grow",
  "realloc-shrink", "reallocarray(p,..)", "failing-malloc", "failing-realloc",
  "failing-reallocarray", "failing-calloc", "failing-posix_memalign", "malloc(0)"
};

/* Sizes from 0 to ~400 KiB: mostly small, some medium, a few mmapped. */
static size_t rand_size(uint64_t *s) {
  uint64_t r = xorshift(s);
  unsigned k = r % 1000;
  r >>= 10;
  if (k < 5) return 0;
  if (k < 700) return r % 512;
  if (k < 950) return r % 8192;
  if (k < 994) return r % 65536;
  return 128 * 1024 + r % (272 * 1024); /* above the (fixed) mmap threshold */
}

static void fail(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct worker *w, const char *fmt, ...) {
  if (w->errors++ == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_error, sizeof w->first_error, fmt, ap);
    va_end(ap);
  }
}

/* The next power of two >= a (glibc's memalign rounds a non-power-of-two alignment up). */
static size_t pow2_up(size_t a) {
  size_t r = 1;
  while (r < a) r <<= 1;
  return r;
}

static void hold(struct worker *w, int i, void *p, size_t req, size_t align, const char *what) {
  struct block *b = &w->slots[i];
  size_t u = ref_usable(p);
  if (serving == SERVING_GLIBC && malloc_usable_size(p) != u)
    fail(w, "%s(%zu): malloc_usable_size %zu, glibc says %zu", what, req, malloc_usable_size(p), u);
  if (u < req) fail(w, "%s(%zu): usable size %zu below the request", what, req, u);
  if (align > 1 && ((uintptr_t)p % align) != 0) fail(w, "%s(%zu): block not aligned to %zu", what, req, align);
  if (((uintptr_t)p % (2 * sizeof(void *))) != 0)
    fail(w, "%s(%zu): block not aligned to %zu (malloc's minimum)", what, req, 2 * sizeof(void *));
  b->p = p;
  b->usable = u;
  b->tag = (unsigned char)(xorshift(&w->rng) | 1);
  if (u > 0) {
    b->p[0] = b->tag;
    b->p[u - 1] = b->tag;
  }
  w->held_bytes += u;
  w->held_blocks += 1;
}

static void drop(struct worker *w, int i) {
  struct block *b = &w->slots[i];
  w->held_bytes -= b->usable;
  w->held_blocks -= 1;
  b->p = NULL;
  b->usable = 0;
}

static void check_tag(struct worker *w, struct block *b, const char *when) {
  if (b->usable > 0 && (b->p[0] != b->tag || b->p[b->usable - 1] != b->tag))
    fail(w, "%s: block contents changed", when);
}

static void do_alloc(struct worker *w, int i) {
  static const size_t any_align[] = {1, 2, 3, 4, 8, 16, 24, 32, 48, 64, 100, 128, 256, 1000, 4096, 8192};
  static const size_t pm_align[] = {8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384};
  size_t sz = rand_size(&w->rng);
  uint64_t r = xorshift(&w->rng);
  int op;
  switch (r % 16) {
    case 0: case 1: case 2: op = OP_MALLOC; break;
    case 3: case 4: op = OP_CALLOC; break;
    case 5: op = OP_REALLOC_NULL; break;
    case 6: op = OP_REALLOCARRAY_NULL; break;
    case 7: case 8: op = OP_MEMALIGN; break;
    case 9: case 10: op = OP_POSIX_MEMALIGN; break;
    case 11: op = OP_ALIGNED_ALLOC; break;
    case 12: op = OP_VALLOC; break;
    case 13: op = OP_PVALLOC; break;
    case 14: op = OP_MALLOC_ZERO; break;
    default: op = OP_MALLOC; break;
  }
  r >>= 8;
  void *p = NULL;
  size_t align = 1, req = sz;
  switch (op) {
    case OP_MALLOC: p = malloc(sz); break;
    case OP_MALLOC_ZERO: req = 0; p = malloc(0); break;
    case OP_CALLOC: {
      size_t n = 1 + r % 8, m = sz / n;
      req = n * m;
      p = calloc(n, m);
      if (p && req > 0) {
        const volatile unsigned char *c = p;
        if (c[0] || c[req / 2] || c[req - 1]) fail(w, "calloc(%zu,%zu): memory not zeroed", n, m);
      }
      break;
    }
    case OP_REALLOC_NULL: p = realloc(NULL, sz); break;
    case OP_REALLOCARRAY_NULL: {
      size_t n = 1 + r % 4, m = sz / n;
      req = n * m;
      p = reallocarray(NULL, n, m);
      break;
    }
    case OP_MEMALIGN: {
      size_t a = any_align[r % (sizeof any_align / sizeof any_align[0])];
      align = pow2_up(a);
      p = memalign(a, sz);
      break;
    }
    case OP_POSIX_MEMALIGN: {
      void *q = (void *)(uintptr_t)0x5a5a5a5a;
      align = pm_align[r % (sizeof pm_align / sizeof pm_align[0])];
      int rc = posix_memalign_v(&q, align, sz);
      if (rc != 0) fail(w, "posix_memalign(%zu,%zu) returned %d", align, sz, rc);
      else p = q;
      break;
    }
    case OP_ALIGNED_ALLOC: {
      /* sizes need not be multiples of the alignment (glibc accepts them, so must a shim) */
      align = pm_align[r % (sizeof pm_align / sizeof pm_align[0])];
      p = aligned_alloc(align, sz);
      break;
    }
    case OP_VALLOC: align = page; p = valloc(sz); break;
    case OP_PVALLOC:
      align = page;
      req = (sz + page - 1) / page * page;
      p = pvalloc(sz);
      break;
  }
  w->n_op[op]++;
  if (!p) {
    fail(w, "%s(%zu) returned NULL", op_names[op], sz);
    return;
  }
  hold(w, i, p, req, align, op_names[op]);
}

static void do_release(struct worker *w, int i) {
  struct block *b = &w->slots[i];
  check_tag(w, b, "before release");
  uint64_t r = xorshift(&w->rng);
  int op;
  switch (r % 16) {
    case 0: case 1: case 2: case 3: case 4: op = OP_FREE; break;
    case 5: case 6: op = OP_CFREE; break;
    case 7: op = OP_REALLOC_ZERO; break;
    case 8: case 9: op = OP_REALLOC_GROW; break;
    case 10: case 11: op = OP_REALLOC_SHRINK; break;
    case 12: op = OP_REALLOCARRAY; break;
    case 13:
      switch ((r >> 4) % 5) {
        case 0: op = OP_FAIL_MALLOC; break;
        case 1: op = OP_FAIL_REALLOC; break;
        case 2: op = OP_FAIL_REALLOCARRAY; break;
        case 3: op = OP_FAIL_CALLOC; break;
        default: op = OP_FAIL_POSIX_MEMALIGN; break;
      }
      break;
    default: op = OP_FREE; break;
  }
  r >>= 8;
  w->n_op[op]++;
  switch (op) {
    case OP_FREE: free(b->p); drop(w, i); break;
    case OP_CFREE: cfree(b->p); drop(w, i); break;
    case OP_REALLOC_ZERO: {
      void *q = realloc(b->p, 0);
      drop(w, i);
      if (q != NULL) { /* glibc frees and returns NULL; anything else would be held */
        fail(w, "realloc(p, 0) returned a block instead of NULL");
        hold(w, i, q, 0, 1, "realloc(p,0)");
      }
      break;
    }
    case OP_REALLOC_GROW:
    case OP_REALLOC_SHRINK:
    case OP_REALLOCARRAY: {
      size_t n;
      if (op == OP_REALLOC_GROW) n = b->usable + 1 + rand_size(&w->rng) / 2;
      else if (op == OP_REALLOC_SHRINK) n = 1 + b->usable / (2 + r % 4);
      else n = rand_size(&w->rng) / 4 * 4 + 4;
      unsigned char tag = b->tag;
      void *q = op == OP_REALLOCARRAY ? reallocarray(b->p, n / 4, 4) : realloc(b->p, n);
      if (!q) {
        fail(w, "%s(%zu) returned NULL", op_names[op], n);
        return; /* the old block stays live */
      }
      if (((unsigned char *)q)[0] != tag) fail(w, "%s: contents not preserved", op_names[op]);
      drop(w, i);
      hold(w, i, q, n, 1, op_names[op]);
      break;
    }
    case OP_FAIL_MALLOC: {
      errno = 0;
      void *q = malloc(size_max - (r % 4096));
      if (q || errno != ENOMEM) fail(w, "malloc(huge) gave %p errno %d", q, errno);
      break;
    }
    case OP_FAIL_REALLOC: {
      errno = 0;
      void *q = realloc(b->p, size_max - (r % 4096));
      if (q || errno != ENOMEM) fail(w, "realloc(p, huge) gave %p errno %d", q, errno);
      check_tag(w, b, "after failed realloc");
      break;
    }
    case OP_FAIL_REALLOCARRAY: {
      errno = 0;
      void *q = reallocarray(b->p, size_max / 2 + 1 + (r % 4096), 2);
      if (q || errno != ENOMEM) fail(w, "reallocarray overflow gave %p errno %d", q, errno);
      check_tag(w, b, "after failed reallocarray");
      break;
    }
    case OP_FAIL_CALLOC: {
      errno = 0;
      void *q = calloc(size_max / 16 + 1 + (r % 4096), 16);
      if (q || errno != ENOMEM) fail(w, "calloc overflow gave %p errno %d", q, errno);
      break;
    }
    case OP_FAIL_POSIX_MEMALIGN: {
      void *q = b->p;
      int rc = posix_memalign_v(&q, 24, 64); /* not a power of two */
      if (rc != EINVAL || q != b->p) fail(w, "posix_memalign(24) gave rc %d", rc);
      rc = posix_memalign_v(&q, 64, size_max - 64);
      if (rc != ENOMEM || q != b->p) fail(w, "posix_memalign(64, huge) gave rc %d", rc);
      break;
    }
  }
}

static void *run_ops(void *arg) {
  struct worker *w = arg;
  long per_checkpoint = w->ops / CHECKPOINTS;
  for (int c = 0; c < CHECKPOINTS; c++) {
    for (long k = 0; k < per_checkpoint; k++) {
      int i = xorshift(&w->rng) % SLOTS;
      if (w->slots[i].p) do_release(w, i);
      else do_alloc(w, i);
    }
    pthread_barrier_wait(&barrier); /* main reads the counters while every worker waits */
    pthread_barrier_wait(&barrier);
  }
  return NULL;
}

/* Phase 2: free the blocks of the worker after this one, so that every free happens on a
 * thread other than the one that counted the allocation. */
static void *free_neighbour(void *arg) {
  struct worker *me = arg;
  struct worker *w = &workers[(me->id + 1) % nthreads];
  for (int i = 0; i < SLOTS; i++) {
    struct block *b = &w->slots[i];
    if (!b->p) continue;
    check_tag(me, b, "before cross-thread free");
    switch (i % 3) {
      case 0: free(b->p); break;
      case 1: cfree(b->p); break;
      default: if (realloc(b->p, 0) != NULL) fail(me, "realloc(p, 0) returned a block"); break;
    }
    b->p = NULL;
  }
  return NULL;
}

static struct memtrim_stats stats(void) { return read_stats(get_stats, "", &failures); }

/* The live bytes and blocks since s0 against what the workers hold, and the struct's header. */
static void check(const char *where, const struct memtrim_stats *s0, uint64_t want_bytes, int64_t want_blocks) {
  struct memtrim_stats s = stats();
  int ok = check_live("", where, s0, &s, want_bytes, want_blocks);
  if (s.size != sizeof s || s.version != MEMTRIM_STATS_VERSION) {
    printf("FAIL %s: stats size %" PRIu32 " version %" PRIu32 "\n", where, s.size, s.version);
    ok = 0;
  }
  if (s.peak_live_bytes < s.live_bytes) {
    printf("FAIL %s: peak_live_bytes %" PRIu64 " below live_bytes %" PRIu64 "\n", where, s.peak_live_bytes, s.live_bytes);
    ok = 0;
  }
  if (!ok) failures++;
}

/* Calls memtrim_trim() over and over while the workers run: every release diverts the host's
 * allocations to the library's side pool and defers its frees for as long as it runs, so many
 * operations take those paths. */
static volatile int trimmer_stop;
static volatile long trims;
static void *trimmer(void *arg) {
  while (!trimmer_stop) {
    trim();
    trims++;
    usleep(500);
  }
  return arg;
}

int main(int argc, char **argv) {
  if (argc > 1) nthreads = atoi(argv[1]);
  if (argc > 2) ops_per_thread = atol(argv[2]);
  uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x9e3779b97f4a7c15ull;
  if (nthreads < 1 || nthreads > MAX_THREADS || ops_per_thread < CHECKPOINTS) {
    fprintf(stderr, "usage: accounting [THREADS<=%d [OPS [SEED]]]\n", MAX_THREADS);
    return 2;
  }
  page = sysconf(_SC_PAGESIZE);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("accounting: %d threads x %ld operations, seed %#" PRIx64 "\n", nthreads, ops_per_thread, seed);

  get_stats = find_get_stats();
  trim = find_trim();
  if (!get_stats || !trim) {
    printf("FAIL: memtrim_get_stats or memtrim_trim not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }
  serving = serving_allocator();
  printf("allocator: %s\n", serving_name(serving));
  ref_usable = reference_usable(serving);
  if (!ref_usable) {
    printf("FAIL: glibc's malloc_usable_size not found\n");
    return 1;
  }
  /* A fixed mmap threshold keeps the large blocks mmapped for the whole run (glibc raises a
   * dynamic threshold after the first mmapped free; on jemalloc mallopt changes nothing). */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);

  /* As many stacks in glibc's cache as the phases use at once (probe.h). */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  fill_stack_cache(&attr, nthreads + 1);
  pthread_barrier_init(&barrier, NULL, nthreads + 1);

  struct memtrim_stats s0 = stats();
  pthread_t trim_thread;
  pthread_create(&trim_thread, &attr, trimmer, NULL);

  for (int t = 0; t < nthreads; t++) {
    workers[t].id = t;
    workers[t].rng = seed ^ (0x1234567ull * (t + 1));
    workers[t].ops = ops_per_thread;
    if (pthread_create(&workers[t].th, &attr, run_ops, &workers[t]) != 0) {
      printf("FAIL: pthread_create\n");
      return 1;
    }
  }
  for (int c = 0; c < CHECKPOINTS; c++) {
    pthread_barrier_wait(&barrier);
    uint64_t bytes = 0;
    int64_t blocks = 0;
    for (int t = 0; t < nthreads; t++) {
      bytes += workers[t].held_bytes;
      blocks += workers[t].held_blocks;
    }
    char where[64];
    snprintf(where, sizeof where, "checkpoint %d (threads parked)", c + 1);
    check(where, &s0, bytes, blocks);
    pthread_barrier_wait(&barrier);
  }
  for (int t = 0; t < nthreads; t++) pthread_join(workers[t].th, NULL);
  trimmer_stop = 1;
  pthread_join(trim_thread, NULL);
  uint64_t bytes = 0;
  int64_t blocks = 0;
  for (int t = 0; t < nthreads; t++) {
    bytes += workers[t].held_bytes;
    blocks += workers[t].held_blocks;
  }
  check("after join", &s0, bytes, blocks);

  trimmer_stop = 0;
  pthread_create(&trim_thread, &attr, trimmer, NULL);
  for (int t = 0; t < nthreads; t++) pthread_create(&workers[t].th, &attr, free_neighbour, &workers[t]);
  for (int t = 0; t < nthreads; t++) pthread_join(workers[t].th, NULL);
  trimmer_stop = 1;
  pthread_join(trim_thread, NULL);
  check("after every block was freed on another thread", &s0, 0, 0);

  long total[OP_COUNT] = {0};
  for (int t = 0; t < nthreads; t++) {
    for (int o = 0; o < OP_COUNT; o++) total[o] += workers[t].n_op[o];
    if (workers[t].errors) {
      printf("FAIL thread %d: %ld wrong results, first: %s\n", t, workers[t].errors, workers[t].first_error);
      failures++;
    }
  }
  for (int o = 0; o < OP_COUNT; o++) {
    printf("  %-24s %ld\n", op_names[o], total[o]);
    if (total[o] == 0 && ops_per_thread >= 10000) {
      printf("FAIL: %s never ran\n", op_names[o]);
      failures++;
    }
  }
  printf("  %-24s %ld\n", "memtrim_trim", trims);
  printf("accounting: %s (%d failed checks)\n", failures ? "FAILED" : "all checks hold", failures);
  return failures ? 1 : 0;
}
