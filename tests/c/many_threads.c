/* More threads alive at once than the library has per-thread counter slots (1024 at the time of
 * writing): the threads beyond count in a shared slot, and the totals must stay exact. Each of
 * 1100 threads allocates a block, all park at a barrier (the counters are read), then each frees
 * the block of another thread.
 *
 * The stacks are small (16 KiB) so that glibc's stack cache (40 MiB) keeps every one of them: a
 * first round of the same threads fills the cache, and the counted round reuses those stacks and
 * their DTVs instead of allocating new ones. The expected bytes are the blocks' usable sizes on
 * the allocator seen serving the program ("allocator: glibc|jemalloc", backend.h). Exit 0 when
 * the counts are exact. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "probe.h"

#define N 1100

static pthread_barrier_t barrier;
static void *blocks[N];

static void *thread_main(void *arg) {
  long i = (long)arg;
  blocks[i] = malloc(100 + i);
  pthread_barrier_wait(&barrier);
  pthread_barrier_wait(&barrier);
  free(blocks[(i + 1) % N]);
  return NULL;
}

static int round_of_threads(pthread_attr_t *attr, void (*parked)(void)) {
  pthread_t t[N];
  for (long i = 0; i < N; i++)
    if (pthread_create(&t[i], attr, thread_main, (void *)i) != 0) {
      printf("FAIL: pthread_create %ld\n", i);
      return 1;
    }
  pthread_barrier_wait(&barrier);
  if (parked) parked();
  pthread_barrier_wait(&barrier);
  for (long i = 0; i < N; i++) pthread_join(t[i], NULL);
  return 0;
}

static get_stats_fn get_stats;
static size_t (*ref_usable)(void *);
static struct memtrim_stats s0;
static int failures;

static void check(const char *where, uint64_t bytes, int64_t nblocks) {
  struct memtrim_stats s;
  if (get_stats(&s, sizeof s) != 0) {
    printf("FAIL: memtrim_get_stats\n");
    failures++;
    return;
  }
  int64_t got_bytes = live_bytes_since(&s0, &s);
  int64_t got_blocks = live_blocks_since(&s0, &s);
  int ok = got_bytes == (int64_t)bytes && got_blocks == nblocks;
  printf("%s %s: live_bytes delta %" PRId64 " expected %" PRIu64 ", live blocks delta %" PRId64 " expected %" PRId64 "\n",
         ok ? "ok" : "FAIL", where, got_bytes, bytes, got_blocks, nblocks);
  failures += !ok;
}

static void parked(void) {
  uint64_t sum = 0;
  for (int i = 0; i < N; i++) sum += ref_usable(blocks[i]);
  check("1100 threads parked, each holding a block", sum, N);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("many_threads: %d threads at once\n", N); /* stdout's buffer exists before counting */
  get_stats = find_get_stats();
  if (!get_stats) {
    printf("FAIL: memtrim_get_stats not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }
  enum serving serving = serving_allocator();
  printf("allocator: %s\n", serving_name(serving));
  ref_usable = reference_usable(serving);
  if (!ref_usable) {
    printf("FAIL: glibc's malloc_usable_size not found\n");
    return 1;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN > 16384 ? PTHREAD_STACK_MIN : 16384);
  pthread_barrier_init(&barrier, NULL, N + 1);
  if (round_of_threads(&attr, NULL)) return 1; /* fills the stack cache */
  if (get_stats(&s0, sizeof s0) != 0) return 1;
  if (round_of_threads(&attr, parked)) return 1;
  check("after join, every block freed by another thread", 0, 0);
  return failures ? 1 : 0;
}
