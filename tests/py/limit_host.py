"""A host process for tests/limits.rs, driven line by line over stdin/stdout; runs under
libmemtrim.so (the test preloads it) with CPython's default allocator (the 16 KB and 1 MiB
buffers below go to malloc, not to pymalloc's arenas).

Behaves like a server worker on SIGTERM: prints `signal TERM` and exits 0 (so a test sees the
limit's signal arrive, and the library's exit handlers run). With `--startup-mb N` it holds N MiB
from its start (live before the library's worker thread first looks).

Prints `ready PID` once, then answers each command with one line:

  frag N SIZE KEEP  N bytearrays of SIZE bytes (zeroed, so resident), then drop all but one in
                    KEEP: a heap that glibc keeps resident although little of it is live  -> `ok`
  hold N SIZE       the first half of frag: N bytearrays of SIZE bytes, all kept         -> `ok`
  thin KEEP         the second half: of the blocks of `hold`, keep one in KEEP            -> `ok`
  leak MB           hold MB more MiB in 1 MiB blocks, written so they are resident        -> `ok`
  drop              drop everything held (frag and leak)                                 -> `ok`
  exit              exit normally                                                         (no answer)

End of input is `exit`. Nothing else is written on stdout.
"""
import gc
import os
import signal
import sys

held = []
blocks = []


def answer(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def on_term(signum, frame):
    answer("signal TERM")
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
if len(sys.argv) == 3 and sys.argv[1] == "--startup-mb":
    held.extend(b"\x02" * (1 << 20) for _ in range(int(sys.argv[2])))

answer(f"ready {os.getpid()}")
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    cmd = words[0]
    if cmd == "frag":
        n, size, keep = (int(w) for w in words[1:4])
        fresh = [bytearray(size) for _ in range(n)]
        held.extend(fresh[::keep])
        del fresh
        answer("ok")
    elif cmd == "hold":
        n, size = (int(w) for w in words[1:3])
        blocks.extend(bytearray(size) for _ in range(n))
        answer("ok")
    elif cmd == "thin":
        keep = int(words[1])
        held.extend(blocks[::keep])
        blocks.clear()
        answer("ok")
    elif cmd == "leak":
        held.extend(b"\x01" * (1 << 20) for _ in range(int(words[1])))
        answer("ok")
    elif cmd == "drop":
        held.clear()
        blocks.clear()
        gc.collect()
        answer("ok")
    elif cmd == "exit":
        break
    else:
        answer(f"error unknown command {cmd!r}")
