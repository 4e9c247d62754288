"""CPython as a host of libmemtrim.so: C extension modules and shared libraries with TLS are
dlopen'ed from several threads at once while other threads allocate (docs/DESIGN.md, trap 3).

The parent runs ROUNDS fresh interpreters (each inherits LD_PRELOAD), because a module is
dlopen'ed only once per process. In each child:
  - 6 importer threads wait on one barrier, then each imports its share of ~45 C extension
    modules (json, decimal, sqlite3, ssl, hashlib, ctypes, ...), and uses each at once from
    that thread (so the module's and its libraries' thread-local data is touched first there);
  - 3 churn threads allocate the whole time: regcomp()/regfree() of a big regex through ctypes
    (many mallocs in C with the GIL released, so they run while an importer holds the GIL
    inside dlopen) and bytes objects of 16 B..64 KiB;
  - the importers also dlopen up to 25 more installed libraries that have TLS, so that the
    number of TLS modules outgrows the DTV that glibc gave each thread;
  - then every thread, including threads started before the dlopens, uses the modules whose
    libraries have TLS: _uuid (libuuid's generator state is __thread), libstdc++'s
    __cxa_get_globals and libgomp's omp_get_thread_num through ctypes (both __thread). A thread
    that first touches dynamic TLS after a dlopen makes glibc allocate its block with malloc
    from inside __tls_get_addr;
  - a forked grandchild does the same again (fork while threads hold the allocator);
  - results are checked against values computed without threads.
The child prints one line "child ok <digest>" and the parent checks that all ROUNDS digests
are equal. Exit status non-zero on any failure, hang (timeout) or crash.
"""

import ctypes
import importlib
import os
import subprocess
import sys
import threading
import time

ROUNDS = 8
CHILD_TIMEOUT = 120

MODULES = [
    "json", "_json", "decimal", "_decimal", "sqlite3", "_sqlite3", "ssl", "_ssl", "hashlib",
    "_hashlib", "ctypes", "_ctypes", "array", "zlib", "bz2", "_bz2", "lzma", "_lzma", "_csv",
    "_pickle", "_datetime", "pyexpat", "xml.etree.ElementTree", "_elementtree", "_socket",
    "select", "mmap", "_struct", "_random", "_bisect", "_heapq", "math", "cmath", "unicodedata",
    "_multibytecodec", "_codecs_jp", "_codecs_cn", "_codecs_kr", "_uuid", "_posixsubprocess",
    "fcntl", "grp", "termios", "resource", "_queue", "_asyncio", "_blake2", "_sha3", "_md5",
    "_sha1", "_sha256", "_sha512", "_zoneinfo", "_statistics", "binascii", "_contextvars",
    "_lsprof", "_opcode", "_multiprocessing", "_posixshmem", "_dbm", "_gdbm", "_crypt", "readline",
    "_curses", "_ctypes_test", "_testcapi", "_xxsubinterpreters", "_uuid",
]

# libraries with a PT_TLS segment, loaded through ctypes, and a function that touches it
TLS_LIBS = [
    ("libstdc++.so.6", "__cxa_get_globals"),
    ("libgomp.so.1", "omp_get_thread_num"),
]

# more libraries with a PT_TLS segment, dlopen'ed (those installed) so that the TLS module ids
# outgrow a thread's initial DTV (glibc resizes it, with malloc, on the next TLS access)
MORE_TLS_LIBS = (
    "libuuid.so.1 libblkid.so.1 libmount.so.1 libsmartcols.so.1 libfdisk.so.1 libcom_err.so.2 "
    "libelf.so.1 libdw.so.1 libsystemd.so.0 libudev.so.1 libgdbm.so.6 libnsl.so.2 libjson-c.so.5 "
    "libmpfr.so.6 libp11-kit.so.0 libgnutls.so.30 libjq.so.1 libnuma.so.1 libproc2.so.0 "
    "libcap-ng.so.0 libunwind.so.8 libsodium.so.23 libjpeg.so.62 libasound.so.2 libpixman-1.so.0"
).split()


def use(name, mod):
    """Uses a module a little; returns a deterministic string."""
    if name == "json":
        return mod.dumps({"a": [1, 2.5, "x" * 100], "b": None}, sort_keys=True)
    if name == "decimal":
        with mod.localcontext() as ctx:
            ctx.prec = 50
            return str(mod.Decimal(1) / mod.Decimal(7))
    if name == "sqlite3":
        con = mod.connect(":memory:")
        con.execute("create table t(x)")
        con.executemany("insert into t values (?)", [(i,) for i in range(1000)])
        r = con.execute("select sum(x), group_concat(x) from t").fetchone()
        con.close()
        return f"{r[0]}:{len(r[1])}"
    if name == "ssl":
        ctx = mod.create_default_context()
        return f"{ctx.verify_mode}"
    if name == "hashlib":
        return mod.sha256(b"memtrim" * 1000).hexdigest() + mod.md5(b"x" * 5000).hexdigest()
    if name == "ctypes":
        buf = mod.create_string_buffer(b"memtrim", 100)
        return buf.value.decode()
    if name == "zlib":
        return str(len(mod.compress(b"abc" * 10000)))
    if name == "bz2":
        return str(len(mod.compress(b"abc" * 10000)))
    if name == "lzma":
        return str(len(mod.decompress(mod.compress(b"abc" * 10000))))
    if name == "xml.etree.ElementTree":
        root = mod.fromstring("<a>" + "<b x='1'>t</b>" * 200 + "</a>")
        return str(len(root))
    if name == "unicodedata":
        return mod.normalize("NFKD", "\u00e9\ufb01" * 50)[:10]
    if name == "_codecs_jp":
        return "\u3042\u3044".encode("shift_jis").hex()
    if name == "_uuid":
        import uuid
        return str(uuid.uuid1().version)
    return "imported"



