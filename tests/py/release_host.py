"""A host process for tests/release.rs, driven line by line over stdin/stdout; runs under
libmemtrim.so (the test preloads it) with CPython's default allocator (pymalloc in front of
malloc: the 16 KB buffers below go to malloc).

Prints `ready PID` once, then answers each command with one line:

  frag N SIZE KEEP  N bytearrays of SIZE bytes (zeroed, so resident), then drop all but one in
                    KEEP: a heap fragmented the way a server's is between requests    -> `ok`
  apitrim           memtrim_trim() through ctypes (the C API of include/memtrim.h)   -> `released BYTES`
  drop              drop everything held                                              -> `ok`
  exit              exit normally                                                     (no answer)

End of input is `exit`. Nothing else is written on stdout.
"""
import ctypes
import gc
import os
import sys

held = []
lib = ctypes.CDLL(None)


def answer(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


answer(f"ready {os.getpid()}")
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    cmd = words[0]
    if cmd == "frag":
        n, size, keep = (int(w) for w in words[1:4])
        blocks = [bytearray(size) for _ in range(n)]
        held.extend(blocks[::keep])
        del blocks
        answer("ok")
    elif cmd == "apitrim":
        trim = lib.memtrim_trim
        trim.restype = ctypes.c_size_t
        trim.argtypes = []
        answer(f"released {trim()}")
    elif cmd == "drop":
        held.clear()
        gc.collect()
        answer("ok")
    elif cmd == "exit":
        break
    else:
        answer(f"error unknown command {cmd!r}")
