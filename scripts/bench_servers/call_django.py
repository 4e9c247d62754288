"""Calls djangoapp's WSGI application in this process for each `offset limit` line of stdin (no
server, no socket, no thread): the request work alone, for scripts/bench-request-cost.

    python3 call_django.py N < pages    prints `N BYTES` (the response bytes, a check)
"""
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests", "apps"))
import djangoapp  # noqa: E402

n, total = int(sys.argv[1]), 0
for line in sys.stdin.readlines()[:n]:
    offset, limit = line.split()
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/rows", "QUERY_STRING": f"offset={offset}&limit={limit}",
           "SERVER_NAME": "bench", "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
           "wsgi.errors": sys.stderr, "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True,
           "wsgi.run_once": False}
    status = []
    body = b"".join(djangoapp.application(env, lambda s, h, e=None: status.append(s)))
    if not status[0].startswith("200"):
        sys.exit(f"status {status[0]}")
    total += len(body)
print(n, total)
