/* Return values and errno of the malloc family on its edge and error paths, as a transcript that
 * does not depend on addresses: run once without libmemtrim.so and once with it, the two
 * transcripts must be equal byte for byte (docs/DESIGN.md, traps 9 and 10).
 *
 * stdout: the transcript, one line per call. Pointers appear only as properties (NULL or a
 * block, aligned or not, usable size large enough or not, contents kept or not). Before each
 * call errno is set to a sentinel (ESPIPE), so "errno=unchanged" means the call left it alone.
 *
 * Usable sizes legitimately differ between allocators (the suite runs on the library's glibc and
 * jemalloc backends), so the transcript shows only whether they are large enough.
 *
 * stderr: "allocator: glibc|jemalloc", the allocator seen serving the program (backend.h). When
 * memtrim_get_stats is found (the library is preloaded), the library's live bytes and live blocks
 * are compared after every step with what the program holds; each mismatch is a "FAIL" line and
 * makes the exit status 1. When glibc serves, the exported malloc_usable_size must agree with
 * glibc's own for every block (also with MEMTRIM_DISABLE=1: a pure pass-through). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <gnu/libc-version.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "probe.h"

/* The program reads blocks after a realloc that failed, on purpose. */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wuse-after-free"

#define SENTINEL ESPIPE

/* Sizes read from volatiles: the compiler must neither fold nor warn about the calls. */
static volatile size_t size_max = SIZE_MAX;
static volatile size_t ptrdiff_max = PTRDIFF_MAX;
/* GCC knows posix_memalign and calloc: it assumes *memptr is unchanged on failure and that calloc
 * memory reads as zero, which would blind the checks. Call posix_memalign through a volatile
 * pointer and read memory through volatile loads (and compile with -fno-builtin). */
static int (*volatile posix_memalign_v)(void **, size_t, size_t) = posix_memalign;
static size_t page;

static get_stats_fn get_stats;
static struct memtrim_stats s0;
static uint64_t held_bytes; /* usable sizes of the blocks this program holds */
static int64_t held_blocks;
static int stat_checks, stat_failures;
/* The reference for the byte counts (backend.h): glibc's own malloc_usable_size (from libc.so.6)
 * when glibc serves, and then the library's exported malloc_usable_size must agree with it; the
 * exported one on jemalloc. */
static enum serving serving;
static size_t (*ref_usable)(void *);

static const char *errname(int e) {
  static char buf[32];
  switch (e) {
    case SENTINEL: return "unchanged";
    case 0: return "0";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case EOVERFLOW: return "EOVERFLOW";
    default: snprintf(buf, sizeof buf, "%d", e); return buf;
  }
}

static size_t pow2_up(size_t a) {
  size_t r = 1;
  while (r < a) r <<= 1;
  return r;
}

/* "NULL" or "block aligned(A)=yes usable>=N=yes": the properties of a returned pointer. */
static const char *desc(void *p, size_t align, size_t need) {
  static char buf[128];
  if (!p) return "NULL";
  size_t u = malloc_usable_size(p);
  int n = snprintf(buf, sizeof buf, "block");
  if (align > 1) n += snprintf(buf + n, sizeof buf - n, " aligned(%zu)=%s", align, (uintptr_t)p % align ? "no" : "yes");
  snprintf(buf + n, sizeof buf - n, " usable>=%zu=%s", need, u >= need ? "yes" : "no");
  return buf;
}

static void take(void *p) {
  if (p) {
    held_bytes += ref_usable(p);
    held_blocks++;
    if (serving == SERVING_GLIBC && malloc_usable_size(p) != ref_usable(p)) {
      fprintf(stderr, "FAIL: malloc_usable_size %zu, glibc says %zu\n", malloc_usable_size(p), ref_usable(p));
      stat_failures++;
    }
  }
}

static void give(void *p) {
  if (p) {
    held_bytes -= ref_usable(p);
    held_blocks--;
  }
}

