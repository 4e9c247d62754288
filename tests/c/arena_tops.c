/* Thread arenas' top chunks, which malloc_trim(0) leaves resident, and a release.
 *
 * Each of TOPS threads first frees a 4 MiB mmapped block (glibc then raises M_TRIM_THRESHOLD to
 * 8 MiB, as a Python or Ruby worker does freeing its first big response), keeps KEEP patterned
 * blocks, then allocates and frees 6 MiB of 32 KiB blocks: its arena's top holds 6 MiB of
 * resident pages that free() does not give back, being under the threshold. The main thread then
 * releases (memtrim_trim() under the library, malloc_trim(0) without) while STRESS threads
 * allocate, fill, check and free blocks of their own, and prints the resident bytes the first
 * release returned ("released N"); then it releases RELEASES more times under the same load.
 * Afterwards every TOPS thread checks its kept blocks and takes its top again through calloc,
 * which must read zero. Prints "ok" at the end; exits 1 at the first check that fails. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdatomic.h>
#include <unistd.h>

#include "probe.h"

enum { TOPS = 4, STRESS = 2, KEEP = 64, BLOCK = 32 << 10, BLOCKS = 192, RELEASES = 200 };

static pthread_barrier_t built, checked;
static atomic_int stop;

static void fail(const char *what, long detail) {
  printf("FAIL: %s (%ld)\n", what, detail);
  exit(1);
}

static long resident_bytes(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &pages, &rss) != 2) fail("statm", 0);
  fclose(f);
  return rss * sysconf(_SC_PAGESIZE);
}

static void fill(unsigned char *p, size_t n, unsigned char tag) {
  for (size_t i = 0; i < n; i += 61) p[i] = (unsigned char)(tag + i);
}

static void check(const unsigned char *p, size_t n, unsigned char tag, const char *what) {
  for (size_t i = 0; i < n; i += 61)
    if (p[i] != (unsigned char)(tag + i)) fail(what, (long)i);
}

static void *tops(void *arg) {
  unsigned char tag = (unsigned char)(uintptr_t)arg;
  void *volatile big = malloc(4 << 20); /* volatile: the compiler may drop a malloc-free pair */
  free(big);
  unsigned char *keep[KEEP], *blocks[BLOCKS];
  for (int i = 0; i < KEEP; i++) fill(keep[i] = malloc(1000 + i), 1000 + i, tag + i);
  for (int i = 0; i < BLOCKS; i++) memset(blocks[i] = malloc(BLOCK), 0xA5, BLOCK);
  for (int i = BLOCKS - 1; i >= 0; i--) free(blocks[i]);
  pthread_barrier_wait(&built);
  pthread_barrier_wait(&checked);
  for (int i = 0; i < KEEP; i++) check(keep[i], 1000 + i, tag + i, "kept block changed by a release");
  for (int i = 0; i < BLOCKS; i++) {
    blocks[i] = calloc(1, BLOCK);
    for (size_t j = 0; j < BLOCK; j += 8)
      if (*(uint64_t *)(blocks[i] + j) != 0) fail("calloc from a released top is not zero", (long)j);
    fill(blocks[i], BLOCK, tag);
  }
  for (int i = 0; i < BLOCKS; i++) {
    check(blocks[i], BLOCK, tag, "block from a released top changed");
    free(blocks[i]);
  }
  for (int i = 0; i < KEEP; i++) free(keep[i]);
  return NULL;
}

static void *stress(void *arg) {
  uint64_t seed = 0x9E3779B97F4A7C15ull + (uintptr_t)arg;
  while (!atomic_load(&stop)) {
    size_t n = 16 + xorshift(&seed) % (96 << 10);
    unsigned char tag = (unsigned char)xorshift(&seed);
    unsigned char *p = (xorshift(&seed) & 1) ? malloc(n) : calloc(1, n);
    if (!p) fail("allocation failed", (long)n);
    fill(p, n, tag);
    check(p, n, tag, "block changed while releases ran");
    free(p);
  }
  return NULL;
}

int main(void) {
  trim_fn trim = find_trim();
  pthread_t t[TOPS], s[STRESS];
  pthread_barrier_init(&built, NULL, TOPS + 1);
  pthread_barrier_init(&checked, NULL, TOPS + 1);
  for (int i = 0; i < TOPS; i++) pthread_create(&t[i], NULL, tops, (void *)(uintptr_t)(i * 40));
  pthread_barrier_wait(&built);
  for (int i = 0; i < STRESS; i++) pthread_create(&s[i], NULL, stress, (void *)(uintptr_t)i);
  long before = resident_bytes();
  if (trim) trim(); else malloc_trim(0);
  printf("released %ld\n", before - resident_bytes());
  for (int i = 0; i < RELEASES; i++) {
    if (trim) trim(); else malloc_trim(0);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < STRESS; i++) pthread_join(s[i], NULL);
  pthread_barrier_wait(&checked);
  for (int i = 0; i < TOPS; i++) pthread_join(t[i], NULL);
  printf("ok\n");
  return 0;
}
