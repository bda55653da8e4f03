"""Resource bounds under abuse, measured on the real twistd process.

Memory is read from /proc/PID/status: ``VmHWM`` (peak resident size) after
the abuse minus ``VmRSS`` before it bounds what the abuse cost at its worst.
The bounds asserted are generous; docs/security.md lists the values measured.
"""

from __future__ import annotations

import resource
import select
import socket
import time

import pytest

from conftest import PROMPT
from hardening_support import read_until_closed, responses, site_source, start

MIB = 1 << 20


def memory_kib(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as status:
        return {
            name: int(value.split()[0])
            for name, _, value in (line.partition(":") for line in status)
            if name in ("VmRSS", "VmHWM")
        }


def growth_mib(pid: int, before: dict) -> float:
    """Peak resident memory since ``before`` was taken, above the resident size then."""
    return (memory_kib(pid)["VmHWM"] - before["VmRSS"]) / 1024


@pytest.fixture(autouse=True)
def enough_file_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def warmed(server) -> dict:
    for _ in range(20):
        assert server.request(host="a.test")[0] == 200
    return memory_kib(server.proc.pid)


def timed_request(server) -> float:
    """Seconds one normal request takes: held below ``PROMPT`` while a test loads the server,
    it shows the load does not starve other clients (starved, they wait for the load's end)."""
    started = time.monotonic()
    status, _, _ = server.request(path="/probe", host="a.test", timeout=30)
    assert status == 200
    return time.monotonic() - started


@pytest.mark.slow
def test_1000_idle_keepalive_connections(serve):
    server = serve(site_source(max_connections=2000, keepalive_timeout=60.0))
    before = warmed(server)
    idle = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /idle HTTP/1.1\r\nHost: a.test\r\n\r\n")
            idle.append(sock)
        for sock in idle:  # every one answered, and left open
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert timed_request(server) < PROMPT
        grown = growth_mib(server.proc.pid, before)
        print(f"1000 idle keep-alive connections: +{grown:.1f} MiB")
        assert grown < 64
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.slow
def test_300_slowloris_connections_while_a_normal_client_is_served(serve):
    server = serve(site_source(header_timeout=3.0))
    before = warmed(server)
    loris = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n")
            loris.append(sock)
        started, slowest, alive = time.monotonic(), 0.0, list(loris)
        while alive and time.monotonic() - started < 8:
            for sock in list(alive):  # one more header line each, as slowloris does
                try:
                    sock.sendall(b"X-Drip: 1\r\n")
                except OSError:
                    alive.remove(sock)
            readable, _, _ = select.select(alive, [], [], 0)
            for sock in readable:
                alive.remove(sock)  # answered (408) and being closed
            slowest = max(slowest, timed_request(server))
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        grown = growth_mib(server.proc.pid, before)
        print(f"300 slowloris: all closed after {elapsed:.1f}s, slowest normal request {slowest:.3f}s, +{grown:.1f} MiB")
        assert not alive, f"{len(alive)} slowloris connections still open after {elapsed:.1f}s"
        assert slowest < PROMPT  # served between the slowloris lines, not after them
        assert grown < 64
        raw, closed = read_until_closed(loris[0], PROMPT)
        assert raw.startswith(b"HTTP/1.1 408 ") and closed
    finally:
        for sock in loris:
            sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("bounds"), write_timeout=1.0)
    yield server
    server.stop()


def test_a_client_that_never_reads_a_large_response_is_dropped(server):
    before = warmed(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /zeros?mib=512 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        time.sleep(3.5)  # not reading: buffers fill, the write timeout runs out
        assert timed_request(server) < PROMPT
        received, closed = 0, False
        while received < 64 * MIB:
            try:
                chunk = sock.recv(MIB)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += len(chunk)
    grown = growth_mib(server.proc.pid, before)
    print(f"never-reading client of a 512 MiB response: dropped, +{grown:.1f} MiB")
    assert closed and received < 32 * MIB  # dropped, not streaming the 512 MiB on
    assert grown < 32


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_200_mib_upload_stays_out_of_memory(server, framing):
    before = warmed(server)
    size, block = 200 * MIB, b"\0" * MIB
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        if framing == "chunked":
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for _ in range(size // MIB):
                sock.sendall(b"100000\r\n" + block + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            for _ in range(size // MIB):
                sock.sendall(block)
        raw, _ = read_until_closed(sock, 30)
    assert responses(raw)[0][2] == b"POST /upload %d\n" % size
    grown = growth_mib(server.proc.pid, before)
    print(f"200 MiB upload ({framing}): +{grown:.1f} MiB")
    assert grown < 48
    assert timed_request(server) < PROMPT
