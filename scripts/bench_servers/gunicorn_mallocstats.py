"""A gunicorn config file (`-c`) for scripts/bench-servers: what CPython itself says of its
empty pools (sys._debugmallocstats(): "N unused pools * 16384 bytes"), in each worker, without
touching the app. post_fork starts a daemon thread in the worker that writes the statistics to
BENCH_MALLOCSTATS_DIR/PID:

  - under memtrim with its pool release active (the worker's stats page in MEMTRIM_SHM_DIR says
    py_state 1): every DUMP_S until the page shows the first pages of pools given back, so that
    the file holds the statistics of at most DUMP_S before the first release, next to what the
    page said of the empty pools then and the first release's bytes;
  - otherwise once, when BENCH_MALLOCSTATS_DIR/now appears (the bench makes it as the load ends).

The statistics are printed by C code to fd 2: a file is put over fd 2 for the call (the
interpreter's lock is held throughout, so no other thread of the worker runs meanwhile).
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_servers import page as mpage  # noqa: E402

POLL_S = 0.05
DUMP_S = 0.5


def _dump(out, header):
    tmp = f"{out}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, header.encode())
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(fd, 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    finally:
        os.close(fd)
    os.replace(tmp, out)


def _watch(directory, shm):
    pid = os.getpid()
    out = os.path.join(directory, str(pid))
    words, last_dump = None, 0.0
    while True:
        if os.path.exists(os.path.join(directory, "now")) and words is None:
            _dump(out, f"# at load end, {time.time():.3f}\n")
            return
        if shm and words is None:
            path = mpage.find(shm, pid)
            w = mpage.Words(path) if path else None
            st = w.get("py_state") if w else None
            if st == [1]:
                words = w
            elif st is not None:
                shm = None  # memtrim gives no pools back here: wait for the trigger alone
        if words is not None:
            v = words.get("py_released_bytes", "py_empty_bytes", "py_empty_pools", "py_measured_at_ms")
            if v and v[0] > 0:
                with open(out + ".first", "w") as f:
                    f.write(f"{v[0]} {time.time():.3f}\n")
                return
            now = time.monotonic()
            if v and now - last_dump >= DUMP_S:
                last_dump = now
                _dump(out, f"# before the first release, {time.time():.3f}; page: py_empty_bytes {v[1]} "
                           f"py_empty_pools {v[2]} py_measured_at_ms {v[3]}\n")
        time.sleep(POLL_S)


def post_fork(server, worker):
    directory = os.environ.get("BENCH_MALLOCSTATS_DIR")
    if directory:
        threading.Thread(target=_watch, args=(directory, os.environ.get("MEMTRIM_SHM_DIR")), daemon=True,
                         name="mallocstats").start()
