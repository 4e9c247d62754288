/* A module with thread-local storage, for dlopen_tls.c. big_block is far larger than glibc's
 * static TLS surplus, so its TLS is dynamic: the first access from each thread goes through
 * __tls_get_addr, which allocates the block with malloc (the interposed one), and a thread whose
 * DTV is too short for the new module gets a larger DTV from malloc/realloc as well. */
#include <stdlib.h>
#include <string.h>

__thread int initialised = 42;        /* .tdata: copied into each thread's block */
__thread long counter;                /* .tbss */
__thread char big_block[1 << 20];     /* 1 MiB: dynamic TLS */
__thread char *owned;                 /* a heap block owned through TLS */

static char *ctor_block;

__attribute__((constructor)) static void module_init(void) {
  ctor_block = malloc(4096); /* the loader runs this with its lock held */
  memset(ctor_block, 7, 4096);
}

__attribute__((destructor)) static void module_fini(void) {
  free(ctor_block);
}

/* Touches every TLS variable of the calling thread; returns 0 when each holds what this thread
 * stored before (or its initial value on the first call). */
int tls_touch(long n) {
  int bad = initialised != 42;
  if (counter > 0 && (big_block[0] != 1 || big_block[sizeof big_block - 1] != 2)) bad = 1;
  if (owned && owned[0] != 3) bad = 1;
  counter += n;
  big_block[0] = 1;
  big_block[sizeof big_block - 1] = 2;
  big_block[n % sizeof big_block] = 1;
  big_block[0] = 1;
  big_block[sizeof big_block - 1] = 2;
  free(owned);
  owned = malloc(16 + n % 1000);
  owned[0] = 3;
  return bad;
}

/* Frees the calling thread's heap block (call before the thread ends). */
void tls_release(void) {
  free(owned);
  owned = NULL;
}
