/* Stall benchmark: how long can a release block a thread that allocates?
 *
 * The main thread builds a fragmented heap (HEAP_MIB of 1 KiB blocks, 15 of 16 freed), then
 * allocates and frees continuously in that same arena, timing every call. Meanwhile another
 * thread releases memory once: with libmemtrim.so preloaded through memtrim_trim(), without it
 * through malloc_trim(0). Prints the release's duration and yield and the longest single
 * malloc/free the main thread saw while it ran.
 *
 *   stall [HEAP_MIB]      (default 1024) */
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static atomic_int phase; /* 0 before, 1 releasing, 2 done */
static double release_ms;
static long released_kib;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static long rss_kib(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
  return rss * 4;
}

static void *releaser(void *arg) {
  (void)arg;
  size_t (*mt)(void) = (size_t (*)(void))dlsym(RTLD_DEFAULT, "memtrim_trim");
  struct timespec d = {0, 200 * 1000 * 1000};
  nanosleep(&d, 0);
  long before = rss_kib();
  atomic_store(&phase, 1);
  double t0 = now_ms();
  if (mt) mt(); else malloc_trim(0);
  release_ms = now_ms() - t0;
  atomic_store(&phase, 2);
  released_kib = before - rss_kib();
  return 0;
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 1024;
  long n = mib * 1024;
  void **blocks = malloc(n * sizeof *blocks);
  for (long i = 0; i < n; i++) blocks[i] = malloc(1000);
  for (long i = 0; i < n; i++) if (i % 16) { free(blocks[i]); blocks[i] = 0; }

  pthread_t t;
  pthread_create(&t, 0, releaser, 0);
  void *ring[256] = {0};
  uint64_t seed = 88172645463325252ull;
  double worst_during = 0, worst_outside = 0;
  long ops_during = 0;
  while (atomic_load(&phase) < 2) {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
    unsigned slot = seed % 256;
    int ph = atomic_load(&phase);
    double a = now_ms();
    free(ring[slot]);
    ring[slot] = malloc(16 + (seed >> 32) % 4000);
    double dt = now_ms() - a;
    if (ph == 1 || atomic_load(&phase) == 1) { if (dt > worst_during) worst_during = dt; ops_during++; }
    else if (dt > worst_outside) worst_outside = dt;
  }
  pthread_join(t, 0);
  printf("release %.1f ms, released %ld MiB; longest malloc+free during it %.3f ms (%ld pairs), outside %.3f ms\n",
         release_ms, released_kib / 1024, worst_during, ops_during, worst_outside);
  return 0;
}
