/* Live blocks in glibc's heap whose pages were never touched, beside resident free memory.
 *
 * A freed 16 MiB block (mmapped) raises glibc's mmap threshold past 12 MiB, as a Python or Ruby
 * worker's first big response does; 16 blocks of 12 MiB then come from the main heap through
 * calloc, which leaves fresh heap memory untouched (192 MiB live, none of it resident, as a
 * numpy.zeros or a read buffer used in part is). Then 100 MiB of 4 KiB blocks are filled and
 * 15 of every 16 freed: about 94 MiB of free memory, resident, which a release gives back.
 * Prints "built", then sleeps for argv[1] seconds (idle) and prints the resident bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SPARSE = 16, SPARSE_SIZE = 12 << 20, SMALL = 100 << 20, BLOCK = 4096, N = SMALL / BLOCK };

static char *small[N];

int main(int argc, char **argv) {
  void *volatile big = malloc(16 << 20); /* volatile: the compiler may drop a malloc-free pair */
  free(big);
  void *volatile sparse[SPARSE];
  for (int i = 0; i < SPARSE; i++) sparse[i] = calloc(1, SPARSE_SIZE);
  for (int i = 0; i < N; i++) memset(small[i] = malloc(BLOCK), 1, BLOCK);
  for (int i = 0; i < N; i++)
    if (i % 16) free(small[i]);
  printf("built\n");
  fflush(stdout);
  sleep(argc > 1 ? atoi(argv[1]) : 10);
  for (int i = 0; i < SPARSE; i++) free(sparse[i]);
  return 0;
}
