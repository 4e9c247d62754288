"""The apps the server benchmarks run (tests/apps, shared with tests/servers.rs): their data, the
seeded pages every run requests, and an environment free of allocator tuning."""
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPS = os.path.join(ROOT, "tests", "apps")


def work_list(n, seed):
    """n (offset, limit) pages of 500-2000 rows, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        limit = rng.randint(500, 2000)
        out.append((rng.randint(0, 5000 - limit), limit))
    return out


def bench_env():
    """This environment without memtrim's, glibc's or the interpreters' allocator settings, with
    APP_DATA pointing at a fresh copy of the apps' rows (remove it with shutil.rmtree)."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MEMTRIM_") or k.startswith("MALLOC_") or k in ("LD_PRELOAD", "PYTHONMALLOC", "RUBY_GC_HEAP_INIT_SLOTS"))}
    env["APP_DATA"] = tempfile.mkdtemp(prefix="memtrim-bench-data-")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    subprocess.run([sys.executable, os.path.join(APPS, "djangoapp.py"), "init", env["APP_DATA"]], env=env, check=True,
                   capture_output=True)
    return env
