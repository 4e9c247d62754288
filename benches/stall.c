/* Stall benchmark: how long can a release block a thread that allocates?
 *
 * The main thread builds a fragmented heap (HEAP_MIB of 1 KiB blocks, 15 of 16 freed), then
 * allocates and frees continuously in that same arena through one entry point of the malloc
 * family, timing every free + allocation. Meanwhile another thread releases memory once: with
 * libmemtrim.so preloaded through memtrim_trim(), without it through malloc_trim(0). Prints the
 * release's duration and yield and the longest single free + allocation the main thread saw
 * while it ran.
 *
 *   stall [HEAP_MIB [ENTRY]]      (defaults 1024, malloc)
 *
 * ENTRY: malloc, calloc, realloc (of the block in the slot), memalign, posix_memalign,
 * aligned_alloc, valloc, pvalloc (sizes 16-4000 B; alignments 64 B or a page), or malloc64m
 * (a 64 MiB malloc, beyond the largest size a release's side pool serves). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

enum entry { MALLOC, CALLOC, REALLOC, MEMALIGN, POSIX_MEMALIGN, ALIGNED_ALLOC, VALLOC, PVALLOC, MALLOC64M, ENTRIES };
static const char *names[ENTRIES] = {"malloc", "calloc", "realloc", "memalign", "posix_memalign", "aligned_alloc", "valloc", "pvalloc", "malloc64m"};

/* GCC would fold some of these calls away (a malloc'd and freed block, say) without them. */
static void *(*volatile malloc_v)(size_t) = malloc;
static void *(*volatile calloc_v)(size_t, size_t) = calloc;
static void *(*volatile realloc_v)(void *, size_t) = realloc;
static void *(*volatile memalign_v)(size_t, size_t) = memalign;
static int (*volatile posix_memalign_v)(void **, size_t, size_t) = posix_memalign;
static void *(*volatile aligned_alloc_v)(size_t, size_t) = aligned_alloc;
static void *(*volatile valloc_v)(size_t) = valloc;
static void *(*volatile pvalloc_v)(size_t) = pvalloc;

/* Frees (or, for realloc, resizes) the block in *slot and puts a new one there. */
static void replace(enum entry e, void **slot, size_t n) {
  void *p = NULL;
  if (e != REALLOC) free(*slot);
  switch (e) {
  case MALLOC: p = malloc_v(n); break;
  case CALLOC: p = calloc_v(1, n); break;
  case REALLOC: p = realloc_v(*slot, n); break;
  case MEMALIGN: p = memalign_v(64, n); break;
  case POSIX_MEMALIGN: if (posix_memalign_v(&p, 64, n) != 0) p = NULL; break;
  case ALIGNED_ALLOC: p = aligned_alloc_v(64, n); break;
  case VALLOC: p = valloc_v(n); break;
  case PVALLOC: p = pvalloc_v(n); break;
  case MALLOC64M: p = malloc_v(64ul << 20); break;
  case ENTRIES: break;
  }
  if (!p) { fprintf(stderr, "stall: %s(%zu) failed\n", names[e], n); exit(1); }
  *slot = p;
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 1024;
  const char *name = argc > 2 ? argv[2] : "malloc";
  enum entry e = MALLOC;
  while (e < ENTRIES && strcmp(names[e], name) != 0) e++;
  if (e == ENTRIES) { fprintf(stderr, "stall: unknown entry point %s\n", name); return 2; }
  long n = mib * 1024;
  void **blocks = malloc(n * sizeof *blocks);
  for (long i = 0; i < n; i++) blocks[i] = malloc(1000);
  for (long i = 0; i < n; i++) if (i % 16) { free(blocks[i]); blocks[i] = 0; }

  pthread_t t;
  pthread_create(&t, 0, releaser, 0);
  enum { RING = 256 };
  void *ring[RING] = {0};
  unsigned ring_len = e == MALLOC64M ? 4 : RING;
  uint64_t seed = 88172645463325252ull;
  double worst_during = 0, worst_outside = 0;
  long ops_during = 0;
  while (atomic_load(&phase) < 2) {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
    unsigned slot = seed % ring_len;
    int ph = atomic_load(&phase);
    double a = now_ms();
    replace(e, &ring[slot], 16 + (seed >> 32) % 4000);
    double dt = now_ms() - a;
    if (ph == 1 || atomic_load(&phase) == 1) { if (dt > worst_during) worst_during = dt; ops_during++; }
    else if (dt > worst_outside) worst_outside = dt;
  }
  pthread_join(t, 0);
  printf("release %.1f ms, released %ld MiB; longest %s+free during it %.3f ms (%ld calls), outside %.3f ms\n",
         release_ms, released_kib / 1024, names[e], worst_during, ops_during, worst_outside);
  return 0;
}
