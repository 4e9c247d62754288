/* A heap whose shape changes while its live bytes stay put.
 *
 * A million 48-byte blocks, every other one freed: about 60 MiB of free chunks that glibc's
 * mallinfo2 walks one by one (milliseconds a call). Prints "built"; then, on a line "grow",
 * 48 MiB of 64 KiB blocks are filled, a small block is kept after them and they are freed:
 * the heap holds 48 MiB more, resident and free, and the live bytes are where they were.
 * Prints "grown" and waits for "exit" or the end of its input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SMALL = 1 << 20, BIG = 768, BIG_SIZE = 64 << 10 };

static void *small[SMALL];
static void *big[BIG];

int main(void) {
  for (int i = 0; i < SMALL; i++) small[i] = malloc(48);
  for (int i = 0; i < SMALL; i += 2) free(small[i]);
  printf("built\n");
  fflush(stdout);
  char line[64];
  while (fgets(line, sizeof line, stdin) && strcmp(line, "exit\n") != 0) {
    if (strcmp(line, "grow\n") == 0) {
      for (int i = 0; i < BIG; i++) memset(big[i] = malloc(BIG_SIZE), 1, BIG_SIZE);
      /* keeps the freed blocks off the top, so they stay in the heap (too big for a freed hole) */
      void *volatile pin = malloc(4096);
      (void)pin;
      for (int i = 0; i < BIG; i++) free(big[i]);
      printf("grown\n");
      fflush(stdout);
    }
  }
  return 0;
}
