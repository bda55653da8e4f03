"""Small hand-written WSGI apps for the server's edge cases, each behind wsgiref.validate.

Query parameters steer them (``?s=1.5`` to sleep, ``?marker=/path`` for a
file written when the server calls ``close()``), so one server serves all tests.
"""

import json
import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def _query(environ) -> dict:
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _text(start_response, body: bytes, status="200 OK", headers=()):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *headers])
    return [body]


@validator
def environ_app(environ, start_response):
    """The str-valued CGI keys of the environ as JSON, plus the body length read."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    shown = {k: v for k, v in environ.items() if isinstance(v, str)}
    shown["body_length"] = len(body)
    shown["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    shown["wsgi.input_terminated"] = environ["wsgi.input_terminated"]
    return _text(start_response, json.dumps(shown).encode())


@validator
def sleep_app(environ, start_response):
    seconds = float(_query(environ).get("s", "1"))
    sleepy_stuck_here(seconds)
    return _text(start_response, b"slept")


def sleepy_stuck_here(seconds: float) -> None:
    """A distinctive frame name for the deadline's stack dump."""
    time.sleep(seconds)


class _Endless:
    """Yields chunks every ``gap`` seconds until closed; close() writes a marker file."""

    def __init__(self, marker: str, gap: float, size: int):
        self.marker, self.gap, self.chunk = marker, gap, b"x" * size

    def __iter__(self):
        return self

    def __next__(self):
        if self.gap:
            time.sleep(self.gap)
        return self.chunk

    def close(self):
        with open(self.marker, "w") as handle:
            handle.write("closed")


@validator
def endless_app(environ, start_response):
    query = _query(environ)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _Endless(query["marker"], float(query.get("gap", "0.05")), int(query.get("size", "100")))


@validator
def big_app(environ, start_response):
    """``?mb=N`` MiB in 64 KiB chunks, with a Content-Length."""
    total = int(_query(environ).get("mb", "1")) << 20
    chunk = b"y" * 65536
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))])
    return (chunk for _ in range(total // len(chunk)))


@validator
def upload_app(environ, start_response):
    """Reads the body in 64 KiB pieces and answers its size, like a file upload handler."""
    stream, total = environ["wsgi.input"], 0
    while True:
        piece = stream.read(65536)
        if not piece:
            break
        total += len(piece)
    return _text(start_response, str(total).encode())


@validator
def linger_app(environ, start_response):
    """The whole body (by its Content-Length) at once, then ``?s=`` seconds before the app ends."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    yield b"whole"
    time.sleep(float(_query(environ).get("s", "0.5")))


def stream_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (f"part {i};".encode() for i in range(5))


@validator
def fail_app(environ, start_response):
    """``?when=before``: raise before start_response; ``after``: after the first chunk."""
    if _query(environ).get("when") == "after":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _fail_later()
    raise RuntimeError("boom before headers")


def _fail_later():
    yield b"first chunk;"
    raise RuntimeError("boom after headers")


@validator
def errors_app(environ, start_response):
    environ["wsgi.errors"].write("a message for wsgi.errors\n")
    return _text(start_response, b"logged")


@validator
def headers_app(environ, start_response):
    """Sets its own Server and Date headers, and two cookies."""
    start_response("200 OK", [
        ("Content-Type", "text/plain"), ("Content-Length", "2"),
        ("Server", "my-app/1.0"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ])
    return [b"ok"]


@validator
def file_app(environ, start_response):
    """Serves this module's own source through wsgi.file_wrapper."""
    handle = open(__file__, "rb")
    size = os.fstat(handle.fileno()).st_size
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](handle, 4096)


not_an_app = 42
