"""Clients that never read cost as little over TLS as over plain TCP.

16 clients each pipeline 4 GETs of a 4 MiB WSGI response and then read
nothing.  The responses must wait on the client's window, not pile up in
the process: on plain TCP the channel pauses the app when the socket is
full; over TLS the same pause must reach it through the TLS layer.  The
growth measured is the process's peak resident size (``VmHWM``) above its
size before; docs/security.md has the figures.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from pathlib import Path

import pytest
from tls_support import CA, ConfigServer, client_context

from conftest import free_port, memory_kib, write_site

APPS = Path(__file__).resolve().parent / "apps"
MIB = 1 << 20
CLIENTS, PIPELINED = 16, 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-bp")
    ca = CA(folder)
    ca.issue("a", ["a.test"])
    plain, secure = free_port(), free_port()
    config = write_site(folder, f"""
        import sys
        sys.path.insert(0, {str(APPS)!r})
        from twisthost import TLS, WSGI, Host, Site
        site = Site(
            listen=["tcp:{plain}:interface=127.0.0.1",
                    TLS("tcp:{secure}:interface=127.0.0.1", cert="a.pem", key="a.key")],
            hosts=[Host("a.test", WSGI("rawapps:big_app", threads=4))],
            write_timeout=60.0,
        )
    """)
    running = ConfigServer(config, [plain, secure])
    running.plain, running.secure, running.ca = plain, secure, ca
    yield running
    running.stop()


def connect(server, tls: bool, small_window: bool = True):
    port = server.secure if tls else server.plain
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if small_window:  # the kernel holds little of what the server sends: the rest must wait in it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if tls:
        sock = client_context(server.ca).wrap_socket(sock, server_hostname="a.test")
    return sock


def warm(server, tls: bool) -> None:
    with connect(server, tls, small_window=False) as sock:
        sock.sendall(b"GET /?mb=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        got = 0
        while chunk := sock.recv(65536):
            got += len(chunk)
        assert got > MIB


def responses_in_flight(server, tls: bool) -> float:
    """Growth in MiB while CLIENTS clients leave PIPELINED x 4 MiB answers unread."""
    pid = server.proc.pid
    for _ in range(3):
        warm(server, tls)
    before = memory_kib(pid, "VmRSS")
    request = b"GET /?mb=4 HTTP/1.1\r\nHost: a.test\r\n\r\n" * PIPELINED
    hogs = []
    try:
        for _ in range(CLIENTS):
            sock = connect(server, tls)
            sock.sendall(request)
            hogs.append(sock)
        # Every app thread gets to run while the clients sit still; the peak is what is measured.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            time.sleep(0.25)
        assert server.proc.poll() is None
        return (memory_kib(pid, "VmHWM") - before) / 1024
    finally:
        for sock in hogs:
            sock.close()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_never_reading_clients_are_bounded_over_tls_like_over_tcp(server):
    tcp = responses_in_flight(server, tls=False)
    tls = responses_in_flight(server, tls=True)
    print(f"{CLIENTS} clients x {PIPELINED} pipelined 4 MiB WSGI responses, never read: "
          f"plain TCP +{tcp:.1f} MiB, TLS +{tls:.1f} MiB")
    assert tcp < 16
    assert tls < 16
