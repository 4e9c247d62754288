"""The smallest WSGI app, for tests/page_cli.rs: a gunicorn master and its forked workers under
libmemtrim.so, each with its own stats page."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
