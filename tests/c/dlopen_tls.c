/* dlopen of a module with thread-local storage while threads allocate (docs/DESIGN.md, trap 3: Python
 * dlopens extension modules all day). After the dlopen every thread touches the module's TLS,
 * whose first access allocates the thread's dynamic TLS block through malloc from inside
 * __tls_get_addr; a shim that reaches its own TLS through __tls_get_addr recurses there.
 *
 * A single module never outgrows glibc's DTV surplus (14 slots), so give several copies of the
 * module (distinct files): loading more than 14 modules with TLS makes every older thread's DTV
 * grow, with malloc, from inside __tls_get_addr.
 *
 * Usage: dlopen_tls MODULE.so [MODULE.so...]. Three rounds of: 4 threads allocating without
 * pause, dlopen of every MODULE while they do, every thread then touching the TLS of every
 * module, threads started after the dlopens touching it too, a concurrent dlopen/dlclose loop,
 * then dlclose. Exit 0 when everything ran and every TLS value read back what was stored. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe.h"

#define NTHREADS 4
#define LATE_THREADS 8
#define MAX_MODULES 64

typedef int (*touch_fn)(long);
typedef void (*release_fn)(void);

static char **modules;
static int nmodules;
static touch_fn touch[MAX_MODULES];
static release_fn release[MAX_MODULES];
static volatile int loaded; /* set once every module is loaded and looked up */
static volatile int stop;
static volatile long touched_total, bad_total;

static void *worker(void *arg) {
  uint64_t rng = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  void *slots[64] = {0};
  long touched = 0, bad = 0;
  int touching = 0;
  while (!stop || !touching) { /* the modules are loaded before stop is set */
    int i = xorshift(&rng) % 64;
    free(slots[i]);
    slots[i] = malloc(xorshift(&rng) % 2048);
    if (loaded) {
      touching = 1;
      for (int m = 0; m < nmodules; m++) bad += touch[m]((long)(xorshift(&rng) % 100000));
      touched++;
    }
  }
  for (int m = 0; m < nmodules; m++) release[m]();
  for (int i = 0; i < 64; i++) free(slots[i]);
  __sync_fetch_and_add(&touched_total, touched);
  __sync_fetch_and_add(&bad_total, bad);
  return NULL;
}

/* A thread started after the dlopen: its DTV and TLS blocks come from the start. */
static void *late(void *arg) {
  long bad = 0;
  for (long k = 0; k < 1000; k++) {
    void *p = malloc(k % 500);
    for (int m = 0; m < nmodules; m++) bad += touch[m](k);
    free(p);
  }
  for (int m = 0; m < nmodules; m++) release[m]();
  __sync_fetch_and_add(&touched_total, 1000);
  __sync_fetch_and_add(&bad_total, bad);
  return arg;
}

/* dlopen/dlclose of the module (already loaded: reference counting and lookups only), racing
 * with the allocating threads. */
static void *opener(void *arg) {
  for (int k = 0; k < 200; k++) {
    void *h = dlopen(modules[k % nmodules], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      fprintf(stderr, "FAIL: dlopen in thread: %s\n", dlerror());
      exit(1);
    }
    if (!dlsym(h, "tls_touch")) exit(1);
    dlclose(h);
  }
  return arg;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > MAX_MODULES + 1) {
    fprintf(stderr, "usage: dlopen_tls MODULE.so [MODULE.so...]\n");
    return 2;
  }
  alarm(25); /* a hang ends as SIGALRM */
  modules = argv + 1;
  nmodules = argc - 1;
  void *handles[MAX_MODULES];
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int round = 1; round <= 3; round++) {
    pthread_t th[NTHREADS], late_th[LATE_THREADS], op;
    stop = 0;
    loaded = 0;
    for (long t = 0; t < NTHREADS; t++) pthread_create(&th[t], NULL, worker, (void *)(t + 1 + 10 * round));
    usleep(20000); /* the threads are allocating */
    for (int m = 0; m < nmodules; m++) {
      handles[m] = dlopen(modules[m], RTLD_NOW | RTLD_LOCAL);
      if (!handles[m]) {
        printf("FAIL: dlopen(%s): %s\n", modules[m], dlerror());
        return 1;
      }
      release[m] = (release_fn)dlsym(handles[m], "tls_release");
      touch[m] = (touch_fn)dlsym(handles[m], "tls_touch");
      if (!touch[m] || !release[m]) {
        printf("FAIL: dlsym: %s\n", dlerror());
        return 1;
      }
    }
    __sync_synchronize();
    loaded = 1;
    pthread_create(&op, NULL, opener, NULL);
    for (int t = 0; t < LATE_THREADS; t++) pthread_create(&late_th[t], NULL, late, NULL);
    usleep(50000); /* the early threads touch the TLS and keep allocating */
    stop = 1;
    for (int t = 0; t < NTHREADS; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < LATE_THREADS; t++) pthread_join(late_th[t], NULL);
    pthread_join(op, NULL);
    loaded = 0;
    for (int m = 0; m < nmodules; m++)
      if (dlclose(handles[m]) != 0) {
        printf("FAIL: dlclose: %s\n", dlerror());
        return 1;
      }
    printf("round %d: %d modules loaded, touched and closed\n", round, nmodules);
  }
  /* The library still answers, and its counts are plausible. */
  get_stats_fn get_stats = find_get_stats();
  if (get_stats) {
    struct memtrim_stats s;
    if (get_stats(&s, sizeof s) != 0 || s.allocs < s.frees || s.allocs == 0) {
      printf("FAIL: stats after the rounds: allocs %" PRIu64 " frees %" PRIu64 "\n", s.allocs, s.frees);
      return 1;
    }
    printf("stats: live %" PRIu64 " B in %" PRIu64 " blocks\n", s.live_bytes, s.allocs - s.frees);
  } else {
    printf("memtrim_get_stats not found (library not preloaded)\n");
  }
  printf("dlopen_tls: %ld TLS touches, %ld bad values\n", touched_total, bad_total);
  return bad_total == 0 && touched_total > 0 ? 0 : 1;
}
