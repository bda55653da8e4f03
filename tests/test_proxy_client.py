"""The proxy's own HTTP/1.1 client against an upstream that answers exact bytes.

``proxy_upstream.Upstream`` is a well-behaved server; here a scripted one
answers each path with fixed raw bytes (chunked in pieces, close-delimited,
interim 1xx, malformed heads) or closes a kept-alive connection without an
answer, the way an upstream's keep-alive timeout races a new request.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading
import time

import pytest
from conftest import PROMPT, Server, free_port, raw_request, write_site
from tls_support import CA, ConfigServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ANSWERS = {
    "/ok": [OK],
    "/arm": [OK],
    "/chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhel",
                 b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"],
    "/until-close": [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of ", b"this", None],
    "/interim": [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", OK],
    "/both": [b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"2\r\nhi\r\n0\r\n\r\n"],
    "/bare-lf": [b"HTTP/1.1 200 OK\r\nX-A: 1\nX-Injected: 2\r\nContent-Length: 2\r\n\r\nok"],
    "/two-lengths": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"],
    "/bad-status": [b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"],
    "/space-name": [b"HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok"],
    # a line without a colon, although its text is a header name seen before
    "/no-colon": [b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-A\r\nContent-Length: 2\r\n\r\nok"],
    "/huge-length": [b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\nok"],
    # every kind of header a response head can carry, for what crosses to the client
    "/relay": [(b"HTTP/1.1 200 Fine\r\nServer: up\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
               b"Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: secret\r\n"
               b"Proxy-Authenticate: Basic\r\nSet-Cookie: a=1\r\nVary: Accept\r\nset-cookie: b=2\r\n"
               b"Trailer: X-T\r\nUpgrade: h2c\r\nX-Drop: 1\r\nVia: 1.0 inner\r\n"
               b"X-Custom:  spaced  value\r\nContent-Length: 2\r\n\r\nok")],
    "/silent": [],  # read, never answered; the connection stays open
    "/not-modified": [b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 10\r\n\r\n'],
}


class Scripted:
    """Answers ``ANSWERS[path]`` piece by piece (None: close); after ``/arm`` the
    connection's next request is met by a close, without an answer."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepts = 0
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            self._answer(conn)
        except OSError:  # the proxy dropped a connection it did not trust
            pass

    def _answer(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data, armed = b"", False
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                        while len(data) < length:
                            data += conn.recv(65536)
                        data = data[length:]
                self.requests.append(path)
                if armed:
                    return
                armed = path == "/arm"
                for piece in ANSWERS[path.partition("?")[0]]:
                    if piece is None:
                        return
                    conn.sendall(piece)
                    time.sleep(0.02)

    def stop(self):
        self.sock.close()


@pytest.fixture(scope="module")
def scripted():
    upstream = Scripted()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def proxy(scripted, tmp_path_factory):
    config = write_site(tmp_path_factory.mktemp("proxy-client"), f"""
        from twisthost import Site, Host, Proxy
        site = Site(default=Host(routes={{
            "/": Proxy("http://127.0.0.1:{scripted.port}", max_fails=0),
            "/quick": Proxy("http://127.0.0.1:{scripted.port}", max_fails=0, strip_prefix=True,
                            response_timeout=1),
            "/ruled": Proxy("http://127.0.0.1:{scripted.port}", max_fails=0, strip_prefix=True, via=True,
                            headers_down={{"Server": "front", "X-Drop": None, "Content-Length": "5"}}),
        }}))
    """)
    server = Server(config, free_port())
    yield server
    server.stop()


def fetch(server, path, method="GET", conn=None, body=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": "x.test"})
        response = conn.getresponse()
        return response, response.read()
    finally:
        if own:
            conn.close()


def test_chunked_response_is_relayed_and_the_connection_kept(proxy, scripted):
    before = scripted.accepts
    for _ in range(3):  # the first may open a connection, the others reuse it
        response, body = fetch(proxy, "/chunked")
        assert (response.status, body, response.headers["X-A"]) == (200, b"hello world", "1")
    assert scripted.accepts - before <= 1


def test_close_delimited_response_is_complete_and_not_reused(proxy, scripted):
    fetch(proxy, "/until-close")  # uses up the kept connection, if any
    before = scripted.accepts
    for _ in range(2):
        response, body = fetch(proxy, "/until-close")
        assert (response.status, body) == (200, b"all of this")
    assert scripted.accepts - before == 2


def test_interim_responses_are_skipped(proxy):
    response, body = fetch(proxy, "/interim")
    assert (response.status, body) == (200, b"ok")


def test_length_with_chunked_reads_chunks_and_closes(proxy, scripted):
    fetch(proxy, "/both")  # uses up the kept connection, if any
    before = scripted.accepts
    for _ in range(2):
        response, body = fetch(proxy, "/both")
        assert (response.status, body) == (200, b"hi")
    assert scripted.accepts - before == 2


@pytest.mark.parametrize("path", ["/bare-lf", "/two-lengths", "/bad-status", "/space-name", "/no-colon",
                                  "/huge-length"])
def test_malformed_response_heads_become_502_and_harm_nothing(proxy, path):
    response, body = fetch(proxy, path)
    assert response.status == 502 and b"X-Injected" not in body
    assert response.getheader("X-Injected") is None
    assert fetch(proxy, "/ok")[1] == b"ok"


def test_silent_upstream_on_a_reused_connection_gives_504_in_time(proxy, scripted):
    assert fetch(proxy, "/quick/ok")[1] == b"ok"
    before = scripted.accepts
    started = time.monotonic()
    response, _ = fetch(proxy, "/quick/silent")
    assert response.status == 504
    assert 0.5 < time.monotonic() - started < PROMPT  # response_timeout=1, not the 60 s default
    assert scripted.accepts == before  # it was the pooled connection that timed out
    assert fetch(proxy, "/quick/ok")[1] == b"ok"


def test_reused_connection_closed_by_upstream_is_retried_once_for_get(proxy, scripted):
    assert fetch(proxy, "/arm")[0].status == 200
    before = scripted.accepts
    # The pool hands out the armed connection (most recently used first); it
    # closes without an answer, so a new connection is opened and answers.
    response, body = fetch(proxy, "/ok?get")
    assert (response.status, body) == (200, b"ok")
    assert scripted.requests.count("/ok?get") == 2
    assert scripted.accepts - before == 1


def test_reused_connection_closed_by_upstream_is_not_replayed_for_post(proxy, scripted):
    assert fetch(proxy, "/arm")[0].status == 200
    response, _ = fetch(proxy, "/ok?post", method="POST", body=b"x")
    assert response.status == 502
    assert scripted.requests.count("/ok?post") == 1


def head_lines(response: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """A raw response's status line, its header lines as (lower-case name, value), and its body."""
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    pairs = [(name.lower(), value.strip()) for name, _, value in (line.partition(b":") for line in lines)]
    return status, pairs, body


def values(pairs, name: bytes) -> list[bytes]:
    return [value for lower, value in pairs if lower == name]


HOP_NAMES = (b"x-hop", b"keep-alive", b"proxy-authenticate", b"trailer", b"upgrade", b"transfer-encoding")


def test_response_head_crosses_without_hop_by_hop_headers(proxy):
    response = raw_request(proxy.port, b"GET /relay HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
    status, pairs, body = head_lines(response)
    assert status == b"HTTP/1.1 200 Fine" and body == b"ok"
    for name in HOP_NAMES:
        assert values(pairs, name) == [], name
    assert values(pairs, b"connection") == [b"close"]  # the client's own connection, not the upstream's
    assert values(pairs, b"set-cookie") == [b"a=1", b"b=2"]
    assert values(pairs, b"server") == [b"up"]  # the upstream's replace the server's own
    assert values(pairs, b"date") == [b"Mon, 01 Jan 2024 00:00:00 GMT"]
    assert values(pairs, b"content-length") == [b"2"]
    assert values(pairs, b"x-custom") == [b"spaced  value"]
    assert values(pairs, b"via") == [b"1.0 inner"]


def test_headers_down_rules_and_via_apply_to_the_relayed_head(proxy):
    response = raw_request(proxy.port, b"GET /ruled/relay HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n")
    status, pairs, body = head_lines(response)
    assert status == b"HTTP/1.1 200 Fine" and body == b"ok"
    assert values(pairs, b"server") == [b"front"]
    assert values(pairs, b"x-drop") == []
    assert values(pairs, b"via") == [b"1.0 inner", b"1.1 twisthost"]
    assert values(pairs, b"content-length") == [b"2"]  # framing is never a rule's
    assert values(pairs, b"set-cookie") == [b"a=1", b"b=2"]


def test_http_1_0_client_gets_an_unframed_body_until_close(proxy):
    response = raw_request(proxy.port, b"GET /until-close HTTP/1.0\r\nHost: x.test\r\n\r\n")
    status, pairs, body = head_lines(response)
    assert status == b"HTTP/1.0 200 OK" and body == b"all of this"
    assert values(pairs, b"transfer-encoding") == [] and values(pairs, b"content-length") == []


def test_not_modified_has_no_body_and_keeps_both_connections(proxy, scripted):
    fetch(proxy, "/ok")
    before = scripted.accepts
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        response, body = fetch(proxy, "/not-modified", conn=conn)
        assert (response.status, body, response.getheader("Content-Length")) == (304, b"", None)
        assert response.getheader("ETag") == '"x"'
        assert fetch(proxy, "/ok", conn=conn)[1] == b"ok"  # the client's connection is in step
    finally:
        conn.close()
    assert scripted.accepts == before  # and so is the upstream's


@pytest.fixture(scope="module")
def h2proxy(scripted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy-h2")
    CA(folder).issue("a", ["a.test"])
    port = free_port()
    config = write_site(folder, f"""
        from twisthost import TLS, Site, Host, Proxy
        site = Site(listen=[TLS("tcp:{port}:interface=127.0.0.1", cert="a.pem", key="a.key")],
                    default=Host(routes={{"/": Proxy("http://127.0.0.1:{scripted.port}", max_fails=0,
                                          via=True, headers_down={{"X-Drop": None}})}}))
    """)
    server = ConfigServer(config, [port])
    yield server
    server.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_http2_client_gets_the_same_headers_through_twisted_headers(h2proxy):
    done = subprocess.run(
        ["curl", "-sk", "--http2", "-D", "-", "-o", "/dev/null", f"https://127.0.0.1:{h2proxy.port}/relay"],
        capture_output=True, timeout=20, check=True,
    )
    status, pairs, _ = head_lines(done.stdout)
    assert status.startswith(b"HTTP/2 200")
    for name in (*HOP_NAMES, b"connection", b"x-drop"):
        assert values(pairs, name) == [], name
    assert values(pairs, b"set-cookie") == [b"a=1", b"b=2"]
    assert values(pairs, b"server") == [b"up"]
    assert values(pairs, b"via") == [b"1.0 inner", b"1.1 twisthost"]
    assert values(pairs, b"content-length") == [b"2"]
