"""A WSGI app that fragments its worker's heap on every request (tests/userlands/check-release):
2000 blocks of 4 KiB, one in 50 kept in a bounded queue, the rest dropped."""
import collections
import os

kept = collections.deque(maxlen=4000)


def app(environ, start_response):
    blocks = [bytearray(4096) for _ in range(2000)]
    kept.extend(blocks[::50])
    del blocks
    body = ("pid %d kept %d\n" % (os.getpid(), len(kept))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
