"""CPython as a host of libmemtrim.so: live_bytes follows what the interpreter allocates.

Run with the library preloaded, with the default allocator (pymalloc: objects over 512 bytes go
to malloc, small ones to pymalloc's own mmap'd arenas) or with PYTHONMALLOC=malloc (everything
goes to malloc). Prints one line per check and exits non-zero on the first failure.

Checks:
  - memtrim_get_stats' argument contract: NULL and out_size < 8 give -1; out_size 8 fills only
    the size and version words and says so in .size.
  - ~100 MiB of bytes/bytearray/str objects (calloc'd 1 MiB blocks, 64 KiB and ~4 KiB blocks
    grown through realloc) raise live_bytes by at least 90 MiB and at most 125 MiB; allocs grow by
    at least the number of objects; peak_live_bytes >= live_bytes.
  - Freeing them brings live_bytes back to within TOLERANCE of where it started.
  - 4 threads allocate 40 MiB at once, the main thread frees it all (frees from another thread
    than the one that allocated): live_bytes rises >= 36 MiB and comes back within TOLERANCE.
  - With PYTHONMALLOC=malloc, one million distinct floats (24 usable bytes each through malloc)
    plus their list raise live_bytes by >= 28 MiB; with pymalloc they do not go through malloc
    and the rise stays under 16 MiB (the list's 8 MiB array only): checks that the two modes
    really differ.
  - On a fragmented heap (every 8th of 8192 4 KiB blocks kept), freeing and memtrim_trim()
    shrink RSS by >= 16 MiB of the 28 MiB freed (wherever the library releases them: at free or
    in the trim), and live_bytes is unchanged by the trim (a trim frees no live block).
"""

import ctypes
import gc
import os
import queue
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memtrim_stats import MiB, MemtrimStats, get_stats, mib, raw_get_stats, trim  # noqa: E402

# Python keeps a little memory it allocated during the run (interned names, dict growth,
# free lists, the thread machinery, this script's own frames): at most this much.
TOLERANCE = 2 * MiB

MODE = os.environ.get("PYTHONMALLOC", "default")


