"""CPython's statistics of its pools as the Python servers' workers wrote them (the gunicorn config
file gunicorn_mallocstats.py): where they go, and what they say of empty pools."""
import os
import re

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gunicorn_mallocstats.py")
# sys._debugmallocstats(): "123 unused pools * 16384 bytes       =            2,015,232"
UNUSED = re.compile(r"^(\d[\d,]*) unused pools \* (\d+) bytes", re.M)
PAGE = re.compile(r"py_empty_bytes (\d+) py_empty_pools (\d+)")
ARENAS = re.compile(r"^# arenas allocated current\s*=\s*([\d,]+)", re.M)


def start(directory):
    """Makes the workers that wait for it write their statistics now."""
    open(os.path.join(directory, "now"), "w").close()


def read(directory, pid):
    """What worker pid wrote: {unused_pools, unused_bytes, arenas, page_empty_bytes,
    page_empty_pools (when written before memtrim's first release), first_release_bytes}, or
    None."""
    try:
        with open(os.path.join(directory, str(pid))) as f:
            text = f.read()
    except OSError:
        return None
    m = UNUSED.search(text)
    if not m:
        return None
    n, size = int(m.group(1).replace(",", "")), int(m.group(2))
    out = {"unused_pools": n, "unused_bytes": n * size, "before_first_release": text.startswith("# before")}
    a = ARENAS.search(text)
    out["arenas"] = int(a.group(1).replace(",", "")) if a else None
    p = PAGE.search(text.splitlines()[0])
    if p:
        out["page_empty_bytes"], out["page_empty_pools"] = int(p.group(1)), int(p.group(2))
    try:
        with open(os.path.join(directory, f"{pid}.first")) as f:
            out["first_release_bytes"] = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out
