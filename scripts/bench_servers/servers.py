"""The servers the benchmarks run (scripts/bench-servers, scripts/bench-soak) and the allocator
configurations they run under: their commands, start-up in a process group of their own until
every worker answers, requests to them, and their stop (the whole group)."""
import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from bench_servers import mallocstats
from bench_servers.apps import APPS, ROOT
from bench_servers.procs import children

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MEMTRIM = os.path.join(ROOT, "target", "release", "memtrim")
WORKERS, THREADS = 3, 4
MEMTRIM_CONFIGS = ("trim-ref", "memtrim", "memtrim-nopy", "memtrim-je", "memtrim-passive")
# every automatic release trigger off: the library counts and publishes, and never releases
NO_TRIGGERS = {"MEMTRIM_IDLE_MS": "0", "MEMTRIM_FRAG_THRESHOLD": "off", "MEMTRIM_PSI_STALL_MS": "0"}
ALL_SERVERS = ["gunicorn", "puma", "datasette"]
PYTHON_SERVERS = ("gunicorn", "datasette")
REQUIREMENTS = os.path.join(ROOT, "scripts", "requirements-bench.txt")
TITLES = {
    "gunicorn": f"gunicorn 23 + Django 5.1 ({WORKERS} gthread workers x {THREADS} threads)",
    "puma": f"puma 5.6 cluster + rack ({WORKERS} workers x {THREADS} threads)",
    "datasette": f"gunicorn 23 + Datasette 0.65 ({WORKERS} uvicorn workers)",
}
PAGE_END = {"gunicorn": b"]}", "puma": b"]}", "datasette": b"]"}
HEALTH = {"gunicorn": "/health", "puma": "/health", "datasette": "/-/versions.json"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read()
        return r.status, body
    finally:
        c.close()


def page_path(server, offset, limit):
    if server == "datasette":
        return f"/rows/page.json?offset={offset}&limit={limit}&_shape=array"
    return f"/rows?offset={offset}&limit={limit}"


def page_ok(server, limit, status, body):
    """Whether a response is the whole page of `limit` rows."""
    return status == 200 and body.rstrip().endswith(PAGE_END[server]) and len(body) > limit * 100


def server_cmd(server, port):
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", mallocstats.CONFIG, "-w", str(WORKERS),
                "-b", f"127.0.0.1:{port}", "--chdir", APPS, "--log-level", "warning"]
    if server == "gunicorn":
        return gunicorn + ["--threads", str(THREADS), "-k", "gthread", "djangoapp:application"]
    if server == "datasette":
        return gunicorn + ["-k", "uvicorn.workers.UvicornWorker", "datasetteapp:app"]
    return [shutil.which("puma") or "puma", "-w", str(WORKERS), "-t", f"{THREADS}:{THREADS}", "-e", "production",
            "-b", f"tcp://127.0.0.1:{port}", os.path.join(APPS, "rackapp.ru")]


def config_env(config, base, shm):
    env = dict(base)
    prefix = []
    if config == "arena2":
        env["MALLOC_ARENA_MAX"] = "2"
    elif config in ("jemalloc", "jemalloc-bg"):
        env["LD_PRELOAD"] = JEMALLOC
        if config == "jemalloc-bg":
            env["MALLOC_CONF"] = "background_thread:true,dirty_decay_ms:1000"
    elif config in MEMTRIM_CONFIGS:
        prefix = [MEMTRIM, "run", "--"]
        env["MEMTRIM_SHM_DIR"] = shm
        if config == "trim-ref":
            env.update(NO_TRIGGERS, MEMTRIM_ARENA_TOPS="0")
        elif config == "memtrim-passive":
            env.update(NO_TRIGGERS)
        elif config == "memtrim-je":
            env["MEMTRIM_ALLOCATOR"] = "jemalloc"
        elif config == "memtrim-nopy":
            env["MEMTRIM_PYMALLOC"] = "0"
    return prefix, env


def _die_with_parent():
    """In the child before exec: SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG),
    so that a benchmark killed outright leaves no master behind (its workers see their parent
    go and exit)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def start(server, port, prefix, env, logf):
    """Starts `server` behind a configuration's command prefix, in its environment (config_env),
    in a session (process group) of its own, output to logf. `memtrim run` execs the server, so
    the returned process is the server's master and the workers are its children. Call it from
    the main thread (see _die_with_parent)."""
    return subprocess.Popen(prefix + server_cmd(server, port), env=env, stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=APPS,
                            preexec_fn=_die_with_parent)


def wait_ready(proc, server, port, logname, limit_s=60):
    """Waits until the master has its WORKERS workers and the server answers its health
    request; raises RuntimeError when the master exits or after limit_s."""
    t_end = time.monotonic() + limit_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{server} exited with {proc.returncode} (log: {logname})")
        if time.monotonic() > t_end:
            raise RuntimeError(f"{server} not ready in {limit_s:g} s (log: {logname})")
        if len(children(proc.pid)) == WORKERS:
            try:
                if get(port, HEALTH[server], timeout=5)[0] == 200:
                    return
            except OSError:
                pass
        time.sleep(0.2)


def stop_server(proc):
    """Ends the server's whole process group: SIGTERM, then SIGKILL to whatever is left of it
    after 10 s (also when the master has gone before its workers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def check_available(servers, configs):
    """Exits with what to install when a server or configuration cannot run here."""
    if any(c in ("jemalloc", "jemalloc-bg") for c in configs) and not os.path.exists(JEMALLOC):
        sys.exit(f"{JEMALLOC} is missing (apt-get install libjemalloc2) or leave out --configs jemalloc")
    if "datasette" in servers:
        try:
            import datasette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            sys.exit(f"datasette is missing: python3 -m pip install -r {REQUIREMENTS}, or leave out --servers datasette")
    if "puma" in servers and not shutil.which("puma"):
        sys.exit("puma is missing (apt-get install puma ruby-rack) or leave out --servers puma")
    if any(c in MEMTRIM_CONFIGS for c in configs) and not os.path.exists(MEMTRIM):
        sys.exit(f"{MEMTRIM} is missing: cargo build --release --workspace")


def versions():
    v = {}
    try:
        from importlib import metadata
        v["gunicorn"] = metadata.version("gunicorn")
        v["django"] = metadata.version("django")
    except Exception:  # noqa: BLE001
        pass
    for name, cmd in (("puma", ["puma", "--version"]), ("ruby", ["ruby", "--version"])):
        try:
            v[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.split()[1 if name == "ruby" else 2]
        except Exception:  # noqa: BLE001
            pass
    for name in ("datasette", "uvicorn"):
        try:
            from importlib import metadata
            v[name] = metadata.version(name)
        except Exception:  # noqa: BLE001
            pass
    v["python"] = sys.version.split()[0]
    v["glibc"] = os.confstr("CS_GNU_LIBC_VERSION")
    return v
