/* realloc under MEMTRIM_HARD_LIMIT.
 *   limit_realloc grow      malloc(40 MiB), then realloc to 41 MiB: exit 0 when it succeeds
 *                           (live bytes stay at 41 MiB, under a 64 MiB limit).
 *   limit_realloc loop      grows a buffer from 4 KiB to 8 MiB 4 KiB at a time, again and again
 *                           (at least 5 times, until a second has passed or 30 times); prints
 *                           "best MS" for the fastest round.
 *   limit_realloc release   shrinks a 20 MiB heap block (mmap threshold raised to 32 MiB) to
 *                           14 MiB while a release runs (glibc backend: a probe malloc before
 *                           and after comes from the side pool), under a 30 MiB limit: exit 0
 *                           when it succeeds, as it does without the library or outside a
 *                           release.
 *   limit_realloc release-grow   grows a 100 MiB block (an mmapped chunk) to 110 MiB the same
 *                           way, under a 160 MiB limit. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdatomic.h>
#include <time.h>

#include "probe.h"

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static atomic_int stop;

static void *releaser(void *arg) {
  trim_fn trim = (trim_fn)arg;
  while (!atomic_load(&stop)) trim();
  return NULL;
}

/* Whether a release diverts this thread's allocations now. */
static int diverted(void) {
  void *p = malloc(24);
  int d = (((size_t *)p)[-1] & 2) != 0;
  free(p);
  return d;
}

static int realloc_during_release(size_t from, size_t to) {
  trim_fn trim = find_trim();
  /* A fragmented heap (24 MiB at most, under either limit), so that each release lasts. */
  enum { N = 24 * 1024 };
  static void *blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = malloc(1000);
  for (int i = 0; i < N; i++)
    if (i % 16) free(blocks[i]);
  if (to < from) mallopt(M_MMAP_THRESHOLD, 32 << 20);
  char *p = malloc(from << 20);
  if (!p) return 2;
  size_t kept = (to < from ? to : from) << 20;
  memset(p, 7, kept);
  if (!trim) {
    char *q = realloc(p, to << 20);
    printf("realloc %zu MiB -> %zu MiB: %s\n", from, to, q ? "succeeded" : "returned NULL");
    return q ? 0 : 1;
  }
  pthread_t t;
  pthread_create(&t, NULL, releaser, (void *)trim);
  int rc = 3;
  for (long tries = 0; tries < 100000000 && rc == 3; tries++) {
    if (!diverted()) continue;
    char *q = realloc(p, to << 20);
    int during = diverted();
    if (!q) {
      printf("realloc %zu MiB -> %zu MiB during a release returned NULL\n", from, to);
      rc = 1;
    } else if (during) {
      printf("realloc %zu MiB -> %zu MiB during a release: succeeded, data %s\n", from, to, q[kept - 1] == 7 ? "kept" : "lost");
      rc = q[kept - 1] == 7 ? 0 : 4;
    } else if (!(p = realloc(q, from << 20))) {
      rc = 2;
    }
  }
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  if (rc == 3) printf("no realloc ran inside a release\n");
  return rc;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "release") == 0) return realloc_during_release(20, 14);
  if (argc > 1 && strcmp(argv[1], "release-grow") == 0) return realloc_during_release(100, 110);
  if (argc > 1 && strcmp(argv[1], "grow") == 0) {
    char *p = malloc(40ul << 20);
    if (!p) return 2;
    memset(p, 7, 40ul << 20);
    char *q = realloc(p, 41ul << 20);
    printf("realloc 40 MiB -> 41 MiB: %s\n", q ? "succeeded" : "returned NULL");
    if (!q) return 1;
    int kept = q[(40ul << 20) - 1] == 7;
    free(q);
    return kept ? 0 : 3;
  }
  double best = 1e30, total = 0;
  for (int round = 0; round < 30 && (round < 5 || total < 1000); round++) {
    double t0 = now_ms();
    char *p = NULL;
    for (size_t n = 4096; n <= (8ul << 20); n += 4096) {
      char *q = realloc(p, n);
      if (!q) {
        printf("realloc to %zu returned NULL\n", n);
        return 1;
      }
      p = q;
      p[n - 1] = 1;
    }
    free(p);
    double dt = now_ms() - t0;
    total += dt;
    if (dt < best) best = dt;
  }
  printf("best %.3f\n", best);
  return 0;
}
