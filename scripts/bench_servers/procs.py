"""What the server benchmarks read of processes in /proc: parents, CPU ticks, PSS."""
import os


def proc_stat(pid):
    """(ppid, utime+stime ticks) of pid, or None."""
    f = _stat_fields(pid)
    return (int(f[1]), int(f[11]) + int(f[12])) if f else None


def cpu_with_reaped(pid):
    """utime+stime+cutime+cstime ticks of pid, or None: its own CPU and that of the children it
    has waited for (a server's master reaps the workers it recycles, so their CPU stays counted)."""
    f = _stat_fields(pid)
    return sum(int(x) for x in f[11:15]) if f else None


def running(pid):
    """Whether pid is a live process (a zombie is not)."""
    f = _stat_fields(pid)
    return f is not None and f[0] != "Z"


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3 on), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()


def machine_busy_ticks():
    """Busy clock ticks of all CPUs since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4]


def children_of(parents):
    """{parent: sorted child pids} for every pid in `parents`, from one walk of /proc."""
    out = {p: [] for p in parents}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[0] in out:
                out[st[0]].append(int(d))
    return {p: sorted(k) for p, k in out.items()}


def children(pid):
    return children_of([pid])[pid]


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
