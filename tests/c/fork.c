/* fork from a multi-threaded process while its threads allocate (gunicorn and puma fork their
 * workers from a parent with threads; docs/DESIGN.md, trap 7).
 *
 * The parent runs 4 threads that allocate, reallocate and free without pause, and forks 3
 * children while they do. Each child reads the counters at its start, runs 4 threads of its own
 * that allocate and free (a checkpoint while they hold blocks, then all freed on another thread),
 * forks a grandchild from the middle of that, and checks that live bytes and live blocks follow
 * exactly what it did. The parent then stops its threads and checks the same for itself.
 *
 * Exit 0 when every process's checks hold. Every process prints "[who] ok ..." or "[who] FAIL". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"

#define NTHREADS 4
#define SLOTS 128

static get_stats_fn get_stats;
static pthread_attr_t attr;
static char who[32] = "parent";
static int failures;

struct worker {
  pthread_t th;
  int id;
  uint64_t rng;
  long ops;          /* operations to run; 0: until stop is set */
  volatile long done;
  void *p[SLOTS];
  size_t usable[SLOTS];
  uint64_t held_bytes;
  int64_t held_blocks;
  struct worker *peers; /* for the cross-thread free */
};

static volatile int stop;
static pthread_barrier_t barrier;

static size_t rand_size(uint64_t *s) {
  uint64_t r = xorshift(s);
  unsigned k = r % 100;
  r >>= 8;
  if (k < 70) return r % 256;
  if (k < 97) return r % 16384;
  return 128 * 1024 + r % (128 * 1024);
}

static void step(struct worker *w) {
  int i = xorshift(&w->rng) % SLOTS;
  uint64_t r = xorshift(&w->rng);
  if (w->p[i]) {
    w->held_bytes -= w->usable[i];
    w->held_blocks--;
    if (r % 4 == 0) {
      void *q = realloc(w->p[i], 1 + rand_size(&w->rng)); /* not 0: that frees */
      if (!q) abort();
      w->p[i] = q;
    } else {
      free(w->p[i]);
      w->p[i] = NULL;
      return;
    }
  } else {
    size_t n = rand_size(&w->rng);
    switch (r % 4) {
      case 0: w->p[i] = malloc(n); break;
      case 1: w->p[i] = calloc(1, n); break;
      case 2: w->p[i] = memalign(64, n); break;
      default: w->p[i] = realloc(NULL, n); break;
    }
    if (!w->p[i]) abort();
  }
  w->usable[i] = malloc_usable_size(w->p[i]);
  memset(w->p[i], 1, w->usable[i] < 64 ? w->usable[i] : 64);
  w->held_bytes += w->usable[i];
  w->held_blocks++;
}

static void *churn_until_stop(void *arg) {
  struct worker *w = arg;
  while (!stop) {
    step(w);
    w->done++;
  }
  return NULL;
}

/* Runs its operations, parks at the barrier for a checkpoint, then frees the blocks of the next
 * worker (another thread's allocations). */
static void *churn_then_free_peer(void *arg) {
  struct worker *w = arg;
  for (long k = 0; k < w->ops; k++) {
    step(w);
    w->done++;
  }
  pthread_barrier_wait(&barrier);
  pthread_barrier_wait(&barrier);
  struct worker *peer = &w->peers[(w->id + 1) % NTHREADS];
  for (int i = 0; i < SLOTS; i++)
    if (peer->p[i]) {
      free(peer->p[i]);
      peer->p[i] = NULL;
    }
  return NULL;
}

/* "[who] ", before each line this process prints. */
static const char *tag(void) {
  static char t[sizeof who + 3];
  snprintf(t, sizeof t, "[%s] ", who);
  return t;
}

static struct memtrim_stats stats(void) { return read_stats(get_stats, tag(), &failures); }

static void check(const char *where, const struct memtrim_stats *s0, uint64_t bytes, int64_t blocks) {
  struct memtrim_stats s = stats();
  if (!check_live(tag(), where, s0, &s, bytes, blocks)) failures++;
}

