"""Proxy behaviour over time: upstreams dying and coming back, slow clients, WebSocket tunnels."""

from __future__ import annotations

import http.client
import signal
import socket
import time

import pytest
from conftest import free_port, wait_until
from proxy_upstream import Upstream, ws_upstream  # noqa: F401 (a fixture)
from websockets.sync.client import connect as ws_connect


def status(server, host, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_killed_upstream_gives_502_then_recovers_through_active_health(serve):
    port = free_port()
    up = Upstream("a", port)
    server = serve(f"""
        from twisthost import Site, Host, Proxy, HealthCheck
        site = Site(default=Host(Proxy("{up.url}", max_fails=1, fail_timeout=300,
            health=HealthCheck("/healthz", interval=0.2, timeout=0.5, passes=2, fails=1))))
    """)
    assert status(server, "x") == 200
    up.stop()
    assert status(server, "x") == 502
    # fail_timeout is 5 minutes: only the active checks can bring it back.
    assert status(server, "x") == 502  # now marked down: no upstream to try
    up = Upstream("a", port)
    try:
        assert wait_until(lambda: status(server, "x") == 200, timeout=10)
        assert any(r["target"] == "/healthz" for r in up.requests)
    finally:
        up.stop()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_client_that_never_reads_does_not_grow_memory(serve):
    up = Upstream("big")
    try:
        server = serve(f"""
            from twisthost import Site, Host, Proxy
            site = Site(default=Host(Proxy("{up.url}", idle_timeout=30)))
        """)
        assert status(server, "x", "/n") == 200  # warm up imports and the pool
        before = _rss_kib(server.proc.pid)
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /stream?size=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(3)  # the client reads nothing meanwhile
        grown_kib = _rss_kib(server.proc.pid) - before
        sent = up.sent
        sock.close()
        assert grown_kib < 8 * 1024, f"twistd grew by {grown_kib} KiB"
        # Back-pressure reached the upstream: it could only fill the socket buffers.
        assert sent < 64 * 1024 * 1024, f"upstream sent {sent} bytes to a client that read nothing"
        # And the aborted exchange leaves the proxy fine.
        assert status(server, "x", "/after") == 200
    finally:
        up.stop()


def test_websocket_echo_through_the_proxy_survives_reload(serve, ws_upstream):  # noqa: F811 (the fixture)
    server = serve(f"""
        from twisthost import Site, Host, Proxy
        site = Site(hosts=[Host("ws.test", Proxy("{ws_upstream}"))])
    """)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        with ws_connect(f"ws://ws.test:{server.port}/chat", sock=sock, open_timeout=5) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\x01" * 100000)  # 200 kB binary both ways
            assert ws.recv(timeout=5) == b"\x00\x01" * 100000
            server.signal(signal.SIGHUP)
            assert wait_until(lambda: "reloaded" in server.log(), timeout=5)
            ws.send("after reload")
            assert ws.recv(timeout=5) == "after reload"
    # Plain requests on the same host still work after the tunnel closed.
    assert status(server, "ws.test") in (400, 426)


def test_websocket_to_a_dead_upstream_is_a_502(serve):
    server = serve(f"""
        from twisthost import Site, Host, Proxy
        site = Site(default=Host(Proxy("http://127.0.0.1:{free_port()}")))
    """)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/ws", headers={
        "Host": "x", "Connection": "Upgrade", "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
    })
    response = conn.getresponse()
    assert response.status == 502
    assert response.read().startswith(b"502 Bad Gateway")
    conn.close()

