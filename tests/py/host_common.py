"""What the test hosts driven line by line over stdin/stdout share (release_host.py for
tests/release.rs, limit_host.py for tests/limits.rs): they print `ready PID` once, then answer
each command with one line; end of input is `exit`; nothing else is written on stdout.

Commands every host has:

  frag N SIZE KEEP  N bytearrays of SIZE bytes (zeroed, so resident), then drop all but one in
                    KEEP: a heap fragmented the way a server's is between requests, which
                    glibc keeps resident although little of it is live                 -> `ok`
  drop              drop everything held                                              -> `ok`
  exit              exit normally                                                     (no answer)
"""
import gc
import os
import sys

# what the commands keep alive: `drop` lets all of it go
held = []
blocks = []


def answer(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def frag(n, size, keep):
    fresh = [bytearray(size) for _ in range(n)]
    held.extend(fresh[::keep])
    del fresh


def serve(commands, lines=None):
    """Prints `ready PID`, then runs the commands read from stdin (or from `lines`, an iterable
    of them): the common ones and those of `commands` (name -> function of the command's words
    after the name, returning its answer)."""
    answer(f"ready {os.getpid()}")
    for line in sys.stdin if lines is None else lines:
        words = line.split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "frag":
            frag(*(int(w) for w in words[1:4]))
            answer("ok")
        elif cmd == "drop":
            held.clear()
            blocks.clear()
            gc.collect()
            answer("ok")
        elif cmd == "exit":
            break
        elif cmd in commands:
            answer(commands[cmd](words[1:]))
        else:
            answer(f"error unknown command {cmd!r}")
