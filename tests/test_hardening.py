"""Limits, timeouts, Server header and error pages, against the real twistd.

Timing assertions use generous bounds: each timeout is set to about a second
and the test only checks that the server acted between the timeout and a few
seconds later.
"""

from __future__ import annotations

import select
import signal
import socket
import time

import pytest

from conftest import PROMPT, config_error, write_site
from hardening_support import exchange, read_until_closed, responses, site_source, start

GET = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n"


def connect(port, source="127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def answered(sock, request=GET) -> int:
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {head!r}"
        head += chunk
    return int(head.split(b" ", 2)[1])


# -- timeouts (one server: every timeout about a second)


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("timeouts"), header_timeout=1.0, body_timeout=1.0, keepalive_timeout=1.0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("defaults"))
    yield server
    server.stop()


def test_header_timeout_is_not_extended_by_trickling_bytes(timeouts):
    with connect(timeouts.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
        while not select.select([sock], [], [], 0.2)[0]:  # a header line every 0.2 s
            assert time.monotonic() - started < PROMPT, "never timed out"  # extended by each line
            sock.sendall(b"X-Drip: 1\r\n")
        answered_after = time.monotonic() - started
        raw, closed = read_until_closed(sock, PROMPT)
    assert raw.startswith(b"HTTP/1.1 408 ") and closed, raw
    assert 0.9 < answered_after  # not before header_timeout=1 (the bound above: not much after)


def test_a_stalled_head_behind_an_answered_one_in_the_same_read_gets_408(timeouts):
    """The second head's lines arrive in the read that completes the first (the line-by-line path)."""
    with connect(timeouts.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n")  # a head in two reads
        time.sleep(0.2)
        sock.sendall(b"\r\nGET / HTTP/1.1\r\nHost: a.test\r\n")  # ends it, starts the next; then nothing
        raw, closed = read_until_closed(sock, 5)
    answers = responses(raw)
    assert [status for status, _, _ in answers] == [200, 408] and closed, raw


def test_a_connection_that_sends_nothing_is_closed_silently(timeouts):
    server = timeouts
    with connect(server.port) as sock:
        started = time.monotonic()
        raw, closed = read_until_closed(sock, PROMPT)
    assert closed and raw == b""
    # header_timeout=1 closed it: not before, and long before the 20 s default would have.
    assert 0.9 < time.monotonic() - started < PROMPT


def test_keepalive_timeout_closes_idle_connections(timeouts):
    server = timeouts
    with connect(server.port) as sock:
        assert answered(sock) == 200
        time.sleep(0.5)
        assert answered(sock) == 200  # within the keep-alive time: still served
        started = time.monotonic()
        _, closed = read_until_closed(sock, PROMPT)
    assert closed
    # keepalive_timeout=1 closed it: not before, and long before the 30 s default would have.
    assert 0.9 < time.monotonic() - started < PROMPT


def test_body_timeout_is_a_gap_between_reads(timeouts):
    server = timeouts
    with connect(server.port) as sock:  # slow but steady: a byte every 0.25 s, 2 s in all
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 8\r\nConnection: close\r\n\r\n")
        for byte in b"abcdefgh":
            time.sleep(0.25)
            sock.sendall(bytes([byte]))
        raw, _ = read_until_closed(sock, 5)
    assert responses(raw)[0][2] == b"POST /up 8\n", raw

    with connect(server.port) as sock:  # stalls after 3 bytes
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        raw, closed = read_until_closed(sock, PROMPT)
    assert closed and responses(raw)[0][0] == 408
    # body_timeout=1 answered: not before, and long before the 60 s default would have.
    assert 0.9 < time.monotonic() - started < PROMPT


def test_a_handler_may_take_longer_than_every_read_timeout(timeouts):
    server = timeouts
    status, _, body = server.request(path="/slow?s=2", host="a.test")
    assert (status, body) == (200, b"slow done\n")


# -- connection caps


def hold(port: int, count: int) -> list[socket.socket]:
    """``count`` served keep-alive connections; retried while the server has not yet
    noticed that earlier sockets (the start-up probe) closed."""
    held, deadline = [], time.monotonic() + 5
    while len(held) < count:
        sock = connect(port)
        if answered(sock) == 200:
            held.append(sock)
        else:
            sock.close()
            assert time.monotonic() < deadline, "slots were never released"
            time.sleep(0.05)
    return held


def test_connection_caps_refuse_cleanly_and_recover(serve):
    server = serve(site_source(max_connections=3, max_connections_per_ip=2))
    held = hold(server.port, 2)
    try:
        raw, closed = exchange(server.port, GET)  # a third from 127.0.0.1
        assert closed and responses(raw)[0][0] == 429
        assert b"Too many connections from your address" in raw
        held.append(connect(server.port, source="127.0.0.2"))  # another address: served
        assert answered(held[-1]) == 200
        with connect(server.port, source="127.0.0.3") as fourth:  # the process is full
            raw, closed = read_until_closed(fourth, 5)
        assert closed and responses(raw)[0][0] == 503
        held.pop(0).close()
        held += hold(server.port, 1)  # served again once a slot is free
    finally:
        for sock in held:
            sock.close()


# -- what the server says about itself


def test_server_header_hides_the_twisted_version(default_server):
    server = default_server
    for path in ("/", "/boom", "/nowhere-host"):
        raw, _ = exchange(server.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        assert b"\r\nServer: twisthost\r\n" in raw
        assert b"Twisted" not in raw and b"twisted" not in raw
    raw, _ = exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")  # refused by the channel itself
    assert raw.startswith(b"HTTP/1.1 400 ") and b"\r\nServer: twisthost\r\n" in raw


def test_error_pages_are_uniform_and_leak_nothing(default_server):
    server = default_server
    status, headers, body = server.request(path="/boom", host="a.test")
    assert (status, body) == (500, b"500 Internal Server Error\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, headers, body = server.request(method="PUT", path="/get-only", host="a.test", body=b"x")
    assert (status, body) == (405, b"405 Method Not Allowed\n")
    assert "GET" in headers["Allow"]
    status, _, body = server.request(method="HEAD", path="/get-only", host="a.test")
    assert (status, body) == (200, b"")  # HEAD still falls back to GET
    assert "secret internal detail" in server.log()  # the details go to the log only


def test_server_header_can_be_omitted_and_reload_applies_new_limits(tmp_path, serve):
    server = serve(site_source(server_header=None, max_request_line=4096))
    _, headers, _ = server.request(host="a.test")
    assert "Server" not in headers
    raw, _ = exchange(server.port, b"GET / HTTP/1.1\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ") and b"Server:" not in raw
    long_get = b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    assert responses(exchange(server.port, long_get)[0])[0][0] == 200

    write_site(tmp_path, site_source(server_header="acme/1", max_request_line=1024))
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.request(host="a.test")[1].get("Server") != "acme/1":
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert responses(exchange(server.port, long_get)[0])[0][0] == 414


# -- config mistakes


@pytest.mark.parametrize("option, message", [
    ("max_connections=-1", "Site(max_connections=...) must be in 0..inf, got -1"),
    ("max_request_line=10", "Site(max_request_line=...) must be in 64..1048576, got 10"),
    ("max_headers=1.5", "Site(max_headers=...) expects an integer, got float 1.5"),
    ("header_timeout='soon'", "Site(header_timeout=...) expects a number, got str 'soon'"),
    ("keepalive_timeout=0", "Site(keepalive_timeout=...) must be in 0.01..86400, got 0"),
    ("server_header='x\\r\\nSet-Cookie: a=b'", "Site(server_header=...) must be printable ASCII words"),
    ("server_header=''", "Site(server_header=...) must be printable ASCII words"),
    ("max_conections=5", "Site() got an unknown option 'max_conections'"),
])
def test_config_mistakes_point_at_the_line(tmp_path, option, message):
    text = config_error(tmp_path, f"""
        from twisthost import Site

        site = Site(
            {option},
        )
    """)
    assert "site.py:3" in text
    assert message in text
