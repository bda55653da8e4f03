"""Proxy behaviours the other proxy tests leave out, each against a real upstream.

https upstreams checked against a custom CA (and not checked with
``verify=False``), a ``unix:`` socket upstream, ``max_connections_per_upstream``
steering requests away from a full upstream, ``idle_timeout`` on a response
body that stalls halfway, and the idle timeout of a WebSocket tunnel.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import socketserver
import ssl
import threading
import time

import pytest
from conftest import wait_until
from proxy_upstream import Handler, Upstream, ws_upstream  # noqa: F401 (a fixture)
from tls_support import CA
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect


def get(server, host, path="/", timeout=10):
    """(status, body) of one GET through the proxy on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class TLSUpstream(Upstream):
    """The reporting upstream behind TLS, with a certificate for ``localhost``."""

    def __init__(self, name: str, cert, key):
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(str(cert), str(key))
        super().__init__(name)
        self.url = f"https://localhost:{self.port}"

    def server_bind(self):
        super().server_bind()
        self.socket = self.tls.wrap_socket(self.socket, server_side=True)


def test_https_upstream_is_verified_against_the_configured_ca(serve, tmp_path):
    ca, other = CA(tmp_path, "upstream CA"), CA(tmp_path, "someone else")
    up = TLSUpstream("tls", *ca.issue("upstream", ["localhost"]))
    try:
        server = serve(f"""
            from twisthost import Site, Host, Proxy
            site = Site(hosts=[
                Host("right.test", Proxy("{up.url}", ca="{ca.path}")),
                Host("wrong.test", Proxy("{up.url}", ca="{other.path}")),
                Host("unverified.test", Proxy("{up.url}", verify=False)),
            ])
        """)
        status, body = get(server, "right.test", "/a")
        assert status == 200 and json.loads(body)["target"] == "/a"
        status, body = get(server, "wrong.test", "/b")
        assert status == 502 and body.startswith(b"502 Bad Gateway")
        status, body = get(server, "unverified.test", "/c")
        assert status == 200 and json.loads(body)["target"] == "/c"
        assert [r["target"] for r in up.requests] == ["/a", "/c"]  # nothing went over the bad TLS
    finally:
        up.stop()


class _UnixHandler(Handler):
    disable_nagle_algorithm = False  # no TCP_NODELAY on a unix socket


class UnixUpstream(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The reporting upstream's handler on a unix socket."""

    daemon_threads = True

    def __init__(self, path):
        super().__init__(str(path), _UnixHandler)
        self.name, self.url = "unix", f"unix:{path}"
        self.lock, self.conn_ids = threading.Lock(), itertools.count(1)
        self.accepts, self.requests = 0, []
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_unix_socket_upstream(serve, tmp_path):
    up = UnixUpstream(tmp_path / "up.sock")
    try:
        server = serve(f"""
            from twisthost import Site, Host, Proxy
            site = Site(default=Host(Proxy("{up.url}")))
        """)
        for path in ("/one", "/two?q=1"):
            status, body = get(server, "app.test", path)
            seen = json.loads(body)
            assert status == 200 and seen["target"] == path
            assert ["Host", "app.test"] in seen["headers"]
        assert up.accepts == 1  # kept alive over the unix socket too
    finally:
        up.shutdown()
        up.server_close()


def test_full_upstream_is_skipped_not_queued(serve):
    a, b = Upstream("a"), Upstream("b")
    try:
        # uri_hash sends one URI to one upstream: only the limit can move it elsewhere.
        server = serve(f"""
            from twisthost import Site, Host, Proxy
            site = Site(default=Host(Proxy(["{a.url}", "{b.url}"], balance="uri_hash",
                                           max_connections_per_upstream=1)))
        """)
        clients = []
        for expected in (1, 2):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            clients.append(sock)
            wait_until(lambda n=expected: len(a.requests) + len(b.requests) == n, timeout=10,
                       what=f"hanging request {expected} at an upstream")
        # One hanging request on each: the second was not queued behind the first.
        assert (len(a.requests), len(b.requests)) == (1, 1)
        started = time.monotonic()
        status, body = get(server, "x", "/hang")
        assert status == 502 and b"No upstream server is available" in body
        assert time.monotonic() - started < 5  # refused at once, not queued
        for sock in clients:
            sock.close()  # the proxy aborts their upstream connections and frees the slots
        assert wait_until(lambda: get(server, "x", "/after")[0] == 200, timeout=10)
    finally:
        a.stop()
        b.stop()


class StallingUpstream:
    """Answers one request with a head and part of the body, then goes silent.

    ``closed_at`` is set when the proxy closes the connection.
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed_at = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            conn.settimeout(30)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            self.closed_at = time.monotonic()

    def close(self):
        self.sock.close()


def _read_until_closed(sock) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:  # an abort may arrive as a reset
        pass
    return b"".join(chunks)


def test_body_stalling_mid_way_closes_both_sides_after_idle_timeout(serve):
    up = StallingUpstream()
    try:
        server = serve(f"""
            from twisthost import Site, Host, Proxy
            site = Site(default=Host(Proxy("{up.url}", idle_timeout=1)))
        """)
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while received.count(b"x") < 1000:  # the head and the part the upstream sent
                received += sock.recv(65536)
            started = time.monotonic()
            received += _read_until_closed(sock)
            waited = time.monotonic() - started
        assert received.startswith(b"HTTP/1.1 200")
        assert b"content-length: 100000" in received.lower()
        assert received.count(b"x") == 1000  # cut off, never padded to look complete
        assert 0.5 < waited < 5, f"client connection closed after {waited:.2f}s"
        assert wait_until(lambda: up.closed_at, timeout=5, what="the upstream connection closed")
        assert up.closed_at - started < 5
    finally:
        up.close()


def test_idle_websocket_tunnel_is_closed(serve, ws_upstream):  # noqa: F811 (the fixture)
    server = serve(f"""
        from twisthost import Site, Host, Proxy
        site = Site(default=Host(Proxy("{ws_upstream}", idle_timeout=1)))
    """)
    with socket.create_connection(("127.0.0.1", server.port)) as sock, \
            ws_connect(f"ws://ws.test:{server.port}/chat", sock=sock, open_timeout=5) as ws:
        for n in range(4):  # traffic every 0.5 s keeps it open past idle_timeout
            ws.send(f"ping {n}")
            assert ws.recv(timeout=5) == f"ping {n}"
            time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        waited = time.monotonic() - started
    assert waited < 5, f"idle tunnel closed after {waited:.2f}s"
