"""A Python process that fragments its heap the way a server does between requests: it builds
300 MB of small objects, keeps one in sixteen, then idles. Prints its RSS and, under memtrim,
memtrim's own figures for the process."""
import ctypes
import sys
import time


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


class Stats(ctypes.Structure):
    _fields_ = [(n, t) for n, t in [("size", ctypes.c_uint32), ("version", ctypes.c_uint32)]] + [
        (n, ctypes.c_uint64) for n in ("live_bytes", "peak_live_bytes", "allocs", "frees")
    ]


def live_mib():
    get = getattr(ctypes.CDLL(None), "memtrim_get_stats", None)
    if get is None:
        return None
    s = Stats()
    get(ctypes.byref(s), ctypes.sizeof(s))
    return s.live_bytes / 2**20


def show(label):
    live = live_mib()
    extra = f", live (memtrim) {live:6.1f} MiB" if live is not None else ""
    print(f"  {label:28} RSS {rss_mib():6.1f} MiB{extra}", flush=True)


blocks = [bytearray(1000) for _ in range(300_000)]
show("after building 300k blocks")
keep = blocks[::16]
del blocks
show("after freeing 15 of 16")
for second in range(1, int(sys.argv[1]) + 1 if len(sys.argv) > 1 else 4):
    time.sleep(1)
    show(f"idle {second} s")
