"""A host process for tests/limits.rs, driven line by line over stdin/stdout; runs under
libmemtrim.so (the test preloads it) with CPython's default allocator (the 16 KB and 1 MiB
buffers below go to malloc, not to pymalloc's arenas).

Behaves like a server worker on SIGTERM: prints `signal TERM` and exits 0 (so a test sees the
limit's signal arrive, and the library's exit handlers run). With `--startup-mb N` it holds N MiB
from its start (live before the library's worker thread first looks).

Prints `ready PID` once, then answers each command with one line: `frag`, `drop` (everything
held, by frag, hold, thin and leak) and `exit` of host_common.py, and

  hold N SIZE       the first half of frag: N bytearrays of SIZE bytes, all kept         -> `ok`
  thin KEEP         the second half: of the blocks of `hold`, keep one in KEEP            -> `ok`
  leak MB           hold MB more MiB in 1 MiB blocks, written so they are resident        -> `ok`
"""
import signal
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from host_common import answer, blocks, held, serve  # noqa: E402


def on_term(signum, frame):
    answer("signal TERM")
    sys.exit(0)


def hold(args):
    n, size = (int(w) for w in args[:2])
    blocks.extend(bytearray(size) for _ in range(n))
    return "ok"


def thin(args):
    keep = int(args[0])
    held.extend(blocks[::keep])
    blocks.clear()
    return "ok"


def leak(args):
    held.extend(b"\x01" * (1 << 20) for _ in range(int(args[0])))
    return "ok"


signal.signal(signal.SIGTERM, on_term)
if len(sys.argv) == 3 and sys.argv[1] == "--startup-mb":
    held.extend(b"\x02" * (1 << 20) for _ in range(int(sys.argv[2])))

serve({"hold": hold, "thin": thin, "leak": leak})
