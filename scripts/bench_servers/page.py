"""Reads a memtrim stats page (MEMTRIM_SHM_DIR/memtrim-UID/memtrim.PID.START) from Python, for
the benchmarks' traces of the policy's counters.

The layout is not copied here: the page's header says where the writer's stats start and how
long they are, and `memtrim fields --json` says where each field lies in them (the table the
library writes the page by). A reader copies the stats between two equal even reads of the
seqlock and checks the check word over all of them."""
import json
import os
import struct
import subprocess
import time

MAGIC = int.from_bytes(b"MEMTRIM\0", "little")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("MEMTRIM_CLI") or os.path.join(_ROOT, "target", "release", "memtrim")
M64 = (1 << 64) - 1
STATS_OFFSET = 96  # the header and the control block come first (page.rs)
_LAYOUT = None


def _layout():
    """(layout version, {field name: field}) from the CLI, asked once per process (a gunicorn
    config imports this in the master, so that workers inherit it)."""
    global _LAYOUT
    if _LAYOUT is None:
        d = json.loads(subprocess.run([CLI, "fields", "--json"], check=True, capture_output=True, text=True).stdout)
        _LAYOUT = (d["layout_version"], {f["name"]: f for f in d["fields"]}, d["first_stats_bytes"])
    return _LAYOUT


def _checksum(words):
    a = 0x9E3779B97F4A7C15
    for x in words[1:]:
        a = (((a << 5) | (a >> 59)) & M64)
        a = (a + x) & M64
    return a


def find(directory, pid):
    """The page file of `pid` of this user in `directory` (MEMTRIM_SHM_DIR: pages are in its
    per-user directory memtrim-EUID), or None."""
    directory = os.path.join(directory, f"memtrim-{os.geteuid()}")
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for n in names:
        if n.startswith(f"memtrim.{pid}."):
            return os.path.join(directory, n)
    return None


def _value(f, stats):
    at, size, ty = f["offset"], f["size"], f["type"]
    if at + size > len(stats):
        return None
    if ty == "u32":
        return struct.unpack_from("<I", stats, at)[0]
    if ty == "u64":
        return struct.unpack_from("<Q", stats, at)[0]
    if ty.startswith("text"):
        return stats[at:at + size].split(b"\0")[0].decode(errors="replace")
    values = struct.unpack_from(f"<{size // 8}Q", stats, at)
    names = (f.get("counters") or {}).get("names")
    return dict(zip(names, values)) if names else list(values)


def _stats(path):
    """The writer's stats as bytes, consistent and checked, or None (gone, not a page of this
    layout, or never settled)."""
    version, _, least = _layout()
    for _ in range(200):
        try:
            with open(path, "rb") as f:
                raw = f.read(4096)
                f.seek(16)
                seq2 = struct.unpack("<Q", f.read(8))[0]
        except (OSError, struct.error):
            return None
        if len(raw) < 32:
            return None
        magic, layout, _, seq1, off, size = struct.unpack_from("<QIIQII", raw, 0)
        # As the CLI's reader (page.rs): past the header and the control block, whole words,
        # at least the first writer's stats of this version, within the file.
        if magic != MAGIC or layout != version or off < STATS_OFFSET or off % 8 or size % 8 or size < least or off + size > len(raw):
            return None
        stats = raw[off:off + size]
        words = struct.unpack(f"<{size // 8}Q", stats)
        if seq1 & 1 == 0 and seq1 == seq2 and words[0] == _checksum(words):
            return stats
        time.sleep(0.001)
    return None


def read(path):
    """A dict of the page's fields by their names in the table, or None; a field an older
    writer does not have is left out."""
    stats = _stats(path)
    if stats is None:
        return None
    return {name: _value(f, stats) for name, f in _layout()[1].items() if f["offset"] + f["size"] <= len(stats)}


class Words:
    """A few fields of one page, re-read cheaply."""

    def __init__(self, path):
        self.path = path

    def get(self, *names):
        """The named fields' values (None for one an older writer does not have), or None."""
        stats = _stats(self.path)
        if stats is None:
            return None
        fields = _layout()[1]
        return [_value(fields[n], stats) if fields[n]["offset"] + fields[n]["size"] <= len(stats) else None for n in names]
