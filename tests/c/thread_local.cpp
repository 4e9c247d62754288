// C++ thread_local objects whose constructors and destructors allocate (std::string,
// std::vector), in many short threads. Every thread's thread_local destructors run at its exit,
// after the library's own thread-exit hook may have run, and glibc registers each of them with a
// calloc'd node (__cxa_thread_atexit_impl) that it frees after running it. After all threads are
// joined, live bytes and live blocks must be back exactly where they started. A pthread key
// destructor of the host frees and allocates after the library's own thread-exit hook has run.
//
// Usage: thread_local [ROUNDS [--no-warmup]]. Each round starts 4 threads and joins them.
//
// glibc keeps the stacks of joined threads in a cache (40 MiB by default), each with the DTV that
// pthread_create allocated for it with calloc, through the interposed calloc; the DTV lives as
// long as the cached stack. A run therefore first starts and joins as many threads as it later
// runs at once, so that the counted rounds only reuse cached stacks; --no-warmup shows the
// difference (one DTV per new stack stays live).
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "probe.h"

static std::atomic<long> constructed{0}, destructed{0}, dtor_bytes{0};

struct Tracked {
  std::string name;
  std::vector<int> numbers;
  std::vector<std::string> words;

  Tracked() : name(200, 'n'), numbers(1000, 7) {
    for (int i = 0; i < 10; i++) words.push_back(std::string(50 + i * 30, char('a' + i)));
    constructed++;
  }

  ~Tracked() {
    // Allocate (and free) in the destructor too.
    std::string joined;
    for (auto &w : words) joined += w;
    std::vector<char> copy(joined.begin(), joined.end());
    dtor_bytes += (long)copy.size();
    destructed++;
  }
};

// A pthread key created by the host after the library's own thread-exit key: its destructor
// runs after the library's, frees a block the thread allocated earlier and allocates again.
static pthread_key_t host_key;
static void host_key_dtor(void *v) {
  free(v);
  std::string s(500, 'd');
  dtor_bytes += (long)s.size();
}

thread_local Tracked tracked;
thread_local std::vector<std::string> cache;
thread_local std::string last = std::string(300, 'l');

static void body(int n) {
  pthread_setspecific(host_key, malloc(100 + n % 300));
  tracked.words.push_back(std::to_string(n) + std::string(100, 'x'));  // grow a TLS object
  for (int i = 0; i < 50; i++) cache.push_back(std::string(20 + (n + i) % 200, 'c'));
  last += std::to_string(n);
  std::vector<std::string> local(20, std::string(64, 'q'));  // plain heap traffic
  void *p = malloc(1000 + n % 5000);
  free(p);
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 500;
  bool warmup = !(argc > 2 && strcmp(argv[2], "--no-warmup") == 0);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  printf("thread_local: %d rounds of 4 threads%s\n", rounds, warmup ? "" : ", no warm-up");
  get_stats_fn get_stats = find_get_stats();
  if (!get_stats) {
    printf("FAIL: memtrim_get_stats not found (is libmemtrim.so preloaded?)\n");
    return 1;
  }
  pthread_key_create(&host_key, host_key_dtor);
  // Fill glibc's stack cache with as many stacks as the rounds use at once.
  if (warmup) {
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++) ts.emplace_back([] { free(malloc(10)); });
    for (auto &t : ts) t.join();
  }
  struct memtrim_stats s0, s;
  if (get_stats(&s0, sizeof s0) != 0) return 1;
  for (int r = 0; r < rounds; r++) {
    std::vector<std::thread> ts;
    ts.reserve(4);
    for (int t = 0; t < 4; t++) ts.emplace_back(body, r * 4 + t);
    for (auto &t : ts) t.join();
  }
  if (get_stats(&s, sizeof s) != 0) return 1;
  int64_t bytes = live_bytes_since(&s0, &s);
  int64_t blocks = live_blocks_since(&s0, &s);
  long want = (long)rounds * 4;
  bool ok = bytes == 0 && blocks == 0 && constructed == want && destructed == want;
  printf("%s: live_bytes delta %" PRId64 ", live blocks delta %" PRId64 " (allocs +%" PRIu64 ", frees +%" PRIu64
         "), %ld thread_local objects constructed, %ld destroyed (expected %ld)\n",
         ok ? "ok" : "FAIL", bytes, blocks, s.allocs - s0.allocs, s.frees - s0.frees, constructed.load(),
         destructed.load(), want);
  return ok ? 0 : 1;
}
