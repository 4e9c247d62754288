/* A release must not take address space the host needs: under RLIMIT_AS (ulimit -v, or set by
 * the program after it started, as uwsgi's limit-as does in a worker) a large malloc after a
 * release succeeds exactly as it does on plain glibc.
 *
 * Fragments a 64 MiB heap of 1 KiB blocks (15 of 16 freed), sets RLIMIT_AS to 2,000,000 KiB
 * (`first`: before the first release; `between`: after one release and before a second), asks
 * for a release (memtrim_trim() when the library is preloaded, malloc_trim(0) otherwise), then
 * mallocs 1200 MiB. `after`: the limit is set after a release and the malloc follows with no
 * release in between; `live`: the same, while a block that a second thread got during a
 * release (served from the side pool: its header says IS_MMAPPED) is still live. Prints what
 * happened; exits 0 when the malloc succeeded. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>

#include "probe.h"

static size_t release(trim_fn trim) {
  if (trim) return trim();
  malloc_trim(0);
  return 0;
}

static atomic_int releasing;
static _Atomic(void *) kept;

/* Mallocs and frees 64 bytes until a block comes from the side pool, which it keeps. */
static void *keep_a_diverted_block(void *arg) {
  (void)arg;
  while (atomic_load(&releasing)) {
    void *p = malloc(64);
    if (((size_t *)p)[-1] & 2) {
      kept = p;
      return NULL;
    }
    free(p);
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *when = argc > 1 ? argv[1] : "first";
  int between = strcmp(when, "between") == 0, after = strcmp(when, "after") == 0, live = strcmp(when, "live") == 0;
  enum { N = 64 * 1024 };
  static void *blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = malloc(1000);
  for (int i = 0; i < N; i++)
    if (i % 16) free(blocks[i]);
  trim_fn trim = find_trim();
  if (between || after) release(trim);
  if (live) {
    pthread_t t;
    atomic_store(&releasing, 1);
    pthread_create(&t, NULL, keep_a_diverted_block, NULL);
    for (int i = 0; i < 50 && !kept; i++) release(trim);
    atomic_store(&releasing, 0);
    pthread_join(t, NULL);
    if (trim && !kept) {
      printf("no block was served during a release\n");
      return 2;
    }
  }
  struct rlimit lim = {2000000ul * 1024, 2000000ul * 1024};
  if (setrlimit(RLIMIT_AS, &lim) != 0) {
    perror("setrlimit");
    return 2;
  }
  size_t released = after || live ? 0 : release(trim);
  void *big = malloc(1200ul << 20);
  printf("%s: RLIMIT_AS 2000000 KiB (%s, %zu bytes released after it): malloc(1200 MiB) %s\n", when, trim ? "memtrim_trim" : "malloc_trim",
         released, big ? "succeeded" : "returned NULL");
  free(big);
  return big ? 0 : 1;
}
