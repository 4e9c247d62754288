/* Ring microbenchmark for the allocation hot path: each thread keeps a ring of blocks and, per
 * step, frees one and allocates a replacement of a pseudo-random size in [16, 4000] bytes.
 * One step is one malloc+free pair.
 *
 *   ring THREADS STEPS_PER_THREAD
 *
 * The measured loop is the function ring_loop (callgrind --toggle-collect=ring_loop). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RING 1024

static long steps;

__attribute__((noinline)) static uintptr_t ring_loop(void **ring, uint64_t seed) {
  uintptr_t sum = 0;
  for (long i = 0; i < steps; i++) {
    seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
    unsigned slot = seed % RING;
    free(ring[slot]);
    ring[slot] = malloc(16 + (seed >> 32) % 3985);
    sum += (uintptr_t)ring[slot] & 0xff;
  }
  return sum;
}

static void *run(void *arg) {
  void *ring[RING];
  for (int i = 0; i < RING; i++) ring[i] = malloc(16 + (i * 37) % 3985);
  uintptr_t r = ring_loop(ring, 0x9E3779B97F4A7C15ull ^ (uintptr_t)arg);
  for (int i = 0; i < RING; i++) free(ring[i]);
  return (void *)r;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  steps = argc > 2 ? atol(argv[2]) : 1000000;
  pthread_t t[64];
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], 0, run, (void *)(uintptr_t)(i + 1));
  uintptr_t acc = 0;
  for (int i = 0; i < threads && i < 64; i++) { void *r; pthread_join(t[i], &r); acc += (uintptr_t)r; }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / ((double)steps);
  printf("%.2f ns/pair/thread (checksum %lu)\n", ns, (unsigned long)acc & 0xff);
  return 0;
}
