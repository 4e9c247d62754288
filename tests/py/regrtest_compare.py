"""Runs a subset of CPython's own regression suite without and then with libmemtrim.so
preloaded, and requires every test case to end the same way in both runs.

usage: regrtest_compare.py --lib PATH/libmemtrim.so [--python auto|PATH] [--jobs N]
                           [--preload-env NAME=VALUE]... TEST...

Each run is `PYTHON -m test -jN --timeout T --junit-xml FILE TEST...` with no MEMTRIM_ variable
but, in the preloaded runs, those given with --preload-env (MEMTRIM_PYMALLOC_EVERY_MS=10, say);
the JUnit file gives one
result per test case (passed, skipped, failure, error). The runs are compared case by case:
a case that is missing from one run, or ends differently, is a difference. Cases that differ are
run again, alone, once more in each configuration; a difference that does not come back both
times is reported as flaky (printed, not failed on) -- timing tests of test_threading and
test_multiprocessing_fork are known for it on a loaded 2-core machine. A test file with no
results in the baseline run (it crashed or hung there, without the library) is run again, once,
in the baseline; one that crashes in the preloaded run fails the comparison.

Exit status: 0 same results; 1 a difference (or the preloaded run crashed, hung or said
something different at the end); 3 no Python here has the test package with all the TESTs (the
caller decides whether that is a skip or a failure).

With --python auto the first of `python3` on PATH and /usr/bin/python3 whose `test` package has
every TEST is used (pyenv's CPython 3.11.7 here lacks test_multiprocessing_fork; Debian's
python3.11 has it with the package libpython3.11-testsuite).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

RUN_TIMEOUT = 15 * 60  # seconds for one whole run of the suite
MAX_RERUNS = 10  # more differing cases than this are not rerun: all count
TEST_TIMEOUT = 300  # regrtest's per-test-file timeout (faulthandler dumps the stacks, then fails)


def has_tests(python, tests):
    code = (
        "import importlib.util, sys\n"
        "missing = [t for t in sys.argv[1:] if importlib.util.find_spec('test.' + t) is None]\n"
        "import test.libregrtest\n"
        "print(' '.join(missing)); sys.exit(1 if missing else 0)\n"
    )
    try:
        p = subprocess.run([python, "-c", code, *tests], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def pick_python(arg, tests):
    candidates = [arg] if arg != "auto" else [shutil.which("python3") or "python3", "/usr/bin/python3"]
    for c in candidates:
        ok, why = has_tests(c, tests)
        if ok:
            return c
        print(f"regrtest_compare: {c} cannot run {tests}: missing {why or '?'}", flush=True)
    return None


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("MEMTRIM_") or k in ("LD_PRELOAD", "PYTHONMALLOC"):
            del env[k]
    return env


def run_suite(python, tests, jobs, junit, preload, label, match=None):
    """One run; `preload` is None (the baseline) or (library, {name: value} for its environment)."""
    env = clean_env()
    if preload:
        env["LD_PRELOAD"] = preload[0]
        env.update(preload[1])
    cmd = [python, "-m", "test", f"-j{jobs}", f"--timeout={TEST_TIMEOUT}", "--junit-xml", junit]
    if match:
        for m in match:
            cmd += ["-m", m]
    cmd += tests
    settings = "".join(f"{k}={v} " for k, v in (preload[1].items() if preload else ()))
    print(f"regrtest_compare: [{label}] {settings}{' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                           cwd=tempfile.gettempdir())
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = "timeout"
    dt = time.monotonic() - t0
    return rc, out, dt


def results(junit, tests=()):
    """({case name: outcome}, {case name: test file}) from a JUnit file of regrtest.

    An outcome is 'passed', 'skipped', 'failure: msg' or 'error: msg'; a name that occurs more
    than once (doctests) gets its outcomes joined with ' | '. Each <testsuite> is one test file,
    recognised by a case named test.TEST.* or, for packages like ctypes and json, NAME.*."""
    res, where = {}, {}
    if not os.path.exists(junit):
        return res, where
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError as e:
        print(f"regrtest_compare: cannot parse {junit}: {e}", flush=True)
        return res, where
    for suite in root.iter("testsuite"):
        cases = list(suite.iter("testcase"))
        names = [tc.get("name") or "" for tc in cases]
        owner = None
        for t in tests:
            short = t[len("test_"):] if t.startswith("test_") else t
            if any(n.startswith(f"test.{t}.") or n.startswith(f"{short}.") for n in names):
                owner = t
                break
        for tc, name in zip(cases, names):
            outcome = "passed"
            for ch in tc:
                if ch.tag == "skipped":
                    outcome = "skipped"
                elif ch.tag in ("failure", "error"):
                    outcome = f"{ch.tag}: {(ch.get('message') or '').strip()[:200]}"
                    break
            res[name] = f"{res[name]} | {outcome}" if name in res else outcome
            if owner:
                where[name] = owner
    return res, where


def where_b_files(where, base):
    """The test files with at least one case in the baseline's results."""
    return {where[n] for n in base if n in where}


