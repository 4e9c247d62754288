"""A master for tests/limit_fleet.rs: `limit_siblings.py N MB GROW_AT` forks N workers that all,
GROW_AT seconds after the fork, hold MB MiB (1 MiB blocks, written so they are resident) and
then wait. A worker prints `signal PID UNIX_MS` on SIGTERM and exits 0, as a server worker would.
The master prints `worker PID` for each, then `ready PID`, and kills its workers and exits when
its stdin ends."""
import os
import signal
import sys
import time

n, mb, grow_at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
start = time.time()
workers = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        def on_term(signum, frame):
            sys.stdout.write(f"signal {os.getpid()} {int(time.time() * 1000)}\n")
            sys.stdout.flush()
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)
        time.sleep(max(0.0, start + grow_at - time.time()))
        held = [b"\x01" * (1 << 20) for _ in range(mb)]
        while True:
            time.sleep(0.05)
    workers.append(pid)
for pid in workers:
    print(f"worker {pid}", flush=True)
print(f"ready {os.getpid()}", flush=True)
sys.stdin.read()
for pid in workers:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass
