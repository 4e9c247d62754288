"""ctypes view of include/memtrim.h, shared by the host scripts in tests/py/.

The library must be preloaded: the functions are looked up in the global namespace of the
process (ctypes.CDLL(None)), as an application that knows memtrim would do with
dlsym(RTLD_DEFAULT, ...).
"""

import ctypes
import sys

MEMTRIM_STATS_VERSION = 1


class MemtrimStats(ctypes.Structure):
    # Mirrors struct memtrim_stats; later fields are appended by the library, never reordered.
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("live_bytes", ctypes.c_uint64),
        ("peak_live_bytes", ctypes.c_uint64),
        ("allocs", ctypes.c_uint64),
        ("frees", ctypes.c_uint64),
    ]


assert ctypes.sizeof(MemtrimStats) == 40, "memtrim_stats layout"
assert MemtrimStats.live_bytes.offset == 8, "memtrim_stats layout"
assert MemtrimStats.frees.offset == 32, "memtrim_stats layout"

_process = ctypes.CDLL(None)
try:
    _get_stats = _process.memtrim_get_stats
    _trim = _process.memtrim_trim
except AttributeError:
    sys.exit("FAIL: memtrim_get_stats/memtrim_trim are not in the process: is libmemtrim.so preloaded?")
_get_stats.argtypes = [ctypes.POINTER(MemtrimStats), ctypes.c_size_t]
_get_stats.restype = ctypes.c_int
_trim.argtypes = []
_trim.restype = ctypes.c_size_t


def get_stats():
    s = MemtrimStats()
    rc = _get_stats(ctypes.byref(s), ctypes.sizeof(s))
    if rc != 0:
        raise AssertionError(f"memtrim_get_stats returned {rc}")
    if s.version != MEMTRIM_STATS_VERSION:
        raise AssertionError(f"memtrim_get_stats: version {s.version}, expected {MEMTRIM_STATS_VERSION}")
    if s.size != ctypes.sizeof(s):
        raise AssertionError(f"memtrim_get_stats: size {s.size}, expected {ctypes.sizeof(s)}")
    return s


def raw_get_stats(buf, out_size):
    """memtrim_get_stats(buf, out_size) with any out_size; buf may be None (NULL)."""
    return _get_stats(buf, out_size)


def trim():
    return _trim()


MiB = 1 << 20


def mib(n):
    return f"{n / MiB:.2f} MiB"
