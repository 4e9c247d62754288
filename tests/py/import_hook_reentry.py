"""A host whose own __import__ override holds a (non-reentrant) lock while its body runs.
Without memtrim this never deadlocks: only the main thread imports. If anything makes the
main thread import from inside that body (a pending call that imports), it waits on its own
lock forever. Prints `done` and exits 0 when it finishes."""
import builtins
import json  # cached before the hook: the loop's imports never nest
import sys
import threading
import time

lock = threading.Lock()
seen = []
original = builtins.__import__


def guarded_import(name, *args, **kwargs):
    with lock:
        for _ in range(20000):  # bytecode inside the locked region (a safe point for pending calls)
            pass
        if name == "atexit":
            seen.append(name)
        return original(name, *args, **kwargs)


builtins.__import__ = guarded_import
if "--thread" in sys.argv:
    # a second Python thread: its GIL requests make the main thread look at pending calls
    threading.Thread(target=lambda: [sum(range(1000)) for _ in iter(int, 1)], daemon=True).start()
junk = []
end = time.time() + 3
while time.time() < end:
    junk = [object() for _ in range(200)]  # pools emptied and filled again
    import json  # goes through guarded_import
builtins.__import__ = original
print("done", "atexit imported through the host's hook" if seen else "")
