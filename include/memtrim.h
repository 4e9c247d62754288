/* memtrim: in-process C API of libmemtrim.so.
 *
 * Link with -lmemtrim, or look the functions up with dlsym(RTLD_DEFAULT, ...) so that the same
 * binary also runs without the library preloaded. */
#ifndef MEMTRIM_H
#define MEMTRIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEMTRIM_STATS_VERSION 1

struct memtrim_stats {
  uint32_t size;            /* bytes of this struct the library filled in */
  uint32_t version;         /* MEMTRIM_STATS_VERSION of the library */
  uint64_t live_bytes;      /* sum of malloc_usable_size() of the blocks allocated now */
  uint64_t peak_live_bytes; /* highest live_bytes seen by a read of the counters */
  uint64_t allocs;          /* blocks handed out; a successful realloc of a block is a free and an alloc */
  uint64_t frees;           /* blocks given back; allocs - frees is the number of live blocks */
  /* later fields are appended, never reordered */
};

/* Fills at most out_size bytes of *out; out->size says how many were filled. 0 on success,
 * -1 if out is NULL or out_size cannot hold the size and version words. */
int memtrim_get_stats(struct memtrim_stats *out, size_t out_size);

/* Releases retained memory now, on the calling thread; returns the bytes by which the
 * process's resident set shrank. */
size_t memtrim_trim(void);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
static_assert(sizeof(struct memtrim_stats) == 40, "memtrim_stats layout");
#else
_Static_assert(sizeof(struct memtrim_stats) == 40, "memtrim_stats layout");
_Static_assert(offsetof(struct memtrim_stats, live_bytes) == 8, "memtrim_stats layout");
_Static_assert(offsetof(struct memtrim_stats, frees) == 32, "memtrim_stats layout");
#endif

#endif /* MEMTRIM_H */
