/* Frees deferred during a release must end in glibc's arenas, where malloc_trim reaches them,
 * not parked in the tcache of the thread that hands them back to glibc (up to 7 blocks of each
 * size up to 1 KiB, about 0.2 MiB).
 *
 * A 128 MiB heap of 1 KiB blocks, 15 of 16 freed, makes the release last tens of ms. A second
 * thread holds 16 blocks of each tcache size (16 B to 1 KiB) and frees them all while the main
 * thread's memtrim_trim() runs (so the library defers them). After the release, glibc's in-use
 * bytes (mallinfo2, which counts tcache'd blocks as in use) must be back within 32 KiB of what
 * they were before the blocks were allocated. Prints the difference; exit 0 when it holds. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdatomic.h>
#include <time.h>

#include "probe.h"

enum { SIZES = 64, EACH = 16 };
static void *held[SIZES * EACH];
static atomic_int releasing;

static void *freer(void *arg) {
  (void)arg;
  while (!atomic_load(&releasing)) {
  }
  struct timespec d = {0, 10 * 1000 * 1000}; /* past the library's grace before it releases */
  nanosleep(&d, NULL);
  for (int i = 0; i < SIZES * EACH; i++) free(held[i]);
  return NULL;
}

int main(void) {
  trim_fn trim = find_trim();
  if (!trim) {
    printf("FAIL memtrim_trim not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }
  long n = 128 * 1024;
  void **blocks = malloc(n * sizeof *blocks);
  for (long i = 0; i < n; i++) blocks[i] = malloc(1000);
  for (long i = 0; i < n; i++)
    if (i % 16) free(blocks[i]);
  pthread_t t;
  pthread_create(&t, NULL, freer, NULL);
  size_t before = mallinfo2().uordblks;
  size_t bytes = 0;
  for (int i = 0; i < SIZES * EACH; i++) {
    held[i] = malloc(16 * (i / EACH + 1) - 8);
    bytes += malloc_usable_size(held[i]);
  }
  atomic_store(&releasing, 1);
  trim();
  pthread_join(t, NULL);
  long parked = (long)mallinfo2().uordblks - (long)before;
  printf("%zu bytes freed during the release; glibc's in-use bytes after it: %+ld\n", bytes, parked);
  return parked < 32 * 1024 && parked > -32 * 1024 ? 0 : 1;
}