def fail(msg):
    print(f"FAIL [{MODE}]: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print(f"ok [{MODE}]: {msg}", flush=True)


def settle():
    gc.collect()
    gc.collect()


def api_contract():
    check(raw_get_stats(None, 40) == -1, "memtrim_get_stats(NULL, 40) == -1")
    buf = (ctypes.c_ubyte * 40)(*([0xAB] * 40))
    check(raw_get_stats(ctypes.cast(buf, ctypes.POINTER(MemtrimStats)), 4) == -1,
          "memtrim_get_stats(out, 4) == -1")
    rc = raw_get_stats(ctypes.cast(buf, ctypes.POINTER(MemtrimStats)), 8)
    view = MemtrimStats.from_buffer_copy(bytes(buf))
    check(rc == 0 and view.size == 8 and view.version == 1,
          f"memtrim_get_stats(out, 8) == 0 with size 8, version 1 (rc {rc}, size {view.size}, version {view.version})")
    check(all(b == 0xAB for b in bytes(buf)[8:]), "memtrim_get_stats(out, 8) leaves bytes 8.. untouched")


def single_thread():
    settle()
    s0 = get_stats()
    big = [bytes(MiB) for _ in range(40)]  # 40 MiB, calloc through PyObject_Calloc
    mid = []
    for _ in range(160):  # 10 MiB, bytearray grown by realloc
        b = bytearray(1024)
        b.extend(bytes(63 * 1024))
        mid.append(b)
    small = [bytearray(4000) for _ in range(6400)]  # 25 MiB
    strs = [("%06d" % i) * 680 for i in range(6400)]  # 25.5 MiB of 4080-character str
    s1 = get_stats()
    nobj = len(big) + len(mid) + len(small) + len(strs)
    requested = 40 * MiB + 160 * 64 * 1024 + 6400 * 4000 + 6400 * 4080
    rise = s1.live_bytes - s0.live_bytes
    print(f"info [{MODE}]: start {mib(s0.live_bytes)}, requested {mib(requested)} in {nobj} objects, "
          f"live rose by {mib(rise)}, allocs +{s1.allocs - s0.allocs}, frees +{s1.frees - s0.frees}", flush=True)
    check(rise >= 90 * MiB, f"live_bytes rose by >= 90 MiB after allocating ~100 MiB (rose {mib(rise)})")
    check(rise <= 125 * MiB, f"live_bytes rose by <= 125 MiB after allocating ~100 MiB (rose {mib(rise)})")
    check(s1.allocs - s0.allocs >= nobj, f"allocs grew by >= {nobj} (grew {s1.allocs - s0.allocs})")
    check(s1.peak_live_bytes >= s1.live_bytes,
          f"peak_live_bytes {s1.peak_live_bytes} >= live_bytes {s1.live_bytes}")
    del big, mid, small, strs
    settle()
    s2 = get_stats()
    diff = s2.live_bytes - s0.live_bytes
    check(abs(diff) <= TOLERANCE,
          f"after freeing, live_bytes is back within {mib(TOLERANCE)} of the start (start {mib(s0.live_bytes)}, "
          f"now {mib(s2.live_bytes)}, diff {diff} bytes)")
    check(s2.frees - s1.frees >= nobj, f"frees grew by >= {nobj} (grew {s2.frees - s1.frees})")
    check(s2.peak_live_bytes >= s1.live_bytes, "peak_live_bytes kept the peak")


def threads():
    settle()
    s0 = get_stats()
    q = queue.Queue()
    start = threading.Barrier(4)

    def worker(seed):
        start.wait()
        blocks = [bytearray(8192 - 64 + (i + seed) % 64) for i in range(1280)]  # ~10 MiB
        q.put(blocks)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    held = [q.get() for _ in range(4)]
    s1 = get_stats()
    rise = s1.live_bytes - s0.live_bytes
    check(rise >= 36 * MiB, f"4 threads x 10 MiB raised live_bytes by >= 36 MiB (rose {mib(rise)})")
    del held  # freed on the main thread, allocated on the workers
    settle()
    s2 = get_stats()
    diff = s2.live_bytes - s0.live_bytes
    check(abs(diff) <= TOLERANCE,
          f"after the main thread freed the workers' blocks, live_bytes is back within {mib(TOLERANCE)} "
          f"(diff {diff} bytes)")


def small_objects():
    settle()
    s0 = get_stats()
    floats = [float(i) + 0.5 for i in range(1_000_000)]
    s1 = get_stats()
    rise = s1.live_bytes - s0.live_bytes
    if MODE == "malloc":
        check(rise >= 28 * MiB, f"1e6 floats with PYTHONMALLOC=malloc raised live_bytes by >= 28 MiB (rose {mib(rise)})")
    else:
        check(rise < 16 * MiB, f"1e6 floats under pymalloc raised live_bytes by < 16 MiB (rose {mib(rise)})")
    del floats
    settle()
    diff = get_stats().live_bytes - s0.live_bytes
    check(abs(diff) <= TOLERANCE, f"after freeing the floats, live_bytes is back within {mib(TOLERANCE)} (diff {diff})")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trimming():
    settle()
    # a fragmented heap: keep every 8th block of 32 MiB of 4 KiB blocks (zeroed, so resident)
    blocks = [bytearray(4000) for _ in range(8192)]
    rss_full = rss()
    keep = blocks[::8]
    del blocks
    settle()
    s0 = get_stats()
    released = trim()
    s1 = get_stats()
    rss_after = rss()
    print(f"info [{MODE}]: memtrim_trim() released {mib(released)}; RSS {mib(rss_full)} with all blocks, "
          f"{mib(rss_after)} after freeing 7/8 and trimming", flush=True)
    check(rss_full - rss_after >= 16 * MiB,
          f"freeing 28 MiB of 4 KiB blocks between live ones and memtrim_trim() shrink RSS by >= 16 MiB "
          f"(shrank {mib(rss_full - rss_after)})")
    check(s1.live_bytes - s0.live_bytes <= 64 * 1024,
          f"memtrim_trim() frees no live block (live before {s0.live_bytes}, after {s1.live_bytes})")
    check(len(keep) == 1024 and all(len(b) == 4000 for b in keep), "kept blocks intact after trim")


def main():
    api_contract()
    single_thread()
    threads()
    small_objects()
    trimming()
    print(f"PASS [{MODE}]", flush=True)


if __name__ == "__main__":
    main()
