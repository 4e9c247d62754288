/* A signal handler that allocates and frees while its thread may hold the side pool's lock: one
 * thread releases in a loop (memtrim_trim, or malloc_trim without the library) over a fragmented
 * heap, so that the main thread's allocations are diverted to the side pool most of the time;
 * SIGALRM every 20 us, its handler allocating or freeing a block. Without care the handler spins
 * forever on the lock its own thread holds. Exit 0 with "done" after SECONDS.
 *
 * Usage: signal_release SECONDS */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "probe.h"

static void *held[4096];
static int nheld;
static atomic_int stop;

static void on_alarm(int sig) {
  (void)sig;
  if (nheld < 4096 && (nheld == 0 || (nheld & 1)))
    held[nheld++] = malloc(200);
  else if (nheld)
    free(held[--nheld]);
}

static void *releaser(void *arg) {
  (void)arg;
  trim_fn trim = find_trim();
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  while (!atomic_load(&stop)) {
    if (trim)
      trim();
    else
      malloc_trim(0);
  }
  return NULL;
}

int main(int argc, char **argv) {
  enum { N = 32 * 1024 };
  static void *blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = malloc(1000);
  for (int i = 0; i < N; i++)
    if (i % 16) free(blocks[i]);
  pthread_t t;
  pthread_create(&t, NULL, releaser, NULL);
  signal(SIGALRM, on_alarm);
  struct itimerval every = {{0, 20}, {0, 20}};
  setitimer(ITIMER_REAL, &every, NULL);
  time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 2);
  for (long n = 0; time(NULL) < end; n++) {
    void *volatile p = malloc(24 + (n & 7) * 16);
    free(p);
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  atomic_store(&stop, 1);
  pthread_join(t, NULL);
  printf("done\n");
  return 0;
}
