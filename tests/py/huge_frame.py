"""A frame with 70000 locals: on 3.11+ its data stack chunk is exactly 1 MiB, the arena size,
and comes from the arena allocator. While it is live, pools are churned and trimmed; its locals
must read back intact. Prints `intact N` or `corrupt ...`."""
import threading, time
N = 70000
body = "".join(f"    v{i} = {i}\n" for i in range(N))
check = "    return [" + ",".join(f"v{i}" for i in range(N)) + "]\n"
src = "def f(churn):\n" + body + "    churn()\n" + check
ns = {}
exec(src, ns)
threading.Thread(target=lambda: [sum(range(1000)) for _ in iter(int, 1)], daemon=True).start()
def churn():
    end = time.time() + 3
    while time.time() < end:
        keep = [[i] for i in range(50000)][::500]
got = ns["f"](churn)
bad = [i for i, v in enumerate(got) if v != i]
print("intact", N) if not bad else print("corrupt", bad[:5])
