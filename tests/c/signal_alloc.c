/* Accounting stays exact when a signal handler allocates while its thread is counting.
 *
 * SIGALRM arrives every 20 us (setitimer) while the main thread mallocs and frees in a loop for
 * SECONDS (default 2); the handler mallocs a block it keeps, or frees the last one it kept, so
 * each signal moves the live bytes. A handler that lands between the load and the store of the
 * interrupted thread's counter update would lose its own update. At the end, with the timer
 * stopped, the library's live bytes and blocks must be exactly what the handler holds, and back
 * at their start once it is freed. Only glibc's tcache serves the main loop and the handler's
 * blocks come from its own size classes, so glibc itself never takes a lock a handler could
 * wait on. Exit 0 when both checks hold. */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>

#include "probe.h"

enum { MAX_HELD = 4096 };
static void *held[MAX_HELD];
static volatile int nheld;
static volatile long signals;

static void on_alarm(int sig) {
  (void)sig;
  long k = signals++;
  if (nheld < MAX_HELD && k % 3 != 2) {
    void *p = malloc(200 + (size_t)(k % 64) * 16);
    if (p) held[nheld++] = p;
  } else if (nheld > 0) {
    free(held[--nheld]);
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2;
  get_stats_fn get_stats = find_get_stats();
  if (!get_stats) {
    printf("FAIL memtrim_get_stats not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }
  int failures = 0;
  printf("SIGALRM every 20 us for %.1f s\n", seconds); /* stdout's buffer, allocated before the counts start */
  free(malloc(48));
  struct memtrim_stats s0 = read_stats(get_stats, "", &failures);
  struct sigaction sa = {0};
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 20}, {0, 20}};
  setitimer(ITIMER_REAL, &it, NULL);
  double end = now_s() + seconds;
  long loops = 0;
  while (now_s() < end) {
    for (int i = 0; i < 1000; i++) {
      void *volatile p = malloc(48);
      free(p);
    }
    loops++;
  }
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGALRM);
  sigprocmask(SIG_BLOCK, &block, NULL);
  uint64_t bytes = 0;
  for (int i = 0; i < nheld; i++) bytes += malloc_usable_size(held[i]);
  struct memtrim_stats s1 = read_stats(get_stats, "", &failures);
  printf("%ld signals during %ld thousand malloc+free pairs; the handler holds %d blocks\n", signals, loops, nheld);
  failures += !check_live("", "with the handler's blocks held", &s0, &s1, bytes, nheld);
  for (int i = 0; i < nheld; i++) free(held[i]);
  struct memtrim_stats s2 = read_stats(get_stats, "", &failures);
  failures += !check_live("", "after they were freed", &s0, &s2, 0, 0);
  return failures ? 1 : 0;
}
