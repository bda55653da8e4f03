"""The proxy's own HTTP/1.1 client against an upstream that answers exact bytes.

``proxy_upstream.Upstream`` is a well-behaved server; here a scripted one
answers each path with fixed raw bytes (chunked in pieces, close-delimited,
interim 1xx, malformed heads) or closes a kept-alive connection without an
answer, the way an upstream's keep-alive timeout races a new request.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

import pytest
from conftest import Server, free_port, write_site

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
        site = Site(default=Host(routes={{"/": Proxy("http://127.0.0.1:{scripted.port}", max_fails=0)}}))
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


@pytest.mark.parametrize("path", ["/bare-lf", "/two-lengths", "/bad-status", "/space-name", "/no-colon"])
def test_malformed_response_heads_become_502_and_harm_nothing(proxy, path):
    response, body = fetch(proxy, path)
    assert response.status == 502 and b"X-Injected" not in body
    assert response.getheader("X-Injected") is None
    assert fetch(proxy, "/ok")[1] == b"ok"


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
