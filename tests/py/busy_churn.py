"""A host for tests/busy_policy.rs: a CPython server that is never idle. Once started, 4 threads
serve without pause, each a loop of requests: bytearrays of 600 B to 60 KiB (above pymalloc's
512 B, so glibc's malloc serves them, each thread from its own arena) up to ~5 MiB, held ~20 ms,
then freed. Commands put memory of other lifetimes into the same threads' arenas, while they
serve.

The main thread only waits for commands on stdin, as a server's main thread waits in accept or
join: between commands it runs no Python code (nor calls the interpreter has pending).

Prints `ready PID` once, then answers each command with one line: `frag`, `drop` and `exit` of
host_common.py, and

  start                  the serving threads start                                      -> `ok`
  hold MIB BLOCK         the threads allocate MIB MiB between them in blocks of BLOCK bytes
                         (zeroed: resident), each in the middle of a request, and keep them
                         (answered once all have)                                      -> `ok`
  free                   the threads free what `hold` kept (answered once all have)    -> `ok`
  waves MIB BLOCK MS     from now on every MS ms each thread allocates MIB MiB in blocks of
                         BLOCK bytes and frees them at once: memory that keeps coming back -> `ok`
  requests               -> `requests N`: the requests served so far (all threads)
"""
import queue
import random
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from host_common import serve  # noqa: E402

THREADS = 4
MiB = 1 << 20
REQUEST_BYTES = 5 * MiB
HOLD_S = 0.020


class Server:
    def __init__(self):
        self.tasks = [queue.Queue() for _ in range(THREADS)]
        self.replies = queue.Queue()
        self.requests = [0] * THREADS
        # (bytes, block, period in seconds) of `waves`, or None
        self.wave = None

    def start(self):
        for i in range(THREADS):
            threading.Thread(target=self.serve_forever, args=(i,), daemon=True).start()

    def serve_forever(self, i):
        rng = random.Random(i)
        kept = []
        next_wave = 0.0
        while True:
            request, total = [], 0
            while total < REQUEST_BYTES:
                n = rng.randint(600, 60 * 1024)
                request.append(bytearray(n))
                total += n
            # commands run here, while the request's blocks are live: what `hold` allocates
            # goes above them in the arena, not into the holes they leave
            try:
                task = self.tasks[i].get_nowait()
            except queue.Empty:
                task = None
            if task is not None:
                if task[0] == "hold":
                    kept.extend(blocks(task[1], task[2]))
                else:
                    kept.clear()
                self.replies.put(i)
            wave = self.wave
            if wave is not None and time.monotonic() >= next_wave:
                blocks(wave[0], wave[1])  # all allocated, then all freed
                next_wave = time.monotonic() + wave[2]
            time.sleep(HOLD_S)
            del request
            self.requests[i] += 1

    def each_thread(self, task):
        for q in self.tasks:
            q.put(task)
        for _ in range(THREADS):
            self.replies.get(timeout=30)
        return "ok"


def blocks(size, block):
    return [bytearray(block) for _ in range(size // block)]


server = Server()


def start(args):
    server.start()
    return "ok"


def hold(args):
    mib, block = int(args[0]), int(args[1])
    return server.each_thread(("hold", mib * MiB // THREADS, block))


def free(args):
    return server.each_thread(("free",))


def waves(args):
    mib, block, ms = int(args[0]), int(args[1]), int(args[2])
    server.wave = (mib * MiB, block, ms / 1000)
    return "ok"


def requests(args):
    return f"requests {sum(server.requests)}"


serve({"start": start, "hold": hold, "free": free, "waves": waves, "requests": requests})
