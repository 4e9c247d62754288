/* Which allocator serves the malloc family of this test program, and the reference usable size of
 * a block on it, for the programs that compare the library's live bytes with what they hold.
 *
 * The suite runs once per backend (TEST_ALLOCATOR, tests/common/mod.rs), so a program must not
 * assume glibc: glibc's own malloc_usable_size reads a chunk header that a jemalloc block does not
 * have (on jemalloc it returns garbage or faults). The serving allocator is observed, not taken
 * from the environment: glibc serves when a malloc of a block glibc keeps in its heap (above the
 * tcache sizes, below the mmap threshold) grows glibc's in-use bytes (mallinfo2, which the library
 * does not interpose) — without the library, with MEMTRIM_DISABLE, or on the glibc backend;
 * otherwise the library's jemalloc backend does. Programs print what they saw, and the tests
 * check that it is the backend they asked for. Include after defining _GNU_SOURCE. */
#ifndef MEMTRIM_TEST_BACKEND_H
#define MEMTRIM_TEST_BACKEND_H

#include <dlfcn.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

enum serving { SERVING_GLIBC, SERVING_JEMALLOC };

static inline const char *serving_name(enum serving s) { return s == SERVING_GLIBC ? "glibc" : "jemalloc"; }

static inline size_t glibc_in_use(void) {
#if __GLIBC_PREREQ(2, 33)
  return mallinfo2().uordblks;
#else
  return (size_t)(unsigned)mallinfo().uordblks;
#endif
}

/* Observes which allocator serves malloc. The glibc backend serves from the library's side pool
 * for the length of a release (a worker may run one at any time), which this does not count as
 * glibc: a few tries, a millisecond apart, see glibc if glibc serves at all. */
static inline enum serving serving_allocator(void) {
  enum { SIZE = 40000 }; /* on glibc neither a tcache size nor mmapped */
  for (int attempt = 0; attempt < 20; attempt++) {
    size_t before = glibc_in_use();
    void *volatile p = malloc(SIZE);
    size_t after = glibc_in_use();
    free(p);
    if (p && after >= before + SIZE) return SERVING_GLIBC;
    usleep(1000);
  }
  return SERVING_JEMALLOC;
}

/* glibc's own malloc_usable_size (looked up in libc.so.6, past the library's export), or NULL. */
static inline size_t (*glibc_malloc_usable_size(void))(void *) {
  void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
  return libc ? (size_t(*)(void *))dlsym(libc, "malloc_usable_size") : NULL;
}

/* The reference for usable sizes: glibc's own malloc_usable_size when glibc serves (the
 * library's export must then agree with it); on jemalloc, which nothing outside the library can
 * ask, the library's export. NULL if glibc's cannot be found. */
static inline size_t (*reference_usable(enum serving s))(void *) {
  return s == SERVING_GLIBC ? glibc_malloc_usable_size() : malloc_usable_size;
}

#endif
