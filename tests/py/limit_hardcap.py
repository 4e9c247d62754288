"""Allocates past MEMTRIM_HARD_LIMIT, for tests/limits.rs; runs under libmemtrim.so.

    limit_hardcap.py LIMIT_BYTES

1. grows a list by 1 MiB bytes objects (malloc'd, written) until MemoryError, and catches it;
2. frees everything;
3. asks for one block larger than the whole limit (MemoryError expected, caught);
4. allocates half the limit again, checks its contents and frees it: the process goes on.

Then prints one line

    result refused_at_mib=N big_refused=0|1 again_mib=M

and `ready PID`, and waits for `exit` (or the end of input) on stdin so that the test can read
the process's counters; exits 0. Anything unexpected is printed as `error ...`, exit 1.
"""
import gc
import os
import sys

MIB = 1 << 20


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


limit = int(sys.argv[1])
held = []
refused_at = None
try:
    # bounded: well past the limit without a MemoryError is a failure, not an endless loop
    for _ in range(4 * limit // MIB + 64):
        held.append(b"\x01" * MIB)
except MemoryError:
    refused_at = len(held)
if refused_at is None:
    say(f"error no MemoryError after {len(held)} MiB (limit {limit} B)")
    sys.exit(1)
held.clear()
gc.collect()

try:
    big = bytearray(limit + MIB)
    big_refused = 0
    del big
except MemoryError:
    big_refused = 1

again = [bytes([i % 251]) * MIB for i in range(limit // MIB // 2)]
if any(b[0] != i % 251 or b[-1] != i % 251 or len(b) != MIB for i, b in enumerate(again)):
    say("error the blocks allocated after the MemoryError are not what was written")
    sys.exit(1)
again_mib = len(again)
del again
gc.collect()

say(f"result refused_at_mib={refused_at} big_refused={big_refused} again_mib={again_mib}")
say(f"ready {os.getpid()}")
for line in sys.stdin:
    if line.strip() == "exit":
        break
sys.exit(0)
