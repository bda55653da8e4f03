"""The one WSGI application every benchmarked server runs.

Routes (PATH_INFO):

- ``/``            14 bytes of text: the ``hello`` scenario and the proxy backend.
- ``/echo``        the request body sent back: ``echo-16k``.
- ``/sleep``       100 ms of ``time.sleep`` then hello: ``sleep-100ms``.
- ``/upload``      reads the body in 64 KiB pieces and answers its length: ``upload-200m``.
- ``/static/NAME`` a file from ``$BENCH_STATIC``: only for servers without a file
  server of their own, so that ``sleep-100ms`` can measure a fast route next to
  the slow one on every server.

Plain WSGI with no framework, so the numbers show the servers, not a framework.
"""

import os
import time

HELLO = b"Hello, world!\n"
CHUNK = 65536
STATIC = os.environ.get("BENCH_STATIC", "")


def app(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    if path == "/echo":
        body = environ["wsgi.input"].read(_length(environ))
        return _answer(start_response, body, "application/octet-stream")
    if path == "/sleep":
        time.sleep(0.1)
        return _answer(start_response, HELLO)
    if path == "/upload":
        return _answer(start_response, str(_drain(environ)).encode())
    if path.startswith("/static/") and STATIC:
        name = os.path.basename(path)
        try:
            with open(os.path.join(STATIC, name), "rb") as file:
                body = file.read()
        except OSError:
            return _answer(start_response, b"not found\n", status="404 Not Found")
        return _answer(start_response, body, "application/octet-stream")
    return _answer(start_response, HELLO)


def _length(environ) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _drain(environ) -> int:
    """Read the whole body without keeping it: what a streaming upload handler does."""
    stream, left, total = environ["wsgi.input"], _length(environ), 0
    while left > 0:
        data = stream.read(min(CHUNK, left))
        if not data:
            break
        total += len(data)
        left -= len(data)
    return total


def _answer(start_response, body: bytes, content_type="text/plain", status="200 OK"):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
