"""Big files: zero-copy sendfile on plain TCP, the buffered path on TLS/HTTP2, bounded memory.

The server runs with a ``sitecustomize`` that wraps the real ``os.sendfile``
and appends each call's byte count to a file, so a test can see which path a
download took without changing what the server does.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time

import pytest

from conftest import Server, free_port, write_site
from tls_support import CA, ConfigServer, client_context, h2_request, tls_get

BIG = 50 * 1024 * 1024
SPY = """
import os
_real = os.sendfile
def sendfile(out_fd, in_fd, offset, count):
    sent = _real(out_fd, in_fd, offset, count)
    with open({log!r}, "a") as log:
        log.write(f"{{offset}} {{sent}}\\n")
    return sent
os.sendfile = sendfile
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("sendfile")
    (base / "www").mkdir()
    (base / "www" / "big.bin").write_bytes(os.urandom(BIG))
    (base / "www" / "mid.bin").write_bytes(os.urandom(300 * 1024))
    (base / "www" / "small.txt").write_bytes(b"small\n")
    (base / "spy").mkdir()
    (base / "spy" / "sitecustomize.py").write_text(SPY.format(log=str(base / "sendfile.log")))
    return base


@pytest.fixture(scope="module")
def server(tree):
    config = write_site(tree, """
        from twisthost import Host, Site, Static
        site = Site(hosts=[
            Host("fast.test", Static("www")),
            Host("copy.test", Static("www", sendfile_min_size=None)),
        ])
    """)
    env = {**os.environ, "PYTHONPATH": str(tree / "spy")}
    running = Server(config, free_port(), env=env)
    yield running
    running.stop()


def sendfile_bytes(tree) -> int:
    log = tree / "sendfile.log"
    return sum(int(line.split()[1]) for line in log.read_text().split("\n") if line) if log.exists() else 0


def sent_since(tree, before: int, expected: int) -> int:
    """Bytes sendfile sent since ``before``, once ``expected`` are logged.

    The spy logs after each call returns, so the client can have every byte
    before the last line is written.
    """
    deadline = time.monotonic() + 5
    while sendfile_bytes(tree) - before < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return sendfile_bytes(tree) - before


def download(port, path, host, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        digest, size = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return response.status, response.headers, size, digest.hexdigest()
    finally:
        conn.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_big_file_goes_out_with_sendfile_byte_exact(server, tree):
    before = sendfile_bytes(tree)
    status, headers, size, digest = download(server.port, "/big.bin", "fast.test")
    assert (status, size) == (200, BIG) and headers["Content-Length"] == str(BIG)
    assert digest == sha((tree / "www" / "big.bin").read_bytes())
    assert sent_since(tree, before, BIG) == BIG


def test_single_range_uses_sendfile_too(server, tree):
    before = sendfile_bytes(tree)
    start, end = 1000, 3 * 1024 * 1024
    status, headers, size, digest = download(server.port, "/big.bin", "fast.test", {"Range": f"bytes={start}-{end}"})
    assert status == 206 and headers["Content-Range"] == f"bytes {start}-{end}/{BIG}"
    with open(tree / "www" / "big.bin", "rb") as file:
        file.seek(start)
        assert digest == sha(file.read(end - start + 1))
    assert sent_since(tree, before, end - start + 1) == end - start + 1


def test_small_files_and_disabled_hosts_do_not_use_sendfile(server, tree):
    before = sendfile_bytes(tree)
    assert server.request("GET", "/small.txt", host="fast.test")[2] == b"small\n"
    status, _, size, digest = download(server.port, "/mid.bin", "copy.test")
    assert (status, digest) == (200, sha((tree / "www" / "mid.bin").read_bytes()))
    assert sendfile_bytes(tree) == before


def test_keep_alive_after_sendfile_responses(server, tree):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    mid = (tree / "www" / "mid.bin").read_bytes()
    try:
        for path in ("/mid.bin", "/small.txt", "/mid.bin", "/mid.bin"):
            conn.request("GET", path, headers={"Host": "fast.test"})
            body = conn.getresponse().read()
            assert body == (mid if path == "/mid.bin" else b"small\n")
    finally:
        conn.close()


def test_pipelined_requests_stay_in_order(server, tree):
    mid = (tree / "www" / "mid.bin").read_bytes()
    request = b"GET /mid.bin HTTP/1.1\r\nHost: fast.test\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request * 2 + b"GET /small.txt HTTP/1.1\r\nHost: fast.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    assert data.count(mid) == 2 and data.endswith(b"\r\n\r\nsmall\n")


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("host", ["fast.test", "copy.test"])
def test_a_client_that_never_reads_costs_no_memory(server, host):
    """50 MiB requested by 4 stalled clients: the server must not buffer the files."""
    before = rss_kib(server.proc.pid)
    socks = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /big.bin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        socks.append(sock)
    time.sleep(1.5)
    grown = rss_kib(server.proc.pid) - before
    for sock in socks:
        sock.close()
    assert grown < 24 * 1024, f"server grew by {grown} KiB for stalled clients"
    assert server.request("GET", "/small.txt", host=host)[2] == b"small\n"


@pytest.mark.parametrize("host", ["fast.test", "copy.test"])
def test_client_leaving_mid_transfer_releases_the_file(server, host):
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET /big.bin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            sock.recv(1 << 20)
    assert server.request("GET", "/small.txt", host=host)[2] == b"small\n"
    deadline = time.monotonic() + 5
    while len(os.listdir(f"/proc/{server.proc.pid}/fd")) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{server.proc.pid}/fd")) <= fds


def test_tls_and_http2_use_the_buffered_path(tree, monkeypatch):
    ca = CA(tree)
    ca.issue("site", ["files.test"])
    plain, secure = free_port(), free_port()
    config = write_site(tree, f"""
        from twisthost import TLS, Host, Site, Static
        site = Site(
            listen=["tcp:{plain}:interface=127.0.0.1",
                    TLS("tcp:{secure}:interface=127.0.0.1", cert="site.pem", key="site.key")],
            hosts=[Host("files.test", Static("www", sendfile_min_size=1024))],
        )
    """, name="tls_site.py")
    monkeypatch.setenv("PYTHONPATH", str(tree / "spy"))
    running = ConfigServer(config, [plain, secure])
    try:
        mid = (tree / "www" / "mid.bin").read_bytes()
        before = sendfile_bytes(tree)
        fetched = tls_get(secure, client_context(None), "files.test", path="/mid.bin")
        head, _, body = fetched.response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == mid
        status, headers, body = h2_request(secure, "files.test", path="/mid.bin")
        assert status == 200 and body == mid
        assert sendfile_bytes(tree) == before
        assert running.request("GET", "/mid.bin", host="files.test")[2] == mid
        assert sent_since(tree, before, len(mid)) == len(mid)  # the spy is live in this server
    finally:
        running.stop()
