"""Objects that must stay intact while libmemtrim.so gives back CPython's empty pools over and
over (tests/pymalloc.rs runs this with MEMTRIM_PYMALLOC_EVERY_MS=10).

usage: pymalloc_stress.py SECONDS [--fork]

THREADS threads (the main thread is one of them: the library's steps run only in the main
thread, between two bytecodes) each make, round after round, batches of objects of many
pymalloc size classes whose contents follow from a number (tuples, str of many lengths, bytes
up to 480 bytes, lists, dicts, big ints, frozensets, floats), keep one in 50 to 1500 of them,
drop the rest (emptying pools), check every object kept against a fresh one made from its
number and against the checksum taken when it was made, and drop the older half of what they
keep once it grows large (emptying more pools, of other size classes). With --fork the main
thread also forks a child every second or so, while the others run: the child checks every
object it inherited, runs the same threads for a second, checks again and exits 0 only if all
was intact; the parent requires every child to exit 0.

Prints `PASS rounds R objects O checked C forks F` and exits 0 when every check held;
otherwise prints `FAIL ...` lines and exits 1.
"""
import os
import sys
import threading
import time
import warnings
import zlib

# 3.12+ warns about fork in a process with threads, which is what this tests
warnings.filterwarnings("ignore", category=DeprecationWarning)

THREADS = 4
BATCH = 20000
KEEP_MAX = 60000  # objects kept per thread before the older half is dropped


def make(i):
    k = i % 8
    if k == 0:
        return (i, i + 1, str(i))
    if k == 1:
        return str(i) * (1 + i % 60)
    if k == 2:
        return bytes([i % 251]) * (i % 480)
    if k == 3:
        return [i, -i, float(i)]
    if k == 4:
        return {"k": i, str(i): i * 3}
    if k == 5:
        return i * 1000003 + (1 << (40 + i % 200))
    if k == 6:
        return frozenset((i, i + 2, i + 4))
    return float(i) / 7.0


def digest(o):
    return zlib.crc32(repr(o).encode())


class Worker:
    def __init__(self, ident):
        self.ident = ident
        self.kept = {}  # number -> (object, checksum when made)
        self.rounds = self.objects = self.checked = 0
        self.failures = []

    def check_all(self):
        for i, (o, crc) in list(self.kept.items()):
            self.checked += 1
            if o != make(i) or digest(o) != crc:
                self.failures.append(f"worker {self.ident}: object {i} is {o!r:.200}, expected {make(i)!r:.200}")
                if len(self.failures) > 10:
                    return

    def round(self):
        base = (self.ident << 40) + self.rounds * BATCH
        keep = 50 + (self.rounds * 97 + self.ident * 31) % 1451
        batch = [make(base + j) for j in range(BATCH)]
        for j in range(0, BATCH, keep):
            self.kept[base + j] = (batch[j], digest(batch[j]))
        del batch
        self.objects += BATCH
        self.check_all()
        if len(self.kept) > KEEP_MAX:
            for i in sorted(self.kept)[: len(self.kept) // 2]:
                del self.kept[i]
        self.rounds += 1

    def run(self, until, between=None):
        while time.monotonic() < until and not self.failures:
            self.round()
            if between:
                between()


def stress(seconds, ident_base, between=None, registry=None):
    """THREADS workers for `seconds`, listed in `registry` as they start (the calling thread runs
    the first, calling `between` after each of its rounds); the workers."""
    until = time.monotonic() + seconds
    workers = [Worker(ident_base + n) for n in range(THREADS)]
    if registry is not None:
        registry.extend(workers)
    threads = [threading.Thread(target=w.run, args=(until,)) for w in workers[1:]]
    for t in threads:
        t.start()
    workers[0].run(until, between)
    for t in threads:
        t.join()
    return workers


def main():
    seconds = float(sys.argv[1])
    forking = "--fork" in sys.argv[2:]
    children, failures = [], []
    everyone = []  # the workers of this process, for the children to check
    last_fork = [time.monotonic()]

    def fork_now():
        if not forking or time.monotonic() - last_fork[0] < 1.0:
            return
        last_fork[0] = time.monotonic()
        pid = os.fork()
        if pid == 0:
            ok = True
            try:
                for w in everyone:
                    w.check_all()
                    ok &= not w.failures
                mine = stress(1.0, 1000 + len(children) * THREADS)
                for w in mine:
                    w.check_all()
                    ok &= not w.failures
                for w in everyone + mine:
                    for f in w.failures:
                        print(f"FAIL child {os.getpid()}: {f}", flush=True)
            except BaseException as e:  # noqa: BLE001 - anything is a failure in the child
                print(f"FAIL child {os.getpid()}: {e!r}", flush=True)
                ok = False
            os._exit(0 if ok else 1)
        children.append(pid)

    def between():
        fork_now()
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.remove(pid)
                reaped.append(pid)
                if status != 0:
                    failures.append(f"child {pid} exited with status {status:#x}")

    reaped = []
    workers = stress(seconds, 0, between, everyone)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        reaped.append(pid)
        if status != 0:
            failures.append(f"child {pid} exited with status {status:#x}")
    for w in workers:
        w.check_all()
        failures.extend(w.failures)
    if forking and not reaped:
        failures.append("no child was forked")
    for f in failures:
        print(f"FAIL {f}", flush=True)
    if failures:
        return 1
    print(f"PASS rounds {sum(w.rounds for w in workers)} objects {sum(w.objects for w in workers)} "
          f"checked {sum(w.checked for w in workers)} forks {len(reaped)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
