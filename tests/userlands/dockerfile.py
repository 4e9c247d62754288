"""Runs one of README.md's Dockerfile snippets in this root filesystem, as `docker build` and
`docker run` would in the image (tests/userlands/check-release): COPY from target/dist, each RUN
line as written, ENV, then CMD from the app directory. A CMD that serves (gunicorn) binds
127.0.0.1:PORT instead of 0.0.0.0:8000 and is asked for 20 pages, then stopped; another must
exit 0.   usage: dockerfile.py README NAME DIST APPDIR [PORT]"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

readme, name, dist, appdir = sys.argv[1:5]
port = sys.argv[5] if len(sys.argv) > 5 else None
text = open(readme).read()
m = re.search(r"<!-- dockerfile:%s -->\n```dockerfile\n(.*?)```" % re.escape(name), text, re.S)
if not m:
    sys.exit("README.md has no dockerfile:%s snippet" % name)
env = dict(os.environ)
cmd = None
for line in m.group(1).splitlines():
    word, _, rest = line.partition(" ")
    if word == "COPY":
        src, dst = rest.split()
        shutil.copy(os.path.join(dist, src), dst)
    elif word == "RUN":
        subprocess.run(["sh", "-ec", rest], env=env, check=True, stdout=subprocess.DEVNULL)
    elif word == "ENV":
        key, _, value = rest.partition("=")
        env[key] = os.path.expandvars(value.replace("$PATH", env.get("PATH", "")))
    elif word == "CMD":
        cmd = json.loads(rest)
if port:
    cmd = [a.replace("0.0.0.0:8000", "127.0.0.1:" + port) for a in cmd]
    server = subprocess.Popen(cmd, cwd=appdir, env=env)
    try:
        url = "http://127.0.0.1:%s/" % port
        deadline = time.time() + 60
        served = 0
        while served < 20:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    served += r.status == 200
            except OSError:
                if time.time() > deadline:
                    sys.exit("%s did not serve" % " ".join(cmd))
                time.sleep(0.2)
        libs = [l for l in open("/proc/%d/maps" % server.pid) if "libmemtrim.so" in l]
        if not libs:
            sys.exit("the server runs without libmemtrim.so")
        print("%s: served 20 pages under %s" % (" ".join(cmd), libs[0].split()[-1]))
    finally:
        server.terminate()
        server.wait(timeout=30)
else:
    rc = subprocess.run(cmd, cwd=appdir, env=env).returncode
    if rc:
        sys.exit("%s: exit %d" % (" ".join(cmd), rc))
    print("%s: exit 0" % " ".join(cmd))
