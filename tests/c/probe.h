/* What the test programs share besides backend.h: the library's C API looked up at run time (the
 * programs also run without the library, and must then neither fail to link nor crash), glibc's
 * compat cfree, a xorshift generator, warming glibc's stack cache, and comparing the library's
 * live bytes and blocks with what a program holds. C and C++; include after defining
 * _GNU_SOURCE. */
#ifndef MEMTRIM_TEST_PROBE_H
#define MEMTRIM_TEST_PROBE_H

#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memtrim.h"

/* glibc 2.26 removed cfree from its headers and keeps it only as a compat symbol, which an old
 * binary still calls: bind to that version, as such a binary does. */
#if defined(__x86_64__)
__asm__(".symver cfree, cfree@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver cfree, cfree@GLIBC_2.17");
#endif
#ifdef __cplusplus
extern "C" void cfree(void *);
#else
extern void cfree(void *);
#endif

typedef int (*get_stats_fn)(struct memtrim_stats *, size_t);
typedef size_t (*trim_fn)(void);

/* memtrim_get_stats, or NULL when the library is not preloaded. */
static inline get_stats_fn find_get_stats(void) { return (get_stats_fn)dlsym(RTLD_DEFAULT, "memtrim_get_stats"); }

/* memtrim_trim, or NULL when the library is not preloaded. */
static inline trim_fn find_trim(void) { return (trim_fn)dlsym(RTLD_DEFAULT, "memtrim_trim"); }

/* xorshift64: fast, and the same sequence for the same seed on every run. */
static inline uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static inline void *probe_warm(void *arg) {
  free(malloc(100));
  return arg;
}

/* glibc keeps the stacks of joined threads in a cache, each with its DTV, which pthread_create
 * allocated with calloc (through the interposed calloc). Filling the cache with the `n` stacks
 * (of `attr`) that a program uses at once lets its later threads reuse them and allocate none,
 * so that they do not disturb the counts. */
static inline void fill_stack_cache(pthread_attr_t *attr, int n) {
  enum { MAX_WARM = 64 };
  pthread_t t[MAX_WARM];
  if (n > MAX_WARM) n = MAX_WARM;
  for (int i = 0; i < n; i++) pthread_create(&t[i], attr, probe_warm, NULL);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

/* Live bytes and live blocks (allocs - frees) of `s` since `s0`. */
static inline int64_t live_bytes_since(const struct memtrim_stats *s0, const struct memtrim_stats *s) {
  return (int64_t)(s->live_bytes - s0->live_bytes);
}

static inline int64_t live_blocks_since(const struct memtrim_stats *s0, const struct memtrim_stats *s) {
  return (int64_t)((s->allocs - s->frees) - (s0->allocs - s0->frees));
}

/* The library's counters now (poisoned with 0xff where it writes nothing); a failed read is a
 * "FAIL" line on stdout, after `tag`, and counts in *failures. */
static inline struct memtrim_stats read_stats(get_stats_fn get_stats, const char *tag, int *failures) {
  struct memtrim_stats s;
  memset(&s, 0xff, sizeof s);
  int rc = get_stats(&s, sizeof s);
  if (rc != 0) {
    printf("%sFAIL: memtrim_get_stats returned %d\n", tag, rc);
    (*failures)++;
  }
  return s;
}

/* Whether the live bytes and blocks from `s0` to `s` are what the program holds (`bytes` in
 * `blocks`); says so on stdout after `tag`: "ok WHERE: live_bytes delta B, live blocks delta N",
 * or a "FAIL WHERE" line with what was expected and the allocs and frees in between. */
static inline int check_live(const char *tag, const char *where, const struct memtrim_stats *s0, const struct memtrim_stats *s, uint64_t bytes,
                             int64_t blocks) {
  int64_t got_bytes = live_bytes_since(s0, s);
  int64_t got_blocks = live_blocks_since(s0, s);
  if (got_bytes == (int64_t)bytes && got_blocks == blocks) {
    printf("%sok %s: live_bytes delta %" PRId64 ", live blocks delta %" PRId64 "\n", tag, where, got_bytes, got_blocks);
    return 1;
  }
  printf("%sFAIL %s: live_bytes delta %" PRId64 " expected %" PRIu64 " (off by %" PRId64 "), live blocks delta %" PRId64 " expected %" PRId64
         " (allocs +%" PRIu64 ", frees +%" PRIu64 ")\n",
         tag, where, got_bytes, bytes, got_bytes - (int64_t)bytes, got_blocks, blocks, s->allocs - s0->allocs, s->frees - s0->frees);
  return 0;
}

#endif
