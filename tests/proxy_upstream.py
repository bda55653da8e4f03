"""A real upstream for the proxy tests: a stdlib HTTP/1.1 server that reports what it got.

Every answer to an ordinary path is JSON describing the request as the
upstream saw it: method, target, the raw header lines in order, the body,
and which TCP connection (and how many requests on it) it arrived on.  The
server also keeps a log of all requests and counts accepted connections, so
tests can assert keep-alive reuse and "exactly one request" (smuggling).

Special paths: ``/healthz``, ``/hang`` (read the request, never answer), ``/slow``
(answer after 0.3 s),
``/stream?size=N`` (N bytes, chunked, counted in ``sent``), ``/cookies``
(repeated Set-Cookie and Vary), ``/status/NNN``, ``/hop`` (hop-by-hop
response headers that must not reach the client).

``ws_upstream`` is a fixture: a WebSocket echo server (the ``websockets`` library).
"""

from __future__ import annotations

import itertools
import json
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.server import serve as ws_serve


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: "Upstream"

    def setup(self):
        super().setup()
        self.conn_id = next(self.server.conn_ids)
        self.on_conn = 0
        with self.server.lock:
            self.server.accepts += 1

    def log_message(self, *args):  # keep test output quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _any(self):
        self.on_conn += 1
        body = self._body()
        record = {
            "method": self.command,
            "target": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.raw_items()],
            "body": body.decode("latin-1"),
            "conn": self.conn_id,
            "on_conn": self.on_conn,
            "upstream": self.server.name,
        }
        with self.server.lock:
            self.server.requests.append(record)
        path = urlsplit(self.path).path
        query = parse_qs(urlsplit(self.path).query)
        if path == "/hang":
            time.sleep(30)
            self.close_connection = True
            return
        if path == "/slow":
            time.sleep(0.3)
        if path == "/stream":
            self._stream(int(query["size"][0]))
            return
        status, extra = 200, []
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        if path == "/cookies":
            extra = [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                     ("Vary", "Accept"), ("Vary", "Cookie")]
        if path == "/hop":
            extra = [("Connection", "X-Secret-Hop"), ("X-Secret-Hop", "1"),
                     ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"), ("X-Kept", "yes")]
        payload = b"" if status in (204, 304) else json.dumps(record).encode()
        self._send(status, [("Content-Type", "application/json"), *extra], payload)

    def _send(self, status: int, headers: list, payload: bytes) -> None:
        """One response: ``headers``, a Content-Length unless 204/304, the payload unless HEAD."""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _stream(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b"x" * 65536
        left = size
        try:
            while left:
                piece = block[: min(left, len(block))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                left -= len(piece)
                with self.server.lock:
                    self.server.sent += len(piece)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _any


class Upstream(socketserver.ThreadingTCPServer):
    """``Upstream(name)`` listens on 127.0.0.1 (ephemeral or given port) in a thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str = "up", port: int = 0):
        super().__init__(("127.0.0.1", port), Handler)
        self.name = name
        self.port = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.conn_ids = itertools.count(1)
        self.accepts = 0
        self.sent = 0
        self.requests: list[dict] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop listening and cut every open connection, like a killed process."""
        self.shutdown()
        self.server_close()
        for sock in list(getattr(self, "_open", [])):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def get_request(self):
        sock, addr = super().get_request()
        self.__dict__.setdefault("_open", []).append(sock)
        return sock, addr


def hanging_server() -> tuple[socket.socket, int]:
    """A listening socket that accepts (backlog) but never reads or answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


@pytest.fixture
def ws_upstream():
    def echo(connection):
        for message in connection:
            connection.send(message)

    server = ws_serve(echo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.socket.getsockname()[1]}"
    server.shutdown()
