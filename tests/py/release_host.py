"""A host process for tests/release.rs, driven line by line over stdin/stdout; runs under
libmemtrim.so (the test preloads it) with CPython's default allocator (pymalloc in front of
malloc: the 16 KB buffers of `frag` go to malloc).

Prints `ready PID` once, then answers each command with one line: `frag`, `drop` and `exit` of
host_common.py, and

  apitrim           memtrim_trim() through ctypes (the C API of include/memtrim.h)   -> `released BYTES`
"""
import ctypes
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from host_common import serve  # noqa: E402

lib = ctypes.CDLL(None)


def apitrim(args):
    trim = lib.memtrim_trim
    trim.restype = ctypes.c_size_t
    trim.argtypes = []
    return f"released {trim()}"


serve({"apitrim": apitrim})
