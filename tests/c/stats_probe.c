/* Calls every export of the malloc family on one thread and on two more, then prints what
 * memtrim_get_stats reports, and checks the C API's argument contract (include/memtrim.h):
 * -1 for NULL or a size that cannot hold the size and version words, otherwise at most out_size
 * bytes filled and out->size saying how many.
 *
 * stdout: "threads_at_start=N" (the threads in /proc/self/task when main starts: the library's
 * worker thread shows here), "allocator: glibc|jemalloc" (the allocator seen serving the program,
 * backend.h), "api: ..." lines with the contract checks, then one line
 * "stats: rc=R size=S version=V live=L peak=P allocs=A frees=F live_during=D". live_during is
 * live_bytes read while the program held 1 MiB more than at the end. Exit 0 unless the program
 * itself failed (a NULL from a small allocation, a contract check). */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "probe.h"

static int failures;

static void need(void *p, const char *what) {
  if (!p) {
    printf("FAIL: %s returned NULL\n", what);
    failures++;
  }
}

static void *everything(void *arg) {
  for (int i = 0; i < 1000; i++) {
    void *p = malloc(i);
    need(p, "malloc");
    p = realloc(p, 2 * i + 1);
    need(p, "realloc");
    void *q = calloc(3, i);
    need(q, "calloc");
    q = reallocarray(q, 5, i + 1);
    need(q, "reallocarray");
    void *a = memalign(48, i);
    need(a, "memalign");
    void *b = NULL;
    if (posix_memalign(&b, 64, i) != 0) b = NULL;
    need(b, "posix_memalign");
    void *c = aligned_alloc(256, i);
    need(c, "aligned_alloc");
    void *d = valloc(i);
    need(d, "valloc");
    void *e = pvalloc(i);
    need(e, "pvalloc");
    void *big = malloc(200 * 1024);
    need(big, "malloc");
    free(p);
    cfree(q);
    free(a);
    cfree(b);
    free(c);
    free(d);
    free(e);
    if (realloc(big, 0) != NULL) printf("FAIL: realloc(p, 0) returned a block\n");
  }
  return arg;
}

static int count_threads(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("threads_at_start=%d\n", count_threads());
  printf("allocator: %s\n", serving_name(serving_allocator()));
  get_stats_fn get_stats = find_get_stats();
  trim_fn trim = find_trim();
  if (!get_stats || !trim) {
    printf("FAIL: memtrim_get_stats or memtrim_trim not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }

  /* The argument contract. */
  unsigned char buf[64];
  memset(buf, 0xee, sizeof buf);
  struct memtrim_stats *s = (struct memtrim_stats *)buf;
  printf("api: NULL -> %d\n", get_stats(NULL, sizeof *s));
  printf("api: out_size 0 -> %d\n", get_stats(s, 0));
  printf("api: out_size 7 -> %d, buffer %s\n", get_stats(s, 7), buf[0] == 0xee && buf[6] == 0xee ? "untouched" : "written");
  int rc = get_stats(s, 8);
  int rest = 1;
  for (size_t i = 8; i < sizeof buf; i++) rest &= buf[i] == 0xee;
  printf("api: out_size 8 -> %d, size %" PRIu32 ", version %" PRIu32 ", bytes past 8 %s\n", rc, s->size, s->version, rest ? "untouched" : "written");
  memset(buf, 0xee, sizeof buf);
  rc = get_stats(s, 16);
  rest = 1;
  for (size_t i = 16; i < sizeof buf; i++) rest &= buf[i] == 0xee;
  printf("api: out_size 16 -> %d, size %" PRIu32 ", bytes past 16 %s\n", rc, s->size, rest ? "untouched" : "written");
  memset(buf, 0xee, sizeof buf);
  rc = get_stats(s, sizeof buf);
  rest = 1;
  for (size_t i = sizeof *s; i < sizeof buf; i++) rest &= buf[i] == 0xee;
  printf("api: out_size %zu -> %d, size %" PRIu32 ", bytes past %zu %s\n", sizeof buf, rc, s->size, sizeof *s, rest ? "untouched" : "written");

  everything(NULL);
  pthread_t t1, t2;
  pthread_create(&t1, NULL, everything, NULL);
  pthread_create(&t2, NULL, everything, NULL);
  pthread_join(t1, NULL);
  pthread_join(t2, NULL);

  struct memtrim_stats during;
  void *held = malloc(1 << 20);
  need(held, "malloc");
  rc = get_stats(&during, sizeof during);
  free(held);
  size_t released = trim();
  struct memtrim_stats st;
  memset(&st, 0xee, sizeof st);
  rc |= get_stats(&st, sizeof st);
  printf("trim: returned %s\n", released == 0 ? "0" : "nonzero");
  printf("stats: rc=%d size=%" PRIu32 " version=%" PRIu32 " live=%" PRIu64 " peak=%" PRIu64 " allocs=%" PRIu64 " frees=%" PRIu64
         " live_during=%" PRIu64 "\n", rc, st.size, st.version, st.live_bytes, st.peak_live_bytes, st.allocs, st.frees, during.live_bytes);
  return failures ? 1 : 0;
}
