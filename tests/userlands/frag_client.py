"""Sends N requests to the gunicorn of tests/userlands/check-release, one at a time, and checks
that none failed and that both workers released memory meanwhile (their pages, read with the
venv's memtrim).   usage: frag_client.py PORT N MASTER_PID"""
import json
import subprocess
import sys
import time
import urllib.request

port, n, master = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
url = "http://127.0.0.1:%d/" % port
deadline = time.time() + 60
while True:
    try:
        urllib.request.urlopen(url, timeout=5).read()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("gunicorn did not answer in 60 s")
        time.sleep(0.2)

failed = 0
pids = set()
for _ in range(n):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            if r.status != 200 or not body.startswith("pid "):
                failed += 1
            else:
                pids.add(int(body.split()[1]))
    except OSError as e:
        failed += 1
        print("request failed:", e)


def children(pid):
    out = []
    for line in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split():
        out.append(int(line))
    return out


releases = {}
for pid in children(master):
    st = subprocess.run(["venv/bin/memtrim", "stat", str(pid), "--json"], capture_output=True, text=True)
    if st.returncode == 0:
        releases[pid] = json.loads(st.stdout)["trims"]
print("served by", sorted(pids), "releases per worker", releases)
if failed or len(releases) != 2 or min(releases.values()) < 1:
    sys.exit("%d requests, %d failed; releases per worker %s" % (n, failed, releases))
print("%d requests, 0 failed, while the 2 workers released %s times" % (n, "+".join(str(v) for v in releases.values())))
