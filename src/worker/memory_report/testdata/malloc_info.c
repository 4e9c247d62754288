#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static void churn(void) {
  void *p[64];
  for (int i = 0; i < 64; i++) { p[i] = malloc(i < 16 ? 24 : (i < 40 ? 2000 : 9000)); ((char *volatile *)p)[i][0] = 1; }
  for (int i = 0; i < 64; i += 2) free(p[i]);
}
static void *worker(void *a) { churn(); (void)a; return NULL; }
int main(void) {
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  churn();
  char *volatile big = malloc(4 << 20);
  big[0] = 1;
  pthread_t t;
  pthread_create(&t, NULL, worker, NULL);
  pthread_join(t, NULL);
  malloc_info(0, stdout);
  free(big);
  return 0;
}
