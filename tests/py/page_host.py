"""A host process for tests/page_cli.rs, driven line by line over stdin/stdout.

Runs under libmemtrim.so (the test preloads it), normally with PYTHONMALLOC=malloc so that
every Python allocation is visible to the library. Prints `ready PID` once, then answers each
command with one line:

  alloc N     hold N more MiB in 1 MiB bytearrays (zeroed, so resident)  -> `ok`
  frag        a fragmented heap: 8192 blocks of ~4 KiB, every 8th kept  -> `ok`
  free        drop everything held, collect                            -> `ok`
  fork N      N forked children that wait until this process exits or
              `reap` is sent, then exit normally (libc exit, so their
              pages are unlinked)                                       -> `forked PID...`
  reap        release the children and wait for them                   -> `ok`
  exec        replace this process with `sleep 300` without the library
              (same pid and start time; the page is left behind, unmapped) (no answer)
  exit        exit normally                                             (no answer)

End of input is `exit`. The children never write on stdout.
"""

import ctypes
import gc
import os
import sys

MiB = 1 << 20
held = []
children = []
release_w = None
libc = ctypes.CDLL(None)


def answer(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def fork(n):
    global release_w
    if release_w is None:
        r, release_w = os.pipe()
        fork.r = r
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(release_w)
            # a little allocation of its own, then wait for the parent
            junk = [bytearray(1000) for _ in range(100)]
            try:
                os.read(fork.r, 1)
            finally:
                del junk
                libc.exit(0)
        pids.append(pid)
    children.extend(pids)
    return pids


def reap():
    global release_w
    if release_w is not None:
        os.close(release_w)
        os.close(fork.r)
        release_w = None
    for pid in children:
        os.waitpid(pid, 0)
    children.clear()


def main():
    answer(f"ready {os.getpid()}")
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "alloc":
            held.extend(bytearray(MiB) for _ in range(int(args[0])))
            answer("ok")
        elif cmd == "frag":
            blocks = [bytearray(4000) for _ in range(8192)]
            held.extend(blocks[::8])
            del blocks
            gc.collect()
            answer("ok")
        elif cmd == "free":
            held.clear()
            gc.collect()
            answer("ok")
        elif cmd == "fork":
            answer("forked " + " ".join(str(p) for p in fork(int(args[0]))))
        elif cmd == "reap":
            reap()
            answer("ok")
        elif cmd == "exec":
            env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
            os.execve("/bin/sleep", ["sleep", "300"], env)
        elif cmd == "exit":
            break
        else:
            answer(f"error unknown command {cmd!r}")
    reap()


if __name__ == "__main__":
    main()
