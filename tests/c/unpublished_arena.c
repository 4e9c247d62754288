/* An arena glibc is still creating, which a release must leave alone.
 *
 * In _int_new_arena glibc writes a new arena's top chunk a few instructions before it stores 0
 * over the arena's lock word, and links the arena into main_arena's list only after that: an
 * arena caught in between looks complete but its lock is not yet a lock. This program builds
 * exactly such an arena by hand, in a HEAP_MAX-aligned anonymous mapping: heap_info (ar_ptr,
 * size, mprotect_size, pagesize), then malloc_state with lock 0, a valid top chunk reaching the
 * heap's end and `next` NULL (not on the list). It fills the top chunk's pages with a pattern,
 * starts one real thread arena (so that the process has a published list to walk), asks for a
 * release through memtrim_trim() and checks the pattern is intact. Prints "ok"; exits 1 with
 * "FAIL: ..." when a release touched the unpublished arena. Offsets: glibc 2.35 and later on
 * 64-bit (heap_info of 48 bytes; malloc_state's top at 96, next at 2160). */
#define _GNU_SOURCE
#include <gnu/libc-version.h>
#include <sys/mman.h>
#include <unistd.h>

#include "probe.h"

enum { HEAP_MAX = 64 << 20, HEAP_BYTES = 1 << 20, HEAP_INFO = 48, TOP_AT = 96, NEXT_AT = 2160, STATE_BYTES = 2200 };

static pthread_barrier_t built, released;

/* A real thread arena with a freed top, so that the list of published arenas is not empty. */
static void *thread_arena(void *arg) {
  void *blocks[64];
  for (int i = 0; i < 64; i++) memset(blocks[i] = malloc(32 << 10), 0x5A, 32 << 10);
  for (int i = 63; i >= 0; i--) free(blocks[i]);
  pthread_barrier_wait(&built);
  pthread_barrier_wait(&released);
  return arg;
}

static unsigned char pattern(size_t i) { return (unsigned char)(0xC3 ^ (i * 131) ^ (i >> 12)); }

int main(void) {
  trim_fn trim = find_trim();
  if (!trim) {
    printf("FAIL: memtrim_trim not found: run under the library\n");
    return 1;
  }
  int minor = 0;
  if (sscanf(gnu_get_libc_version(), "2.%d", &minor) != 1 || minor < 35) {
    printf("SKIP: glibc %s (the layout built here is that of 2.35 and later)\n", gnu_get_libc_version());
    return 0;
  }
  unsigned char *raw = mmap(NULL, 2 * (size_t)HEAP_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    printf("FAIL: mmap\n");
    return 1;
  }
  unsigned char *heap = (unsigned char *)(((uintptr_t)raw + HEAP_MAX - 1) & ~(uintptr_t)(HEAP_MAX - 1));
  /* only the heap's first HEAP_BYTES stay mapped, as glibc leaves them read-write */
  if (heap > raw) munmap(raw, heap - raw);
  munmap(heap + HEAP_BYTES, raw + 2 * (size_t)HEAP_MAX - (heap + HEAP_BYTES));

  uintptr_t *info = (uintptr_t *)heap;
  unsigned char *arena = heap + HEAP_INFO;
  info[0] = (uintptr_t)arena;      /* ar_ptr */
  info[1] = 0;                     /* prev */
  info[2] = HEAP_BYTES;            /* size */
  info[3] = HEAP_BYTES;            /* mprotect_size */
  info[4] = sysconf(_SC_PAGESIZE); /* pagesize */
  *(int *)arena = 0;               /* the lock, as __libc_lock_init is about to store it */
  uintptr_t top = ((uintptr_t)arena + STATE_BYTES + 15) & ~(uintptr_t)15;
  *(uintptr_t *)(arena + TOP_AT) = top;
  *(uintptr_t *)(arena + NEXT_AT) = 0; /* not yet on main_arena's list */
  uintptr_t *chunk = (uintptr_t *)top;
  chunk[0] = 0;                                           /* prev_size */
  chunk[1] = ((uintptr_t)heap + HEAP_BYTES - top) | 1;    /* size | PREV_INUSE */
  size_t from = top + 32 - (uintptr_t)heap, n = HEAP_BYTES - from;
  for (size_t i = 0; i < n; i++) heap[from + i] = pattern(i);

  pthread_t t;
  pthread_barrier_init(&built, NULL, 2);
  pthread_barrier_init(&released, NULL, 2);
  pthread_create(&t, NULL, thread_arena, NULL);
  pthread_barrier_wait(&built);
  size_t got = trim();
  pthread_barrier_wait(&released);
  pthread_join(t, NULL);
  printf("released %zu\n", got);
  if (*(int *)arena != 0) {
    printf("FAIL: the unpublished arena's lock word is %d after the release\n", *(int *)arena);
    return 1;
  }
  for (size_t i = 0; i < n; i++)
    if (heap[from + i] != pattern(i)) {
      printf("FAIL: a release changed the top chunk of an arena glibc has not published: byte %zu of %zu (page %zu) reads %#x\n",
             i, n, (from + i) / 4096, heap[from + i]);
      return 1;
    }
  printf("ok\n");
  return 0;
}
