/* A stand-in for sleep(1) that wakes as a server's event loop does: every 100 ms it allocates
 * and frees a block, so that the library's worker, which starts on the first allocation after
 * the process's first interval, starts in it as it would in a server idling between requests.
 *
 * Usage: sleep SECONDS */
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
  long steps = (argc > 1 ? atol(argv[1]) : 1) * 10;
  struct timespec step = {0, 100 * 1000 * 1000};
  for (long i = 0; i < steps; i++) {
    void *volatile p = malloc(64);
    free(p);
    nanosleep(&step, NULL);
  }
  return 0;
}