def child():
    errors = []
    results = {}
    lock = threading.Lock()
    stop = threading.Event()
    importers = 6
    start = threading.Barrier(importers + 3 + 1)
    after_imports = threading.Barrier(importers + 3 + 1)
    tls = []
    more = []
    done = []

    libc = ctypes.CDLL(None, use_errno=True)
    # regcomp allocates many blocks in C with the GIL released (ctypes drops it for the call),
    # so these mallocs really run while an importer holds the GIL inside dlopen
    pattern = b"(" + b"|".join(b"w%dx[a-z]{1,%d}" % (i, 1 + i % 7) for i in range(40)) + b")+[0-9]{2,9}$"

    def churn(seed):
        start.wait()
        keep = []
        x = seed
        regex = ctypes.create_string_buffer(256)  # >= sizeof(regex_t)
        while not stop.is_set():
            rc = libc.regcomp(regex, pattern, 1)  # REG_EXTENDED
            if rc != 0:
                with lock:
                    errors.append(f"regcomp failed: {rc}")
                break
            libc.regfree(regex)
            for _ in range(8):
                x = (x * 1103515245 + 12345) & 0x7FFFFFFF
                keep.append(bytes(16 + x % 65536))
                if len(keep) > 64:
                    del keep[x % len(keep)]
        after_imports.wait()
        touch_tls("churn")

    def touch_tls(who):
        try:
            import uuid
            for _ in range(3):
                if uuid.uuid1().version != 1:
                    raise AssertionError("uuid1 version")
            for lib, fn in tls:
                getattr(lib, fn)()
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"{who}: TLS use: {e!r}")

    def importer(idx):
        start.wait()
        for i, name in enumerate(MODULES):
            if i % importers != idx:
                continue
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue  # an optional module this Python was built without
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"import {name}: {e!r}")
                continue
            try:
                r = use(name, mod)
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(f"use {name}: {e!r}")
                continue
            with lock:
                results[name] = r
        # the ctypes libraries with TLS are dlopen'ed by two of the importers
        if idx < len(TLS_LIBS):
            lib, fn = TLS_LIBS[idx]
            try:
                h = ctypes.CDLL(lib)
                f = getattr(h, fn)
                f.restype = ctypes.c_void_p
                f()
                with lock:
                    tls.append((h, fn))
            except OSError:
                pass  # not installed
        for i, name in enumerate(MORE_TLS_LIBS):
            if i % importers == idx:
                try:
                    h = ctypes.CDLL(name)
                    with lock:
                        more.append(h)
                except OSError:
                    pass  # not installed
        with lock:
            done.append(idx)
        after_imports.wait()
        touch_tls(f"importer {idx}")

    threads = [threading.Thread(target=churn, args=(i + 1,)) for i in range(3)]
    threads += [threading.Thread(target=importer, args=(i,)) for i in range(importers)]
    for t in threads:
        t.start()
    start.wait()
    # the churn threads allocate until every importer is done
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(done) < importers:
        time.sleep(0.01)
    stop.set()
    after_imports.wait()
    touch_tls("main")
    for t in threads:
        t.join(60)
        if t.is_alive():
            errors.append("a thread did not finish in 60 s")

    # fork with the modules loaded; the grandchild touches TLS from new threads again
    import hashlib
    want = hashlib.sha256(b"after fork").hexdigest()
    pid = os.fork()
    if pid == 0:
        ok = True
        try:
            ts = [threading.Thread(target=touch_tls, args=(f"forked {i}",)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            ok = not errors and hashlib.sha256(b"after fork").hexdigest() == want
            import json
            ok = ok and json.loads(json.dumps(list(range(1000)))) == list(range(1000))
        except BaseException:  # noqa: BLE001
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        errors.append(f"forked grandchild failed: exit {os.waitstatus_to_exitcode(status)}")

    # the same uses, single-threaded, must give the same results
    for name, r in sorted(results.items()):
        if name == "_uuid" or r == "imported":
            continue
        again = use(name, importlib.import_module(name))
        if again != r:
            errors.append(f"{name}: threaded result {r!r} != {again!r}")
    if len(results) < 40:
        errors.append(f"only {len(results)} modules imported: {sorted(results)}")
    if errors:
        for e in errors:
            print("FAIL:", e, flush=True)
        sys.exit(1)
    digest = hashlib.sha256(repr(sorted(results.items())).encode()).hexdigest()[:16]
    print(f"child ok {digest} modules={len(results)} tls_libs={len(tls)}+{len(more)}", flush=True)


def parent():
    digests = set()
    for r in range(ROUNDS):
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"],
                               capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            print(f"FAIL: round {r}: child hung for {CHILD_TIMEOUT} s; output: {e.stdout!r} {e.stderr!r}")
            return 1
        out = p.stdout.strip()
        print(f"round {r}: exit {p.returncode} in {time.monotonic() - t0:.1f} s: {out}", flush=True)
        if p.returncode != 0 or not out.startswith("child ok"):
            print(f"FAIL: round {r}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}", flush=True)
            return 1
        if p.stderr.strip():
            print(f"FAIL: round {r}: the child wrote on stderr: {p.stderr}", flush=True)
            return 1
        digests.add(out.split()[2])
    if len(digests) != 1:
        print(f"FAIL: rounds disagree: {digests}")
        return 1
    print("PASS", flush=True)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        sys.exit(parent())
