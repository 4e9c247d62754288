/* realloc under MEMTRIM_HARD_LIMIT.
 *   limit_realloc grow      malloc(40 MiB), then realloc to 41 MiB: exit 0 when it succeeds
 *                           (live bytes stay at 41 MiB, under a 64 MiB limit).
 *   limit_realloc loop      grows a buffer from 4 KiB to 8 MiB 4 KiB at a time, again and again
 *                           (at least 5 times, until a second has passed or 30 times); prints
 *                           "best MS" for the fastest round. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
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