def kind(outcome):
    """An outcome without failure messages, which may differ from run to run."""
    return " | ".join(o.split(":")[0] for o in outcome.split(" | "))


def summary_lines(out):
    """regrtest's per-file result lines and its verdict, without timestamps and load averages."""
    keep = []
    for line in out.splitlines():
        if "] test_" in line:
            part = line.split("] ", 1)[1]
            # "test_os passed (1 min 3 sec)" -> "test_os passed"
            keep.append(part.split(" (")[0].strip())
        elif line.startswith("Tests result:") or line.startswith("== Tests result"):
            keep.append(line.strip("= ").strip())
    return keep


def interesting(out, limit=150):
    """The lines of regrtest's output that tell what went wrong: timeouts with the stacks
    faulthandler dumped, crashes, failed tests and their tracebacks."""
    keep, follow = [], 0
    for line in out.splitlines():
        if ("Timeout (" in line or "crashed" in line or line.startswith(("FAIL:", "ERROR:"))
                or " failed" in line or "Traceback" in line or "Fatal Python error" in line):
            follow = 40
        if follow:
            keep.append(line)
            follow -= 1
        if len(keep) >= limit:
            keep.append("...")
            break
    return "\n".join(keep)


def diff(a, b):
    out = []
    for name in sorted(set(a) | set(b)):
        ra, rb = a.get(name, "missing"), b.get(name, "missing")
        if kind(ra) != kind(rb):
            out.append((name, ra, rb))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--python", default="auto")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--preload-env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("tests", nargs="+")
    a = ap.parse_args()
    preload = (a.lib, dict(kv.split("=", 1) for kv in a.preload_env))

    python = pick_python(a.python, a.tests)
    if python is None:
        print("regrtest_compare: MISSING: no python3 here has CPython's test package with all of "
              f"{a.tests} (on Debian: apt-get install libpython3.11-testsuite)", flush=True)
        return 3
    ver = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0], sys.executable)"],
                         capture_output=True, text=True).stdout.strip()
    print(f"regrtest_compare: python {ver}", flush=True)

    work = tempfile.mkdtemp(prefix="memtrim-regrtest-")
    base_xml, pre_xml = os.path.join(work, "base.xml"), os.path.join(work, "preloaded.xml")

    rc_b, out_b, dt_b = run_suite(python, a.tests, a.jobs, base_xml, None, "baseline")
    print(f"regrtest_compare: baseline exit {rc_b} in {dt_b:.0f} s", flush=True)
    rc_p, out_p, dt_p = run_suite(python, a.tests, a.jobs, pre_xml, preload, "preloaded")
    print(f"regrtest_compare: preloaded exit {rc_p} in {dt_p:.0f} s", flush=True)

    (base, where), (pre, where_p) = results(base_xml, a.tests), results(pre_xml, a.tests)
    where.update({k: v for k, v in where_p.items() if k not in where})
    lines_b, lines_p = summary_lines(out_b), summary_lines(out_p)
    print("regrtest_compare: per-file results, baseline | preloaded:", flush=True)
    for i in range(max(len(lines_b), len(lines_p))):
        lb = lines_b[i] if i < len(lines_b) else ""
        lp = lines_p[i] if i < len(lines_p) else ""
        print(f"    {lb:<45} | {lp}", flush=True)
    n_out = {k: sum(1 for v in base.values() if kind(v) == k) for k in ("passed", "skipped", "failure", "error")}
    p_out = {k: sum(1 for v in pre.values() if kind(v) == k) for k in ("passed", "skipped", "failure", "error")}
    print(f"regrtest_compare: baseline {len(base)} cases {n_out}; preloaded {len(pre)} cases {p_out}", flush=True)

    failed = False
    if not base:
        print("regrtest_compare: FAIL: the baseline run produced no JUnit results:\n" + out_b[-4000:], flush=True)
        return 1
    if rc_p == "timeout" or not pre:
        print(f"regrtest_compare: FAIL: the preloaded run {'timed out' if rc_p == 'timeout' else 'produced no results'}; "
              "its output ends:\n" + out_p[-6000:], flush=True)
        return 1

    # A test file that crashed or hung in the baseline (the reference, without the library) is
    # run again once there: CPython's own flake must not count against the library. A crash of
    # the preloaded run is never rerun.
    crashed = sorted({m for m in where.values() if m not in where_b_files(where, base)})
    reruns_ok = True
    for module in crashed:
        xb = os.path.join(work, f"base-{module}.xml")
        rc, _, dt = run_suite(python, [module], 1, xb, None, f"baseline rerun of {module}, which crashed")
        again, _ = results(xb, [module])
        print(f"regrtest_compare: baseline rerun of {module}: exit {rc} in {dt:.0f} s, {len(again)} cases", flush=True)
        base.update(again)
        reruns_ok &= rc == 0
    if crashed and reruns_ok and not any(k in v for v in base.values() for k in ("failure", "error")):
        rc_b = 0  # the baseline failed by those files alone, which pass when run again

    diffs = diff(base, pre)
    real = []
    for name, rb, rp in diffs[:40]:
        print(f"regrtest_compare: differs: {name}: baseline {rb!r}, preloaded {rp!r}", flush=True)
    if len(diffs) > MAX_RERUNS:
        real = diffs
    elif diffs:
        # run each differing case alone once more in both configurations
        for name, rb, rp in diffs:
            module = where.get(name)
            if module is None:
                real.append((name, rb, rp))
                continue
            pattern = name
            xb, xp = os.path.join(work, "rb.xml"), os.path.join(work, "rp.xml")
            for f in (xb, xp):
                if os.path.exists(f):
                    os.unlink(f)
            run_suite(python, [module], 1, xb, None, "baseline rerun", [pattern])
            run_suite(python, [module], 1, xp, preload, "preloaded rerun", [pattern])
            rb2, rp2 = results(xb)[0].get(name, "missing"), results(xp)[0].get(name, "missing")
            if diff({name: rb2}, {name: rp2}):
                real.append((name, rb, rp))
                print(f"regrtest_compare: differs again when rerun alone: {name}", flush=True)
            else:
                print(f"regrtest_compare: flaky, not counted: {name} (rerun: baseline {rb2!r}, preloaded {rp2!r})",
                      flush=True)
    if real:
        failed = True
        print(f"regrtest_compare: FAIL: {len(real)} test cases end differently with the library preloaded:", flush=True)
        for name, rb, rp in real[:40]:
            print(f"    {name}: without {rb!r}, with {rp!r}", flush=True)
        if len(real) > 40:
            print(f"    ... and {len(real) - 40} more", flush=True)
    if (rc_b == 0) != (rc_p == 0) and not diffs:
        failed = True
        print(f"regrtest_compare: FAIL: same cases but exit {rc_b} without the library, {rc_p} with it; "
              "preloaded output ends:\n" + out_p[-6000:], flush=True)
    if failed:
        print("regrtest_compare: what the preloaded run said about it:\n" + interesting(out_p), flush=True)
        print("regrtest_compare: preloaded run output ends:\n" + out_p[-3000:], flush=True)
        return 1
    print(f"regrtest_compare: PASS: {len(pre)} test cases end the same with and without the library "
          f"({dt_b:.0f} s + {dt_p:.0f} s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
