"""A process ends when its last thread ends, also under libmemtrim.so.

POSIX: when the last thread of a process exits (pthread_exit, or returning from its start
routine), the process exits with status 0. The library's own worker thread must not keep such a
process alive (CPython's test_threading.ThreadJoinOnShutdown.test_3_join_in_forked_from_thread
does exactly this and hangs otherwise).

Two cases, each in a child process that the parent waits for at most WAIT seconds (then kills
it with SIGKILL, prints its threads and fails):
  fork-from-thread: a non-main thread forks; in the child that thread is the only host thread,
    starts and joins another thread, and returns, so the child's last host thread ends with
    pthread_exit.
  main-pthread-exit: the main thread calls pthread_exit() (through ctypes) while another thread
    sleeps 0.3 s and then ends.
Prints "PASS" and exits 0 when both children exit with status 0 in time.
"""

import ctypes
import os
import signal
import sys
import threading
import time

WAIT = 15.0


def threads_of(pid):
    out = []
    try:
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            out.append(f"{tid} {comm} {state}")
    except OSError:
        pass
    return out


def reap(pid, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            code = os.waitstatus_to_exitcode(st)
            return None if code == 0 else f"{what}: child exited with {code}"
        time.sleep(0.02)
    live = threads_of(pid)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return f"{what}: child {pid} still alive {WAIT:.0f} s after its last host thread ended; its threads: {live}"


def fork_from_thread():
    result = []

    def worker():
        pid = os.fork()
        if pid != 0:
            result.append(reap(pid, "fork-from-thread"))
            return
        # child: this thread is the only one of the host
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        # returning ends this thread (the child's only host thread) with pthread_exit

    w = threading.Thread(target=worker)
    w.start()
    w.join()
    return result[0] if result else "fork-from-thread: no result"


def main_pthread_exit():
    pid = os.fork()
    if pid == 0:
        t = threading.Thread(target=time.sleep, args=(0.3,))
        t.start()
        ctypes.CDLL(None).pthread_exit(None)
        os._exit(3)  # not reached
    return reap(pid, "main-pthread-exit")


def main():
    errors = [e for e in (fork_from_thread(), main_pthread_exit()) if e]
    for e in errors:
        print("FAIL:", e, flush=True)
    if errors:
        sys.exit(1)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