static int wait_child(pid_t pid, const char *name) {
  int st;
  if (waitpid(pid, &st, 0) != pid) {
    printf("[%s] FAIL: waitpid(%s): %s\n", who, name, strerror(errno));
    return 1;
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
  if (WIFSIGNALED(st))
    printf("[%s] FAIL: %s killed by signal %d%s\n", who, name, WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (hung)" : "");
  else
    printf("[%s] FAIL: %s exited with %d\n", who, name, WEXITSTATUS(st));
  return 1;
}

static void child_main(int depth) __attribute__((noreturn));

/* In a freshly forked process: threads of its own that allocate and free, with checks; at
 * depth 1 a grandchild is forked while those threads run. */
static void child_main(int depth) {
  alarm(20); /* a hang shows as SIGALRM */
  static struct worker w[NTHREADS];
  memset(w, 0, sizeof w);
  struct memtrim_stats c0 = stats();
  pthread_barrier_init(&barrier, NULL, NTHREADS + 1);
  for (int t = 0; t < NTHREADS; t++) {
    w[t].id = t;
    w[t].rng = 0xabcdef12345ull * (t + 7) ^ (uint64_t)getpid();
    w[t].ops = 50000;
    w[t].peers = w;
    if (pthread_create(&w[t].th, &attr, churn_then_free_peer, &w[t]) != 0) {
      printf("[%s] FAIL: pthread_create\n", who);
      exit(1);
    }
  }
  pid_t grandchild = -1;
  if (depth == 1) {
    while (w[0].done < 10000) sched_yield();
    fflush(stdout);
    grandchild = fork();
    if (grandchild == 0) {
      snprintf(who + strlen(who), sizeof who - strlen(who), "/grandchild");
      child_main(2);
    }
    if (grandchild < 0) {
      printf("[%s] FAIL: fork: %s\n", who, strerror(errno));
      failures++;
    }
  }
  pthread_barrier_wait(&barrier);
  uint64_t bytes = 0;
  int64_t blocks = 0;
  for (int t = 0; t < NTHREADS; t++) bytes += w[t].held_bytes, blocks += w[t].held_blocks;
  check("threads parked holding blocks", &c0, bytes, blocks);
  pthread_barrier_wait(&barrier);
  for (int t = 0; t < NTHREADS; t++) pthread_join(w[t].th, NULL);
  check("after join, every block freed on another thread", &c0, 0, 0);
  if (grandchild > 0) failures += wait_child(grandchild, "grandchild");
  fflush(stdout);
  exit(failures ? 1 : 0);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("[parent] fork test: %d threads, 3 children, each with a grandchild\n", NTHREADS);
  get_stats = find_get_stats();
  if (!get_stats) {
    printf("[parent] FAIL: memtrim_get_stats not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }
  /* Fill glibc's stack cache first (probe.h): only reused stacks keep the counts comparable. */
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  fill_stack_cache(&attr, NTHREADS);

  static struct worker w[NTHREADS];
  struct memtrim_stats s0 = stats();
  for (int t = 0; t < NTHREADS; t++) {
    w[t].id = t;
    w[t].rng = 0x9e3779b97f4a7c15ull * (t + 1);
    if (pthread_create(&w[t].th, &attr, churn_until_stop, &w[t]) != 0) {
      printf("[parent] FAIL: pthread_create\n");
      return 1;
    }
  }
  pid_t children[3];
  for (int c = 0; c < 3; c++) {
    long target = w[0].done + 30000;
    while (w[0].done < target) sched_yield(); /* the threads are busy allocating */
    fflush(stdout);
    children[c] = fork();
    if (children[c] == 0) {
      snprintf(who, sizeof who, "child %d", c + 1);
      child_main(1);
    }
    if (children[c] < 0) {
      printf("[parent] FAIL: fork: %s\n", strerror(errno));
      return 1;
    }
  }
  stop = 1; /* the children need the CPUs more than the parent's threads now */
  uint64_t bytes = 0;
  int64_t blocks = 0;
  for (int t = 0; t < NTHREADS; t++) pthread_join(w[t].th, NULL);
  for (int c = 0; c < 3; c++) {
    char name[16];
    snprintf(name, sizeof name, "child %d", c + 1);
    failures += wait_child(children[c], name);
  }
  for (int t = 0; t < NTHREADS; t++) bytes += w[t].held_bytes, blocks += w[t].held_blocks;
  check("after join, threads holding blocks", &s0, bytes, blocks);
  for (int t = 0; t < NTHREADS; t++)
    for (int i = 0; i < SLOTS; i++) free(w[t].p[i]);
  check("after every block was freed", &s0, 0, 0);
  long ops = 0;
  for (int t = 0; t < NTHREADS; t++) ops += w[t].done;
  printf("[parent] %s (%ld operations in the parent's threads)\n", failures ? "FAILED" : "all processes ok", ops);
  return failures ? 1 : 0;
}
