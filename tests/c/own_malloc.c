/* A program with its own malloc, free, calloc and realloc (a bump allocator over one mapping)
 * but not reallocarray, as some programs and language runtimes have: glibc's reallocarray calls
 * the program's realloc, so under the library it must too. Exits 0 when every reallocarray
 * returned the program's own memory with the contents kept. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ARENA (256ul << 20)
#define HDR 16

static char *arena, *top;

static void *bump(size_t n) {
  if (!arena) {
    arena = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED) abort();
    top = arena;
  }
  n = (n + 15) & ~(size_t)15;
  if (n > ARENA - HDR || (size_t)(arena + ARENA - top) < n + HDR) {
    errno = ENOMEM;
    return NULL;
  }
  *(size_t *)top = n;
  void *p = top + HDR;
  top += n + HDR;
  return p;
}

static int mine(void *p) { return (char *)p >= arena && (char *)p < arena + ARENA; }

void *malloc(size_t n) { return bump(n); }

void free(void *p) { (void)p; }

void *calloc(size_t n, size_t m) {
  size_t b;
  if (__builtin_mul_overflow(n, m, &b)) {
    errno = ENOMEM;
    return NULL;
  }
  return bump(b); /* fresh mapping memory is zero */
}

void *realloc(void *p, size_t n) {
  if (p && !mine(p)) {
    static const char msg[] = "own_malloc: realloc of a block it did not allocate\n";
    fwrite(msg, 1, sizeof msg - 1, stderr);
    abort();
  }
  void *q = bump(n);
  if (q && p) {
    size_t old = *(size_t *)((char *)p - HDR);
    memcpy(q, p, old < n ? old : n);
  }
  return q;
}

int main(void) {
  int *a = reallocarray(NULL, 10, sizeof *a);
  if (!a || !mine(a)) {
    printf("reallocarray(NULL, 10, 4) gave %p, not the program's memory\n", (void *)a);
    return 1;
  }
  for (int i = 0; i < 10; i++) a[i] = i;
  int *b = reallocarray(a, 1000, sizeof *b);
  if (!b || !mine(b)) {
    printf("reallocarray(p, 1000, 4) gave %p, not the program's memory\n", (void *)b);
    return 1;
  }
  for (int i = 0; i < 10; i++)
    if (b[i] != i) {
      printf("reallocarray lost the contents at %d\n", i);
      return 1;
    }
  errno = 0;
  if (reallocarray(b, SIZE_MAX / 2, 4) != NULL || errno != ENOMEM) {
    printf("reallocarray overflow: no ENOMEM\n");
    return 1;
  }
  free(b);
  printf("ok reallocarray used the program's realloc\n");
  return 0;
}
