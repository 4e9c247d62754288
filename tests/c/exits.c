/* Every way out of a process, with blocks still live and, in some modes, threads still
 * allocating while the process ends (the library's exit report must neither hang nor crash).
 *
 * Usage: exits MODE, MODE one of: return, exit, _exit, abort, exit-busy (exit() while 4 threads
 * allocate), return-busy, exit-from-thread (a thread calls exit() while main waits in
 * pthread_join and other threads allocate). Prints "exits: MODE" on stdout before leaving. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int started;

static void *busy(void *arg) {
  uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  void *slots[32] = {0};
  __sync_fetch_and_add(&started, 1);
  for (;;) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int i = x % 32;
    free(slots[i]);
    slots[i] = (x >> 8) % 3 == 0 ? calloc(1, (x >> 16) % 70000) : malloc((x >> 16) % 4000);
  }
  return NULL;
}

static void *exiter(void *arg) {
  usleep(20000);
  printf("exits: exit-from-thread\n");
  fflush(stdout);
  exit(0);
  return arg;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: exits MODE\n");
    return 2;
  }
  alarm(20); /* a hang ends as SIGALRM */
  const char *mode = argv[1];
  /* blocks that stay live to the end, small and mmapped */
  void *keep[8];
  for (int i = 0; i < 8; i++) keep[i] = malloc(i % 2 ? 100 : 200 * 1024);
  (void)keep;
  int busy_mode = strstr(mode, "busy") != NULL || strcmp(mode, "exit-from-thread") == 0;
  if (busy_mode) {
    pthread_t th;
    for (long t = 0; t < 4; t++) pthread_create(&th, NULL, busy, (void *)(t + 1));
    while (started < 4) usleep(1000);
    usleep(20000);
  }
  if (strcmp(mode, "exit-from-thread") == 0) {
    pthread_t th;
    pthread_create(&th, NULL, exiter, NULL);
    pthread_join(th, NULL); /* never returns: the thread exits the process */
    return 3;
  }
  printf("exits: %s\n", mode);
  fflush(stdout);
  if (strcmp(mode, "return") == 0 || strcmp(mode, "return-busy") == 0) return 0;
  if (strcmp(mode, "exit") == 0 || strcmp(mode, "exit-busy") == 0) exit(0);
  if (strcmp(mode, "_exit") == 0) _exit(0);
  if (strcmp(mode, "abort") == 0) abort();
  fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}
