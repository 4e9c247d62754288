/* A process under the library stays single-threaded for its first interval, so that what only a
 * single-threaded process may do (unshare(CLONE_NEWUSER), in a fork child too) still works, and
 * a process that execs early never had a thread; a long-lived one gets its worker all the same.
 *
 *   lazy_start fork-unshare MS   allocates for MS ms (the parent's worker starts), then forks;
 *                                the child calls unshare(CLONE_NEWUSER) at once. Prints
 *                                "unshare ok" or "unshare failed: ERROR"
 *   lazy_start exec-early MS     allocates for MS ms, prints "memtrim threads N" (threads named
 *                                memtrim in /proc/self/task), then execs /bin/true
 *   lazy_start vfork MS          sleeps MS ms without allocating, vforks a child that allocates
 *                                and exits, then allocates for MS ms and prints "memtrim threads N"
 *   lazy_start serve MS          forks at once; parent and child print "pid PID" and allocate
 *                                and free until MS ms have passed */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Allocates and frees for `ms` milliseconds, a few blocks each millisecond. */
static void churn(long ms) {
  uint64_t seed = 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
  for (long end = now_ms() + ms; now_ms() < end;) {
    for (int i = 0; i < 8; i++) {
      void *volatile p = malloc(16 + xorshift(&seed) % 4000);
      free(p);
    }
    usleep(1000);
  }
}

static int memtrim_threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char path[300], comm[32] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(comm, sizeof comm, f) && strncmp(comm, "memtrim", 7) == 0) n++;
    fclose(f);
  }
  if (d) closedir(d);
  return n;
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  long ms = atol(argv[2]);
  setvbuf(stdout, NULL, _IONBF, 0);
  if (strcmp(argv[1], "fork-unshare") == 0) {
    churn(ms);
    int fds[2];
    if (pipe(fds) != 0) return 2;
    pid_t pid = fork();
    if (pid == 0) {
      int r = unshare(CLONE_NEWUSER), e = errno;
      if (write(fds[1], r == 0 ? "ok" : strerror(e), r == 0 ? 2 : strlen(strerror(e))) < 0) _exit(2);
      _exit(r == 0 ? 0 : 1);
    }
    close(fds[1]);
    char buf[128] = "";
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    int status = 0;
    waitpid(pid, &status, 0);
    if (strcmp(buf, "ok") == 0) printf("unshare ok\n");
    else printf("unshare failed: %s\n", buf);
    return 0;
  }
  if (strcmp(argv[1], "exec-early") == 0) {
    churn(ms);
    printf("memtrim threads %d\n", memtrim_threads());
    execl("/bin/true", "true", (char *)NULL);
    return 2;
  }
  if (strcmp(argv[1], "vfork") == 0) {
    usleep(ms * 1000);
    pid_t pid = vfork();
    if (pid == 0) {
      void *volatile p = malloc(32);
      free(p);
      _exit(0);
    }
    waitpid(pid, NULL, 0);
    churn(ms);
    printf("memtrim threads %d\n", memtrim_threads());
    return 0;
  }
  if (strcmp(argv[1], "serve") == 0) {
    long end = now_ms() + ms;
    pid_t child = fork();
    printf("pid %d\n", (int)getpid());
    churn(end - now_ms());
    if (child > 0) waitpid(child, NULL, 0);
    return 0;
  }
  return 2;
}