/* With the library: its live bytes and blocks must equal what the program holds. */
static void verify(const char *step) {
  if (!get_stats) return;
  struct memtrim_stats s;
  stat_checks++;
  if (get_stats(&s, sizeof s) != 0) {
    fprintf(stderr, "FAIL after %s: memtrim_get_stats failed\n", step);
    stat_failures++;
    return;
  }
  int64_t bytes = live_bytes_since(&s0, &s);
  int64_t blocks = live_blocks_since(&s0, &s);
  if (bytes != (int64_t)held_bytes || blocks != held_blocks) {
    fprintf(stderr, "FAIL after %s: live_bytes delta %" PRId64 " expected %" PRIu64 ", live blocks delta %" PRId64
            " expected %" PRId64 "\n", step, bytes, held_bytes, blocks, held_blocks);
    stat_failures++;
  }
}

/* One call returning a pointer: print it, account for it, check the library agrees. */
#define CALL(expr, align, need)                                                         \
  ({                                                                                    \
    errno = SENTINEL;                                                                   \
    void *p_ = (expr);                                                                  \
    int e_ = errno;                                                                     \
    printf("%s -> %s errno=%s\n", #expr, desc(p_, (align), (need)), errname(e_));       \
    take(p_);                                                                           \
    verify(#expr);                                                                      \
    p_;                                                                                 \
  })

static void release(void *p, const char *how) {
  give(p);
  errno = SENTINEL;
  if (how[0] == 'c') cfree(p);
  else free(p);
  printf("%s(%s) -> errno=%s\n", how, p ? "block" : "NULL", errname(errno));
  verify(how);
}

/* A block filled with a pattern, and a check that it kept it. */
static void fill(void *p, size_t n) { memset(p, 0xa5, n); }
static const char *kept(void *p, size_t n) {
  const volatile unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != 0xa5) return "changed";
  return "kept";
}

static void pm(size_t align, size_t size, const char *label) {
  void *sentinel = (void *)(uintptr_t)0x1234;
  void *q = sentinel;
  errno = SENTINEL;
  int rc = posix_memalign_v(&q, align, size);
  int e = errno;
  printf("posix_memalign(&p,%s) -> rc=%s memptr=%s", label, rc == 0 ? "0" : errname(rc),
         q == sentinel ? "untouched" : q == NULL ? "NULL" : "set");
  if (rc == 0 && q != sentinel && q) printf(" %s", desc(q, align, size));
  printf(" errno=%s\n", errname(e));
  if (rc == 0 && q != sentinel) {
    take(q);
    verify("posix_memalign");
    give(q);
    free(q);
  }
  verify("posix_memalign");
}

/* glibc aligns every block to MALLOC_ALIGNMENT (2 * sizeof(size_t): 16 on 64-bit), however small
 * the request, and memalign, aligned_alloc and posix_memalign give at least the alignment asked
 * for. 64 blocks of 0..8 bytes, held at once so that neighbouring slots of an allocator's smallest
 * size class show, from each entry point. */
static void small_blocks(int how, const char *label) {
  const size_t min_align = 2 * sizeof(size_t);
  void *blocks[64];
  int all = 1, usable = 1;
  errno = SENTINEL;
  for (int k = 0; k < 64; k++) {
    size_t n = k % 9;
    void *p = NULL;
    switch (how) {
      case 0: p = malloc(n); break;
      case 1: p = calloc(1, n); break;
      case 2: p = realloc(NULL, n); break;
      case 3: p = reallocarray(NULL, n, 1); break;
      case 4: /* shrinking a block; to 1..8 bytes, as 0 would free it */
        n = 1 + k % 8;
        p = malloc(100);
        if (p) p = realloc(p, n);
        break;
      case 5: p = memalign(min_align, n); break;
      case 6: p = aligned_alloc(min_align, n); break;
      default:
        if (posix_memalign_v(&p, min_align, n) != 0) p = NULL;
        break;
    }
    blocks[k] = p;
    if (!p || (uintptr_t)p % min_align) all = 0;
    if (p && malloc_usable_size(p) < n) usable = 0;
    take(p);
  }
  int e = errno;
  verify(label);
  printf("%s x64 -> %s aligned(%zu)=%s usable=%s errno=%s\n", label, all ? "blocks" : "some NULL or misaligned", min_align,
         all ? "yes" : "no", usable ? "yes" : "no", errname(e));
  for (int k = 0; k < 64; k++) give(blocks[k]), free(blocks[k]);
  verify("free");
}

int main(void) {
  page = (size_t)sysconf(_SC_PAGESIZE);
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  printf("glibc %s\n", gnu_get_libc_version()); /* the buffer exists before the counters are read */
  serving = serving_allocator();
  fprintf(stderr, "allocator: %s\n", serving_name(serving));
  ref_usable = reference_usable(serving);
  if (!ref_usable) {
    fprintf(stderr, "FAIL: glibc's malloc_usable_size not found\n");
    return 1;
  }
  get_stats = find_get_stats();
  if (get_stats && get_stats(&s0, sizeof s0) != 0) {
    fprintf(stderr, "FAIL: memtrim_get_stats failed\n");
    return 1;
  }
  if (get_stats && s0.allocs == 0) { /* stdout's buffer is counted unless nothing is */
    fprintf(stderr, "stats checks: off (the library counts nothing)\n");
    get_stats = NULL;
  }
  verify("start");

  /* malloc */
  void *p = CALL(malloc(0), 16, 0);
  release(p, "free");
  p = CALL(malloc(1), 16, 1);
  release(p, "free");
  CALL(malloc(size_max), 1, 0);
  CALL(malloc(size_max - 4096), 1, 0);
  CALL(malloc(ptrdiff_max + 1), 1, 0);
  CALL(malloc(ptrdiff_max), 1, 0);
  errno = SENTINEL;
  printf("malloc_usable_size(NULL) -> %zu errno=%s\n", malloc_usable_size(NULL), errname(errno));

  /* the smallest blocks keep malloc's alignment */
  small_blocks(0, "malloc(0..8)");
  small_blocks(1, "calloc(1, 0..8)");
  small_blocks(2, "realloc(NULL, 0..8)");
  small_blocks(3, "reallocarray(NULL, 0..8, 1)");
  small_blocks(4, "realloc(malloc(100), 1..8)");
  small_blocks(5, "memalign(16, 0..8)");
  small_blocks(6, "aligned_alloc(16, 0..8)");
  small_blocks(7, "posix_memalign(&p,16,0..8)");

  /* calloc */
  CALL(calloc(size_max / 2 + 1, 2), 1, 0);
  CALL(calloc(2, size_max / 2 + 1), 1, 0);
  CALL(calloc(size_max, size_max), 1, 0);
  CALL(calloc(1, ptrdiff_max + 1), 1, 0);
  CALL(calloc(1, size_max), 1, 0);
  p = CALL(calloc(0, size_max), 16, 0);
  release(p, "free");
  p = CALL(calloc(size_max, 0), 16, 0);
  release(p, "free");
  p = CALL(malloc(1000), 16, 1000);
  fill(p, 1000);
  release(p, "free");
  p = CALL(calloc(10, 100), 16, 1000);
  {
    const volatile unsigned char *c = p;
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= c[i] == 0;
    printf("calloc(10, 100) after a freed dirty block: zeroed=%s\n", zero ? "yes" : "no");
  }
  release(p, "free");
  p = CALL(calloc(1, 300 * 1024), 16, 300 * 1024);
  release(p, "free");

  /* realloc */
  p = CALL(realloc(NULL, 100), 16, 100);
  fill(p, 100);
  void *old = p;
  give(old);
  p = CALL(realloc(old, 5000), 16, 5000);
  printf("  grown block: contents %s\n", kept(p, 100));
  fill(p, 5000);
  old = p;
  give(old);
  p = CALL(realloc(old, 200 * 1024), 16, 200 * 1024); /* into an mmapped chunk */
  printf("  grown block: contents %s\n", kept(p, 5000));
  fill(p, 200 * 1024);
  old = p;
  give(old);
  p = CALL(realloc(old, 400 * 1024), 16, 400 * 1024); /* mremap */
  printf("  grown block: contents %s\n", kept(p, 200 * 1024));
  old = p;
  give(old);
  p = CALL(realloc(old, 50), 16, 50); /* mmapped to small */
  printf("  shrunk block: contents %s\n", kept(p, 50));
  /* failing reallocs leave the block live and unchanged */
  old = p;
  void *q = CALL(realloc(old, size_max), 1, 0);
  printf("  old block after failed realloc: contents %s usable>=50=%s\n", kept(old, 50), malloc_usable_size(old) >= 50 ? "yes" : "no");
  q = CALL(realloc(old, ptrdiff_max + 1), 1, 0);
  printf("  old block after failed realloc: contents %s\n", kept(old, 50));
  q = CALL(reallocarray(old, size_max / 2 + 1, 2), 1, 0);
  printf("  old block after failed reallocarray: contents %s\n", kept(old, 50));
  q = CALL(reallocarray(old, 2, size_max / 2 + 1), 1, 0);
  printf("  old block after failed reallocarray: contents %s\n", kept(old, 50));
  /* realloc(p, 0) frees p and returns NULL on glibc */
  give(old);
  q = CALL(realloc(old, 0), 1, 0);
  if (q) give(q), free(q); /* not glibc's behaviour; the transcript shows it */
  verify("realloc(p, 0)");
  p = CALL(realloc(NULL, 0), 16, 0);
  release(p, "free");
  CALL(realloc(NULL, size_max), 1, 0);
  p = CALL(realloc(NULL, 300 * 1024), 16, 300 * 1024); /* mmapped, then to 0 */
  give(p);
  q = CALL(realloc(p, 0), 1, 0);
  if (q) give(q), free(q);

  /* reallocarray */
  p = CALL(reallocarray(NULL, 10, 10), 16, 100);
  fill(p, 100);
  old = p;
  give(old);
  p = CALL(reallocarray(old, 100, 30), 16, 3000);
  printf("  grown block: contents %s\n", kept(p, 100));
  old = p;
  give(old);
  q = CALL(reallocarray(old, 0, 10), 1, 0); /* realloc(p, 0): frees */
  if (q) give(q), free(q);
  p = CALL(reallocarray(NULL, 0, 0), 16, 0);
  release(p, "free");
  CALL(reallocarray(NULL, size_max, 2), 1, 0);

  /* memalign: non-power-of-two alignments round up to the next power of two */
  static const size_t aligns[] = {0, 1, 2, 3, 8, 16, 24, 31, 33, 48, 64, 100, 4095, 4096, 65536, 1 << 20};
  for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
    size_t a = aligns[i], want = pow2_up(a);
    int all = 1, usable = 1;
    void *blocks[32];
    errno = SENTINEL;
    for (int k = 0; k < 32; k++) {
      blocks[k] = memalign(a, 100 + 24 * k);
      if (!blocks[k] || (uintptr_t)blocks[k] % want || (uintptr_t)blocks[k] % 16) all = 0;
      if (blocks[k] && malloc_usable_size(blocks[k]) < 100 + 24 * (size_t)k) usable = 0;
      take(blocks[k]);
    }
    int e = errno;
    verify("memalign");
    printf("memalign(%zu, 100..844) x32 -> %s aligned(%zu)=%s usable=%s errno=%s\n", a, all ? "blocks" : "some NULL or misaligned",
           want, all ? "yes" : "no", usable ? "yes" : "no", errname(e));
    for (int k = 0; k < 32; k++) give(blocks[k]), free(blocks[k]);
    verify("free");
  }
  p = CALL(memalign(64, 300 * 1024), 64, 300 * 1024);
  release(p, "free");
  p = CALL(memalign(24, 300 * 1024), 32, 300 * 1024);
  release(p, "free");
  p = CALL(memalign(64, 0), 64, 0);
  release(p, "free");
  CALL(memalign(size_max / 2 + 2, 10), 1, 0);
  CALL(memalign(size_max, 10), 1, 0);
  CALL(memalign(size_max / 2 + 1, 10), 1, 0);
  CALL(memalign(64, size_max), 1, 0);
  CALL(memalign(64, size_max - 100), 1, 0);
  CALL(memalign(64, ptrdiff_max), 1, 0);
  CALL(memalign(24, size_max - 40), 1, 0);

  /* posix_memalign: EINVAL for a bad alignment, ENOMEM when out of memory; *memptr untouched */
  pm(0, 16, "0,16");
  pm(1, 16, "1,16");
  pm(3, 16, "3,16");
  pm(4, 16, "4,16");
  pm(sizeof(void *), 16, "sizeof(void*),16");
  pm(12, 16, "12,16");
  pm(24, 16, "24,16");
  pm(48, 16, "48,16");
  pm(64, 0, "64,0");
  pm(64, 100, "64,100");
  pm(4096, 300 * 1024, "4096,300K");
  pm(size_max / 2 + 1, 16, "SIZE_MAX/2+1,16");
  pm(size_max, 16, "SIZE_MAX,16");
  pm(64, size_max, "64,SIZE_MAX");
  pm(64, size_max - 100, "64,SIZE_MAX-100");
  pm(64, ptrdiff_max, "64,PTRDIFF_MAX");
  pm(24, size_max, "24,SIZE_MAX");

  /* aligned_alloc: the size need not be a multiple of the alignment. glibc before 2.38 treats
   * it as memalign (a non-power-of-two alignment rounds up); 2.38 rejects such alignments. */
  p = CALL(aligned_alloc(64, 100), 64, 100);
  release(p, "free");
  p = CALL(aligned_alloc(4096, 10), 4096, 10);
  release(p, "free");
  p = CALL(aligned_alloc(16, 0), 16, 0);
  release(p, "free");
  p = CALL(aligned_alloc(24, 100), 32, 100);
  if (p) release(p, "free");
  p = CALL(aligned_alloc(0, 100), 16, 100);
  if (p) release(p, "free");
  p = CALL(aligned_alloc(3, 100), 16, 100);
  if (p) release(p, "free");
  CALL(aligned_alloc(64, size_max), 1, 0);
  CALL(aligned_alloc(size_max / 2 + 2, 16), 1, 0);

  /* valloc, pvalloc: page alignment, pvalloc rounds the size up to pages */
  p = CALL(valloc(100), page, 100);
  release(p, "free");
  p = CALL(valloc(0), page, 0);
  release(p, "free");
  p = CALL(valloc(300 * 1024), page, 300 * 1024);
  release(p, "free");
  CALL(valloc(size_max), 1, 0);
  CALL(valloc(size_max - page), 1, 0);
  p = CALL(pvalloc(100), page, page);
  release(p, "free");
  p = CALL(pvalloc(page + 1), page, 2 * page);
  release(p, "free");
  p = CALL(pvalloc(0), page, 0);
  release(p, "free");
  p = CALL(pvalloc(300 * 1024 + 1), page, 301 * 1024);
  release(p, "free");
  CALL(pvalloc(size_max), 1, 0);
  CALL(pvalloc(size_max - page + 2), 1, 0);
  CALL(pvalloc(size_max - 2 * page), 1, 0);
  CALL(pvalloc(ptrdiff_max), 1, 0);

  /* free and cfree preserve errno, for heap and mmapped chunks and NULL */
  release(NULL, "free");
  release(NULL, "cfree");
  p = CALL(malloc(64), 16, 64);
  release(p, "free");
  p = CALL(malloc(256 * 1024), 16, 256 * 1024);
  release(p, "free");
  p = CALL(malloc(64), 16, 64);
  release(p, "cfree");
  p = CALL(malloc(256 * 1024), 16, 256 * 1024);
  release(p, "cfree");
  p = CALL(memalign(4096, 256 * 1024), 4096, 256 * 1024);
  release(p, "free");

  verify("end");
  fflush(stdout);
  if (get_stats) {
    fprintf(stderr, "stats checks: %d, failed: %d\n", stat_checks, stat_failures);
    if (stat_checks == 0) return 1;
  }
  return stat_failures ? 1 : 0;
}
