"""A host for tests/pymalloc.rs, driven line by line like the hosts of host_common.py, whose main
thread keeps running Python code while it waits for a command: CPython runs the library's steps
(pending calls) only between two bytecodes of its main thread, never while it sits in read().
Runs on CPython 3.8 and later.

Commands, besides host_common's:

  pyfrag N KEEP     N bytes objects of every size pymalloc serves (33 to 512 bytes, round robin,
                    so that pools fill whole and every block is written), then all but one in
                    KEEP dropped: pools emptied in arenas that stay                       -> `ok`
  pools             sys._debugmallocstats' unused pools (empty and never carved), their size,
                    the arenas, and VmRSS        -> `unused_bytes B pool_bytes P arenas A rss R`
  arena_allocator   the file mapped where the interpreter's arena allocator function is
                    (PyObject_GetArenaAllocator)                                      -> `PATH`
"""
import ctypes
import os
import queue
import re
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from host_common import held, serve  # noqa: E402


def pyfrag(args):
    n, keep = int(args[0]), int(args[1])
    fresh = [bytes(i % 480) for i in range(n)]
    held.extend(fresh[::keep])
    del fresh
    return "ok"


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def debugmallocstats():
    """What sys._debugmallocstats() writes on the C stderr."""
    sys.stderr.flush()
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    os.close(w)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    return b"".join(chunks).decode()


def pools(args):
    out = debugmallocstats()
    unused = re.search(r"(\d+) unused pools \* (\d+) bytes", out)
    arenas = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", out)
    if not unused or not arenas:
        return "error no unused pools / arenas in _debugmallocstats: " + out[-500:].replace("\n", " | ")
    return (f"unused_bytes {int(unused.group(1)) * int(unused.group(2))} pool_bytes {unused.group(2)} "
            f"arenas {arenas.group(1).replace(',', '')} rss {rss()}")


class ArenaAllocator(ctypes.Structure):
    _fields_ = [("ctx", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]


def arena_allocator(args):
    a = ArenaAllocator()
    ctypes.pythonapi.PyObject_GetArenaAllocator(ctypes.byref(a))
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= a.alloc < hi:
                return parts[5] if len(parts) > 5 else "anonymous"
    return "error no mapping holds the arena allocator"


def polled_stdin():
    """The lines of stdin, read by a thread of their own, waited for in short slices."""
    q = queue.Queue()

    def read():
        for line in sys.stdin:
            q.put(line)
        q.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            line = q.get(timeout=0.005)
        except queue.Empty:
            continue
        if line is None:
            return
        yield line


serve({"pyfrag": pyfrag, "pools": pools, "arena_allocator": arena_allocator}, polled_stdin())
