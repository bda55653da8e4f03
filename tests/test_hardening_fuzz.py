"""Property: whatever bytes a client sends, the server answers well-formed HTTP or
closes, logs no unhandled error, and keeps serving well-formed requests.

Hypothesis builds request heads and bodies from the pieces smuggling attacks
are made of (odd separators and line ends, duplicated and conflicting framing
headers, control bytes, chunked fragments), then mutates them with random
bytes.  Examples are bounded so the file stays fast.
"""

from __future__ import annotations

import os
import re
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Server, free_port, write_site
from hardening_support import RESOURCES

STATUS_LINE = re.compile(rb"HTTP/1\.1 [1-5]\d\d [^\r\n]*\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    path = write_site(folder, f"""
        from twisthost import Host, Resource, Site
        site = Site(
            hosts=[Host("a.test", Resource("hardening_app:echo()", pythonpath=[{RESOURCES!r}]))],
            header_timeout=1.0, body_timeout=1.0, max_request_line=2048, max_header_size=4096,
        )
    """)
    server = Server(path, free_port())
    server.request(host="a.test")
    server.baseline_fds = open_fds(server.proc.pid)
    yield server
    server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Unhandled" not in log, log


methods = st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"CONNECT", b"get", b"G T", b""]) | st.binary(max_size=6)
targets = st.sampled_from([b"/", b"/a?b=c", b"*", b"http://a.test/x", b"http://b.test/", b"a.test:80", b"/%00", b""]) \
    | st.binary(max_size=12)
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b""])
spaces = st.sampled_from([b" ", b"  ", b"\t", b""])
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"])
names = st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect",
                         b"Host ", b" Host", b"X-A", b""]) | st.binary(max_size=8)
values = st.sampled_from([b"a.test", b"b.test", b"0", b"5", b"+5", b"0x5", b"5, 5", b"chunked", b"gzip, chunked",
                          b"identity", b"close", b"100-continue", b"\x0b", b"a\x00b", b""]) | st.binary(max_size=16)
bodies = st.sampled_from([b"", b"hello", b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"5;x\r\nhel", b"ffffffffff\r\n",
                          b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"]) | st.binary(max_size=32)


@st.composite
def requests(draw) -> bytes:
    end = draw(line_ends)
    line = draw(methods) + draw(spaces) + draw(targets) + draw(spaces) + draw(versions)
    fields = draw(st.lists(st.tuples(names, st.sampled_from([b": ", b":", b" : ", b":\t"]), values), max_size=6))
    head = end.join([line, *(name + sep + value for name, sep, value in fields), b"", b""])
    data = head + draw(bodies)
    for _ in range(draw(st.integers(0, 2))):  # a few random insertions
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


def send(port: int, data: bytes) -> bytes:
    """Send, then read until the server closes or stays quiet for a moment."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b""
        sock.settimeout(0.1)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=requests())
def test_any_input_gets_http_or_a_close_and_harms_nothing(server, data):
    raw = send(server.port, data)
    if raw:
        assert STATUS_LINE.match(raw), raw[:200]
    status, _, body = server.request(path="/after", host="a.test", timeout=5)
    assert (status, body) == (200, b"GET /after 0\n")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_fuzzing_left_no_connection_behind(server):
    deadline = time.monotonic() + 10  # header/body timeouts and lingering closes run out
    while open_fds(server.proc.pid) > server.baseline_fds + 2:
        assert time.monotonic() < deadline, f"{open_fds(server.proc.pid)} fds open, {server.baseline_fds} at start"
        time.sleep(0.2)
