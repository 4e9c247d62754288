"""Reads a memtrim stats page (MEMTRIM_SHM_DIR/memtrim.PID.START) from Python, for the
figures `memtrim stat --json` does not print (releases per reason, the policy's counters).

Layout: crates/common/src/page.rs: magic, layout version, header_size (the writer's size of the
whole struct), the seqlock word, the control words, then struct Stats of u64 words up to
header_size. The control block has grown without a layout version change, so the start of the
stats is found here as the offset where the check word agrees with the words after it and the
pid agrees with the file name. A reader copies the stats between two equal even reads of the
seqlock."""
import os
import struct
import time

MAGIC = int.from_bytes(b"MEMTRIM\0", "little")
LAYOUT_VERSION = 1
REASONS = ("request", "api", "retained", "idle", "pressure", "limit")

# (name, word count) of struct Stats after `check`, in order; pid..allocator are two words of
# u32 pairs, comm two words.
_WORDS = [
    ("pid_ppid", 1), ("uid_allocator", 1), ("start_ticks", 1), ("comm", 2), ("updated_at_ms", 1),
    ("samples", 1), ("live_bytes", 1), ("peak_live_bytes", 1), ("allocs", 1), ("frees", 1),
    ("heap_bytes", 1), ("retained_bytes", 1), ("rss_bytes", 1), ("pss_bytes", 1), ("uss_bytes", 1),
    ("swap_bytes", 1), ("smaps_at_ms", 1), ("trims", 1), ("released_bytes", 1), ("last_trim_us", 1),
    ("max_trim_us", 1), ("last_trim_at_ms", 1), ("sample_cost_us", 1), ("worker_cpu_us", 1),
    ("interval_ms", 1), ("smaps_interval_ms", 1), ("releases_by_reason", len(REASONS)),
    ("last_reason", 1), ("last_rss_before", 1), ("last_rss_after", 1), ("policy_checks", 1),
    ("skipped_small", 1), ("skipped_backoff", 1), ("alloc_rate", 1), ("idle", 1),
    ("new_retained", 1), ("min_retained", 1), ("frag_threshold_permille", 1), ("idle_ms", 1),
    ("psi_stall_ms", 1), ("psi_armed", 1), ("limit_metric", 1), ("limit_bytes", 1), ("limit_value", 1),
    ("limit_strikes", 1), ("limit_violations", 1), ("limit_signals", 1), ("cgroup_limit_bytes", 1),
    ("hard_limit", 1), ("refused_allocs", 1), ("py_state", 1), ("py_arenas", 1), ("py_arena_bytes", 1),
    ("py_used_pools", 1), ("py_empty_pools", 1), ("py_empty_bytes", 1), ("py_returned_pools", 1),
    ("py_allocated_bytes", 1), ("py_free_bytes", 1), ("py_measured_at_ms", 1), ("py_released_bytes", 1),
    ("py_released_pools", 1), ("py_steps", 1), ("py_last_hold_us", 1), ("py_max_hold_us", 1),
]
MIN_STATS_OFFSET = 32
M64 = (1 << 64) - 1


def _checksum(words):
    a = 0x9E3779B97F4A7C15
    for x in words[1:]:
        a = (((a << 5) | (a >> 59)) & M64)
        a = (a + x) & M64
    return a


def find(directory, pid):
    """The page file of `pid` of this user in `directory` (MEMTRIM_SHM_DIR: pages are in its
    per-user directory memtrim-EUID, page::dir_name), or None."""
    directory = os.path.join(directory, f"memtrim-{os.geteuid()}")
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for n in names:
        if n.startswith(f"memtrim.{pid}."):
            return os.path.join(directory, n)
    return None


def _stats_offset(raw, header_size, pid):
    for off in range(MIN_STATS_OFFSET, min(header_size - 16, 256), 8):
        n = (header_size - off) // 8
        words = struct.unpack_from(f"<{n}Q", raw, off)
        if words[0] == _checksum(words) and (pid is None or words[1] & 0xFFFFFFFF == pid):
            return off
    return None


def read(path, tries=200):
    """A dict of the page's fields, or None if there is no consistent page. Fields the writer
    does not have are absent."""
    try:
        pid = int(os.path.basename(path).split(".")[1])
    except (IndexError, ValueError):
        pid = None
    for _ in range(tries):
        try:
            with open(path, "rb") as f:
                raw = f.read(4096)
        except OSError:
            return None
        if len(raw) < 64:
            return None
        magic, version, header_size, seq1 = struct.unpack_from("<QIIQ", raw, 0)
        if magic != MAGIC or version != LAYOUT_VERSION or header_size > len(raw):
            return None
        if seq1 & 1:
            time.sleep(0.001)
            continue
        off = _stats_offset(raw, header_size, pid)
        try:
            with open(path, "rb") as f:
                seq2 = struct.unpack("<Q", f.read(24)[16:24])[0]
        except OSError:
            return None
        if off is None or seq1 != seq2:
            time.sleep(0.001)
            continue
        nwords = (header_size - off) // 8
        words = list(struct.unpack_from(f"<{nwords}Q", raw, off))
        out, i = {}, 1
        for name, n in _WORDS:
            if i + n > nwords:
                break
            out[name] = words[i:i + n] if n > 1 else words[i]
            i += n
        out["pid"], out["ppid"] = out["pid_ppid"] & 0xFFFFFFFF, out["pid_ppid"] >> 32
        out["comm"] = struct.pack("<2Q", *out["comm"]).split(b"\0")[0].decode(errors="replace")
        if "releases_by_reason" in out:
            out["releases_by_reason"] = dict(zip(REASONS, out["releases_by_reason"]))
        return out
    return None


class Words:
    """A few words of one page, re-read cheaply: the stats' offset is found once, then each
    `get` is one read of the file (a word the writer updates alone cannot tear; the words of
    one `get` may come from two publications)."""

    def __init__(self, path):
        self.path = path
        self.off = None

    def get(self, *names):
        """The named words (names of single-word fields of _WORDS), or None."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(4096)
        except OSError:
            return None
        if len(raw) < 64:
            return None
        header_size = struct.unpack_from("<I", raw, 12)[0]
        if self.off is None:
            try:
                pid = int(os.path.basename(self.path).split(".")[1])
            except (IndexError, ValueError):
                pid = None
            self.off = _stats_offset(raw, min(header_size, len(raw)), pid)
            if self.off is None:
                return None
        out = []
        for name in names:
            i = _INDEX[name]
            at = self.off + 8 * i
            if at + 8 > header_size:
                return None
            out.append(struct.unpack_from("<Q", raw, at)[0])
        return out


def _index():
    out, i = {}, 1
    for name, n in _WORDS:
        out[name] = i
        i += n
    return out


_INDEX = _index()
