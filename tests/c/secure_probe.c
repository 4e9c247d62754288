/* Holds 1 MiB and prints what the library counts, and whether it runs in secure-execution mode
 * (AT_SECURE: a setuid program run by another user): "secure=S rc=R live=L". Linked against
 * libmemtrim.so (-lmemtrim), because a setuid program is given no LD_PRELOAD path. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "memtrim.h"

int main(void) {
  size_t n = 1 << 20;
  char *p = malloc(n);
  if (!p)
    return 1;
  memset(p, 1, n);
  struct memtrim_stats s;
  memset(&s, 0, sizeof s);
  int rc = memtrim_get_stats(&s, sizeof s);
  printf("secure=%lu rc=%d live=%" PRIu64 "\n", getauxval(AT_SECURE), rc, s.live_bytes);
  free(p);
  return 0;
}
