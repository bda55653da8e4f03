"""Pipelined requests: answered in order, and never faster than the client takes them.

One read can carry hundreds of pipelined GETs, each answered at once from
memory (a cached static file, the static lane or the usual path); a client
that sends them and never reads must not make the process hold every answer.
The real twistd process is measured through /proc (``VmHWM`` is its peak).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time

import pytest

from conftest import Server, free_port, write_site

FILE_SIZE = 60_000  # cached in memory (under 64 KiB), so every answer is immediate
GET = b"GET /f.bin HTTP/1.1\r\nHost: a.test\r\n\r\n"
RANGE = b"GET /f.bin HTTP/1.1\r\nHost: a.test\r\nRange: bytes=10-19\r\n\r\n"
HEAD = b"HEAD /f.bin HTTP/1.1\r\nHost: a.test\r\n\r\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipelined")
    www = folder / "www"
    www.mkdir()
    body = os.urandom(FILE_SIZE)
    (www / "f.bin").write_bytes(body)
    settled = time.time() - 3600  # older than FactsCache.SETTLE: cached from the first request
    os.utime(www / "f.bin", (settled, settled))
    server = Server(write_site(folder, f"""
        from twisthost import Host, Site, Static
        site = Site(hosts=[Host("a.test", Static({str(www)!r}))], write_timeout=2.0)
    """), free_port())
    yield server, body
    server.stop()


def memory_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(name)


def read_responses(sock: socket.socket, count: int, heads_only=frozenset(),
                   timeout: float = 20.0) -> list[tuple[bytes, bytes]]:
    """``count`` responses as (head, body); ``heads_only``: indexes of answers to HEAD (no body)."""
    buffer, found, deadline = b"", [], time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} responses"
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(found)} of {count} responses"
        buffer += chunk
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buffer[:end]
            length = 0 if len(found) in heads_only else int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
            if len(buffer) < end + 4 + length:
                break
            found.append((head, buffer[end + 4:end + 4 + length]))
            buffer = buffer[end + 4 + length:]
    return found


def test_pipelined_gets_to_a_client_that_never_reads_stay_bounded(files):
    server, _ = files
    pid = server.proc.pid
    for _ in range(5):
        assert server.request(host="a.test", path="/f.bin")[0] == 200
    before = memory_kib(pid, "VmRSS")
    hogs = []
    try:
        for request in (GET, RANGE, GET):  # the static lane, the usual path, the lane again
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                for _ in range(400):  # ~6 MB of requests asking for ~1 GB of answers
                    sock.send(request * 100)
            except BlockingIOError:
                pass  # the server stopped reading: what it holds is what is measured
            hogs.append(sock)
        time.sleep(1.0)
        started = time.monotonic()
        assert server.request(host="a.test", path="/f.bin", timeout=5)[0] == 200
        assert time.monotonic() - started < 1.0
        grown = (memory_kib(pid, "VmHWM") - before) / 1024
        print(f"3 clients pipelining GETs of a 60 kB file and never reading: +{grown:.1f} MiB")
        assert grown < 32
    finally:
        for sock in hogs:
            sock.close()


def test_thousands_of_pipelined_requests_are_answered_in_order(files):
    server, body = files
    kinds = [GET, RANGE, HEAD] * 1000
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"".join(kinds))
        answers = read_responses(sock, len(kinds), {index for index, kind in enumerate(kinds) if kind is HEAD})
    digest = hashlib.sha256(body).digest()
    for index, ((head, got), kind) in enumerate(zip(answers, kinds)):
        if kind is GET:
            assert head.startswith(b"HTTP/1.1 200 ") and hashlib.sha256(got).digest() == digest, index
        elif kind is RANGE:
            assert head.startswith(b"HTTP/1.1 206 ") and got == body[10:20], index
        else:
            assert head.startswith(b"HTTP/1.1 200 ") and f"Content-Length: {FILE_SIZE}".encode() in head, index


def test_pipelined_requests_in_pieces_while_answers_wait(files):
    """Heads split across reads go line by line; waiting for the client must not break them."""
    server, body = files
    stream = GET * 300
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        for start in range(0, len(stream), 1000):  # cuts heads at arbitrary bytes
            sock.sendall(stream[start:start + 1000])
        answers = read_responses(sock, 300)
    assert all(head.startswith(b"HTTP/1.1 200 ") and got == body for head, got in answers)

