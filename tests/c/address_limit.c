/* A release must not take address space the host needs: under RLIMIT_AS (ulimit -v, or set by
 * the program after it started, as uwsgi's limit-as does in a worker) a large malloc after a
 * release succeeds exactly as it does on plain glibc.
 *
 * Fragments a 64 MiB heap of 1 KiB blocks (15 of 16 freed), sets RLIMIT_AS to 2,000,000 KiB
 * (`first`: before the first release; `between`: after one release and before a second), asks
 * for a release (memtrim_trim() when the library is preloaded, malloc_trim(0) otherwise), then
 * mallocs 1200 MiB. Prints what happened; exits 0 when the malloc succeeded. */
#define _GNU_SOURCE
#include <malloc.h>
#include <string.h>
#include <sys/resource.h>

#include "probe.h"

static size_t release(trim_fn trim) {
  if (trim) return trim();
  malloc_trim(0);
  return 0;
}

int main(int argc, char **argv) {
  int between = argc > 1 && strcmp(argv[1], "between") == 0;
  enum { N = 64 * 1024 };
  static void *blocks[N];
  for (int i = 0; i < N; i++) blocks[i] = malloc(1000);
  for (int i = 0; i < N; i++)
    if (i % 16) free(blocks[i]);
  trim_fn trim = find_trim();
  if (between) release(trim);
  struct rlimit lim = {2000000ul * 1024, 2000000ul * 1024};
  if (setrlimit(RLIMIT_AS, &lim) != 0) {
    perror("setrlimit");
    return 2;
  }
  size_t released = release(trim);
  void *big = malloc(1200ul << 20);
  printf("%s release under RLIMIT_AS 2000000 KiB (%s, %zu bytes): malloc(1200 MiB) %s\n", between ? "second" : "first",
         trim ? "memtrim_trim" : "malloc_trim", released, big ? "succeeded" : "returned NULL");
  free(big);
  return big ? 0 : 1;
}
