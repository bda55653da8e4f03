"""Pipelined requests: answered in order, and never faster than the client takes them.

One read can carry hundreds of pipelined GETs, each answered at once from
memory (a cached static file, the static lane or the usual path); a client
that sends them and never reads must not make the process hold every answer.
The real twistd process is measured through /proc (``VmHWM`` is its peak).

Past the first tests, hostile mixes over real sockets (plain and TLS):
POSTs with bodies, WSGI and late Resource answers, malformed heads, cuts at
every byte, clients that leave, read slowly or stall, and a graceful stop,
all while pipelined requests wait for the client to take earlier answers.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import time

import pytest

from tls_support import CA, ConfigServer, client_context

from conftest import PROMPT, Server, free_port, memory_kib, write_site

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


def read_responses(sock: socket.socket, count: int, heads_only=frozenset(),
                   timeout: float = 20.0, piece: int = 1 << 20, pause: float = 0.0) -> list[tuple[bytes, bytes]]:
    """``count`` responses as (head, body); ``heads_only``: indexes of answers to HEAD (no body).

    ``piece`` and ``pause``: a slow client reads at most ``piece`` bytes, then sleeps ``pause`` s.
    """
    buffer, found, deadline = b"", [], time.monotonic() + timeout
    while len(found) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} responses"
        if pause:
            time.sleep(pause)
        chunk = sock.recv(piece)
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
        assert server.request(host="a.test", path="/f.bin", timeout=30)[0] == 200
        # Another client is served while the hogs wait: a server busy with their ~1 GB of
        # answers, or blocked writing to them, would take far longer than this.
        assert time.monotonic() - started < PROMPT
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



# ---------------------------------------------------------------- hostile mixes while paused

APPS = '''
import hashlib
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def echo(environ, start_response):
    """Says which request it answers, and what body it got."""
    body = environ["wsgi.input"].read()
    text = (f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ['QUERY_STRING']} "
            f"{len(body)} {hashlib.sha256(body).hexdigest()}").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(text)))])
    return [text]


class Later(Resource):
    """Answers on a later reactor turn."""

    isLeaf = True

    def render(self, request):
        def answer():
            if not request._disconnected:
                text = b"later " + request.uri
                request.setHeader(b"content-length", b"%d" % len(text))
                request.write(text)
                request.finish()
        reactor.callLater(0.005, answer)
        return NOT_DONE_YET


later = Later()


class Big(Resource):
    """``/big/N``: N bytes, answered at once (more than the kernel's socket buffers hold)."""

    isLeaf = True

    def render(self, request):
        size = int(request.postpath[0])
        return bytes(range(256)) * (size // 256) + bytes(size % 256)


big = Big()
'''

FILES = 8  # distinct files, so an answer out of order shows


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A plain and a TLS listener for a.test: static files, a WSGI echo and a Resource answering later."""
    folder = tmp_path_factory.mktemp("mixed")
    ca = CA(folder)
    ca.issue("a", ["a.test"])
    (folder / "apps.py").write_text(APPS)
    www = folder / "www"
    www.mkdir()
    bodies = [os.urandom(FILE_SIZE) for _ in range(FILES)]
    settled = time.time() - 3600
    for index, body in enumerate(bodies):
        (www / f"f{index}.bin").write_bytes(body)
        os.utime(www / f"f{index}.bin", (settled, settled))
    plain, secure = free_port(), free_port()
    config = write_site(folder, f"""
        from twisthost import TLS, Host, Resource, Site, Static, WSGI
        site = Site(
            listen=["tcp:{plain}:interface=127.0.0.1",
                    TLS("tcp:{secure}:interface=127.0.0.1", cert="a.pem", key="a.key")],
            hosts=[Host("a.test", routes={{"/": Static({str(www)!r}), "/app": WSGI("apps:echo"),
                                           "/later": Resource("apps:later"), "/big": Resource("apps:big")}},
                        cert="a.pem", key="a.key")],
            keepalive_timeout=1.0, header_timeout=1.5, write_timeout=3.0, graceful_timeout=2.0,
        )
    """)
    server = ConfigServer(config, [plain, secure])
    server.secure = secure
    for index in range(FILES):  # cached from now on
        assert server.request(host="a.test", path=f"/f{index}.bin")[0] == 200
    yield server, bodies
    server.stop()


class Pipeline:
    """Requests to send in one stream, and what each answer must be."""

    def __init__(self, bodies):
        self.bodies, self.data, self.expected = bodies, bytearray(), []

    def get(self, index: int) -> "Pipeline":
        self.data += f"GET /f{index % FILES}.bin HTTP/1.1\r\nHost: a.test\r\n\r\n".encode()
        self.expected.append((200, self.bodies[index % FILES]))
        return self

    def post(self, index: int, body: bytes, chunked=False) -> "Pipeline":
        head = f"POST /app/p{index}?q={index} HTTP/1.1\r\nHost: a.test\r\n"
        if chunked:
            pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
            self.data += (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
            self.data += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            self.data += (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.expected.append((200, f"POST /p{index}?q={index} {len(body)} {hashlib.sha256(body).hexdigest()}".encode()))
        return self

    def later(self, index: int) -> "Pipeline":
        self.data += f"GET /later/x{index} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode()
        self.expected.append((200, f"later /later/x{index}".encode()))
        return self

    def raw(self, data: bytes, status: int | None = None) -> "Pipeline":
        """Bytes sent as they are; ``status``: the answer they get (None: no answer of their own)."""
        self.data += data
        if status is not None:
            self.expected.append((status, None))
        return self

    def check(self, answers) -> None:
        assert len(answers) == len(self.expected)
        for index, ((head, got), (status, body)) in enumerate(zip(answers, self.expected)):
            assert head.startswith(b"HTTP/1.1 %d " % status), (index, head[:200])
            if body is not None:
                assert got == body, (index, head[:200], got[:80])


def tls_connection(port: int) -> socket.socket:
    return client_context(None).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=20),
                                            server_hostname="a.test")


def test_tls_pipelining_keeps_the_order_when_one_read_holds_several_records(mixed):
    """A TLS read is handed to the channel record by record, and more records come while it waits."""
    server, bodies = mixed
    pipeline = Pipeline(bodies)
    for index in range(600):
        pipeline.get(index)
    with tls_connection(server.secure) as sock:
        sock.sendall(bytes(pipeline.data))
        pipeline.check(read_responses(sock, len(pipeline.expected)))


def stalled_reader(port: int) -> socket.socket:
    """A client that reads nothing at first: its receive buffer stays small (128 KiB) until it reads."""
    return socket.create_connection(("127.0.0.1", port), timeout=20)


BIG = 6 << 20  # more than the kernel's socket buffers on loopback (tcp_wmem's 4 MiB at most)


@pytest.mark.parametrize("split", [
    pytest.param(False, id="next-head-later"),
    pytest.param(True, id="head-split-across-the-stall"),
])
def test_a_client_that_reads_within_write_timeout_is_not_cut_by_the_read_timers(mixed, split):
    """It asks for 6 MiB, sends one more GET (or the end of one) soon after, then reads nothing for a while.

    The answer fills the kernel's buffers and the transport's, so the server
    stops reading and the next request waits, fully sent, in its receive
    buffer.  Only ``write_timeout`` (3 s) may judge the client now;
    ``keepalive_timeout`` (1 s) or ``header_timeout`` (1.5 s) must not close
    it (nor 408 it).
    """
    server, bodies = mixed
    pipeline = Pipeline(bodies).get(0)
    pipeline.data += f"GET /big/{BIG} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode()
    pipeline.expected.append((200, (bytes(range(256)) * (BIG // 256))))
    last = b"GET /f3.bin HTTP/1.1\r\nHost: a.test\r\n\r\n"
    pipeline.expected.append((200, bodies[3]))
    first, rest = (last[:20], last[20:]) if split else (b"", last)
    with stalled_reader(server.port) as sock:
        sock.sendall(bytes(pipeline.data) + first)
        time.sleep(0.3)
        sock.sendall(rest)
        time.sleep(1.9)  # below write_timeout: the server must wait for this client
        pipeline.check(read_responses(sock, len(pipeline.expected)))


def mixed_pipeline(bodies, rounds: int = 3) -> Pipeline:
    """GETs enough to hold back more than 256 KiB, then every kind of request behind them."""
    pipeline = Pipeline(bodies)
    for round_ in range(rounds):
        for index in range(6):
            pipeline.get(round_ + index)
        pipeline.post(10 * round_, os.urandom(70_000))
        pipeline.later(10 * round_)
        for index in range(5):
            pipeline.get(index)
        pipeline.post(10 * round_ + 1, os.urandom(50_000), chunked=True)
        pipeline.get(7)
        pipeline.raw(f"GET /app/g{round_}?x HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
        pipeline.expected.append((200, f"GET /g{round_}?x 0 {hashlib.sha256(b'').hexdigest()}".encode()))
        pipeline.later(10 * round_ + 1)
    return pipeline


@pytest.mark.parametrize("pieces", [None, 1000, 7919], ids=["one-send", "1000-byte-sends", "7919-byte-sends"])
def test_posts_wsgi_and_late_answers_behind_held_answers_keep_their_order(mixed, pieces):
    server, bodies = mixed
    pipeline = mixed_pipeline(bodies)
    data = bytes(pipeline.data)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(data), pieces or len(data)):
            sock.sendall(data[start:start + (pieces or len(data))])
        pipeline.check(read_responses(sock, len(pipeline.expected)))


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("bad, status", [
    (b"GET /f0.bin HTTP/1.1\r\nHost: a.test\r\nBad Name: x\r\n\r\n", 400),
    (b"GET /f0.bin HTTP/1.1\nHost: a.test\n\n", 400),
    (b"GET /f0.bin HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n", 400),
    (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: a.test\r\n\r\n", 414),
    (b"GET /f0.bin HTTP/1.1\r\nHost: a.test\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n", 431),
    (b"POST /app/x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400),
    (b"POST /app/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
], ids=["bad-header-name", "bare-lf", "bare-lf-in-a-line", "long-line", "big-header", "bad-chunk", "two-lengths"])
def test_a_malformed_request_waiting_behind_held_answers_gets_its_error_and_the_close(mixed, bad, status):
    """Everything before it is answered, then its error; nothing after it; other clients go on."""
    server, bodies = mixed
    pipeline = Pipeline(bodies)
    for index in range(7):  # the 6th head finds 360 kB held back: the rest waits for the client
        pipeline.get(index)
    pipeline.raw(bad, status)
    pipeline.raw(b"GET /f1.bin HTTP/1.1\r\nHost: a.test\r\n\r\n" * 3)  # after the stream broke: never answered
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(bytes(pipeline.data))
        answers = read_responses(sock, len(pipeline.expected))
        assert read_until_closed(sock) == b""  # closed right after the error, nothing more
    pipeline.check(answers)
    assert b"Connection: close" in answers[-1][0]
    assert server.request(host="a.test", path="/f2.bin")[2] == bodies[2]


@pytest.mark.parametrize("which", [5, 6, 7], ids=["head-5", "head-6", "head-7"])
def test_heads_split_at_every_byte_around_the_pause(mixed, which):
    """The 6th head is the first to find more than 256 KiB held back: cut the stream at each byte nearby."""
    server, bodies = mixed
    pipeline = Pipeline(bodies)
    for index in range(9):
        pipeline.get(index)
    data = bytes(pipeline.data)
    size = len(data) // 9
    for cut in range((which - 1) * size, which * size + 1):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(data[:cut])
            time.sleep(0.002)  # two reads, mostly
            sock.sendall(data[cut:])
            try:
                pipeline.check(read_responses(sock, len(pipeline.expected)))
            except AssertionError as error:
                raise AssertionError(f"cut at byte {cut}: {error}") from None


def no_tracebacks(server, since: int = 0) -> None:
    """Nothing went wrong inside the server since its log had ``since`` characters."""
    log = server.log()[since:]
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_client_that_goes_away_while_its_requests_wait(mixed, reset):
    server, bodies = mixed
    logged = len(server.log())
    pipeline = mixed_pipeline(bodies, rounds=20)
    gone = []
    for taken in (0, 1, 7):  # answers read before leaving
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.setblocking(False)
        try:
            sock.send(bytes(pipeline.data))
        except BlockingIOError:
            pass
        sock.setblocking(True)
        if taken:
            read_responses(sock, taken)
        sock.close()
        gone.append(sock)
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(bytes(pipeline.data))
        pipeline.check(read_responses(sock, len(pipeline.expected)))
    no_tracebacks(server, logged)


def test_a_slow_reader_gets_every_answer_in_order(mixed):
    """It reads 64 KiB every 25 ms: slower than the server answers, far faster than write_timeout needs.

    6 MB of answers: more than the kernel's buffers take, so the server waits
    for the client many times; the whole exchange lasts longer than
    keepalive_timeout (1 s) and header_timeout (1.5 s).
    """
    server, bodies = mixed
    pipeline = mixed_pipeline(bodies, rounds=8)
    data = bytes(pipeline.data)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", server.port))
        started = time.monotonic()
        sock.sendall(data)
        pipeline.check(read_responses(sock, len(pipeline.expected), piece=65536, pause=0.025))
        assert time.monotonic() - started > 1.5  # it did outlast the read timers


def test_tls_pipelined_gets_to_a_client_that_never_reads_stay_bounded(mixed):
    """Over TLS the channel writes to a TLS transport (no direct send); reading must stop all the same.

    Each ``send`` is one TLS record of whole requests, all alike, so what is
    measured does not depend on the order of records.
    """
    server, bodies = mixed
    pid = server.proc.pid
    batch = GET.replace(b"/f.bin", b"/f0.bin") * 400  # 15 kB: one record
    hogs = []
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS: earlier tests' peaks (a 6 MiB answer) do not count
    before = memory_kib(pid, "VmHWM")
    try:
        for _ in range(3):
            sock = tls_connection(server.secure)
            sock.setblocking(False)
            sent = 0
            try:
                for _ in range(400):  # ~6 MB of requests asking for ~1 GB of answers
                    sock.send(batch)
                    sent += 1
            except (ssl.SSLWantWriteError, BlockingIOError):
                pass  # the server stopped reading: what it holds is what is measured
            assert sent > 10
            hogs.append(sock)
        time.sleep(1.0)
        grown = (memory_kib(pid, "VmHWM") - before) / 1024
        print(f"3 TLS clients pipelining GETs of a 60 kB file and never reading: +{grown:.1f} MiB")
        assert grown < 48
        status, _, got = server.request(host="a.test", path="/f1.bin", timeout=5)
        assert status == 200 and got == bodies[1]
        hog = hogs[0]
        hog.setblocking(True)
        hog.settimeout(10)
        answers = read_responses(hog, 50)  # still in step, answered in order
        assert all(head.startswith(b"HTTP/1.1 200 ") and got == bodies[0] for head, got in answers)
    finally:
        for sock in hogs:
            sock.close()


def test_a_graceful_stop_with_connections_waiting_on_their_clients(serve, tmp_path):
    """SIGTERM: a client that never reads and one that reads slowly, both with requests left unread.

    The process ends within graceful_timeout (plus the exit slack); the slow
    reader gets whole answers, in order, then the close.
    """
    www = tmp_path / "www"
    www.mkdir()
    body = os.urandom(FILE_SIZE)
    (www / "f.bin").write_bytes(body)
    settled = time.time() - 3600
    os.utime(www / "f.bin", (settled, settled))
    server = serve(f"""
        from twisthost import Host, Site, Static
        site = Site(hosts=[Host("a.test", Static({str(www)!r}))], graceful_timeout=1.5)
    """)
    assert server.request(host="a.test", path="/f.bin")[2] == body
    stuck = stalled_reader(server.port)
    slow = stalled_reader(server.port)
    for sock in (stuck, slow):
        sock.sendall(GET * 200)  # 12 MB of answers: more than the kernel takes
    rest = b""
    while len(rest) < 200_000:
        rest += slow.recv(65536)
    time.sleep(0.3)
    stopped = time.monotonic()
    server.signal(signal.SIGTERM)
    while chunk := slow.recv(65536):
        rest += chunk
        time.sleep(0.01)  # ~6 MB/s at most: some answers are still unread at the deadline
    server.proc.wait(30)
    took = time.monotonic() - stopped
    stuck.close()
    slow.close()
    # The reader that never reads does not hold the stop past graceful_timeout=1.5 (it would forever).
    assert took < 1.5 + PROMPT, f"stopped after {took:.1f}s"
    whole = 0
    while rest:  # whole answers, then at most an answer cut by the deadline's abort
        end = rest.find(b"\r\n\r\n")
        if end < 0 or len(rest) < end + 4 + FILE_SIZE:
            assert took > 1.4, "cut short before graceful_timeout"
            break
        assert rest.startswith(b"HTTP/1.1 200 ") and rest[end + 4:end + 4 + FILE_SIZE] == body, whole
        rest = rest[end + 4 + FILE_SIZE:]
        whole += 1
    print(f"graceful stop: {whole} whole answers to the slow reader, exit after {took:.2f}s")
    assert whole > 3


def test_tls_a_malformed_request_with_more_records_behind_it_is_refused_cleanly(mixed):
    server, _ = mixed
    logged = len(server.log())
    with tls_connection(server.secure) as sock:
        sock.sendall(b"GET /f0.bin HTTP/1.1\r\nHost: a.test\r\nBad Name: x\r\n\r\n")  # one record
        sock.sendall(b"GET /f0.bin HTTP/1.1\r\nHost: a.test\r\n\r\n" * 10)  # the next
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1
    time.sleep(0.2)
    no_tracebacks(server, logged)


def test_tls_requests_after_a_malformed_one_are_never_answered(mixed):
    server, bodies = mixed
    pipeline = Pipeline(bodies)
    for index in range(6):  # the last head finds 360 kB held back
        pipeline.get(index)
    pipeline.raw(b"GET /f0.bin HTTP/1.1\r\nHost: a.test\r\nBad Name: x\r\n\r\n", 400)
    with tls_connection(server.secure) as sock:
        sock.sendall(bytes(pipeline.data))  # one record
        sock.sendall(b"GET /later/smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n" * 10)  # the next
        answers = read_responses(sock, len(pipeline.expected))
        rest = read_until_closed(sock)
    pipeline.check(answers)
    assert rest == b""
