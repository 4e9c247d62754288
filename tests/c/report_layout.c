/* A known heap layout for tests/report.rs, built once, then held until stdin says so.
 *
 *   - main heap (main thread): MAIN_N blocks of MAIN_SIZE bytes, all written, then all but one
 *     in MAIN_KEEP freed: runs of MAIN_KEEP - 1 free blocks between live ones (a fragmented
 *     heap whose free runs each hold whole pages);
 *   - THREADS threads, each with its own arena (they start one after another and stay alive,
 *     so glibc gives each a new arena): thread i allocates (i + 1) * THREAD_N blocks of
 *     THREAD_SIZE bytes, written, and frees all but one in THREAD_KEEP;
 *   - two large blocks (32 MiB and 16 MiB, above the mmap threshold: glibc mmaps them), written.
 *
 * Then prints what it knows, one `key value...` per line, and `ready PID`:
 *   main LIVE_BLOCKS LIVE_USABLE FREED_USABLE ADDR     (usable sizes from malloc_usable_size;
 *                                                        ADDR: a live block of the main heap)
 *   thread I LIVE_BLOCKS LIVE_USABLE FREED_USABLE ADDR (ADDR: a live block of its arena)
 *   big ADDR USABLE                                    (each large block)
 * and waits: a line `exit` (or end of input) ends it.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAIN_N 3072
#define MAIN_SIZE 16000
#define MAIN_KEEP 8
#define THREADS 3
#define THREAD_N 200
#define THREAD_SIZE 20000
#define THREAD_KEEP 4

struct facts {
    size_t live_blocks, live, freed;
    void *addr;
};

static struct facts per_thread[THREADS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int built, done;

static void fragment(struct facts *f, size_t n, size_t size, size_t keep) {
    void **v = malloc(n * sizeof *v);
    if (!v) abort();
    for (size_t i = 0; i < n; i++) {
        v[i] = malloc(size);
        if (!v[i]) abort();
        memset(v[i], 0x5a, size);
    }
    for (size_t i = 0; i < n; i++) {
        size_t u = malloc_usable_size(v[i]);
        if (i % keep == 0) {
            f->live_blocks++;
            f->live += u;
            if (!f->addr) f->addr = v[i];
        } else {
            f->freed += u;
            free(v[i]);
        }
    }
    free(v);
}

static void *thread_main(void *arg) {
    long i = (long)arg;
    fragment(&per_thread[i], (size_t)(i + 1) * THREAD_N, THREAD_SIZE, THREAD_KEEP);
    pthread_mutex_lock(&mu);
    built++;
    pthread_cond_broadcast(&cv);
    while (!done) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(void) {
    struct facts main_heap = {0};
    fragment(&main_heap, MAIN_N, MAIN_SIZE, MAIN_KEEP);

    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) {
        if (pthread_create(&t[i], NULL, thread_main, (void *)i) != 0) abort();
        /* One at a time: each thread's first malloc makes its arena before the next starts. */
        pthread_mutex_lock(&mu);
        while (built < i + 1) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }

    size_t big_sizes[2] = {32u << 20, 16u << 20};
    void *big[2];
    for (int i = 0; i < 2; i++) {
        big[i] = malloc(big_sizes[i]);
        if (!big[i]) abort();
        memset(big[i], 0x33, big_sizes[i]);
    }

    printf("main %zu %zu %zu %lu\n", main_heap.live_blocks, main_heap.live, main_heap.freed, (unsigned long)main_heap.addr);
    for (int i = 0; i < THREADS; i++)
        printf("thread %d %zu %zu %zu %lu\n", i, per_thread[i].live_blocks, per_thread[i].live, per_thread[i].freed,
               (unsigned long)per_thread[i].addr);
    for (int i = 0; i < 2; i++) printf("big %lu %zu\n", (unsigned long)big[i], malloc_usable_size(big[i]));
    printf("ready %d\n", (int)getpid());
    fflush(stdout);

    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "exit", 4) == 0) break;
    }
    pthread_mutex_lock(&mu);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    return 0;
}
