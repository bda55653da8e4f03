"""The proxy lane (:mod:`twisthost.proxy_lane`) held to its promise: the usual path's exchange, byte for byte.

In process, a ``HostService`` is built on Twisted's ``MemoryReactorClock``:
the proxy's upstream connections land in ``reactor.tcpClients`` and are
played by a scripted upstream over ``StringTransport`` (what the proxy sent
is read, a response is fed back in reads as the script cuts them), the
client side is a ``StringTransport`` too.  Every case runs twice on fresh
connections, with the real lane (wrapped to record which heads it took) and
with ``factory.lane = None``; both runs must leave the same: the client's
bytes (``Date`` and ``X-Request-Id`` values masked), the upstream's bytes
(``X-Request-Id`` masked) and whether each upstream connection was closed,
the access-log records, the metrics, the request count and the connection
state.

Over real sockets (``twistd`` and the reporting upstream of
``proxy_upstream.py``): the same site with and without a no-op
``pre_request`` hook (which turns the lane off) must answer alike, for
pipelined GETs mixed with a POST, big bodies read slowly (the upstream is
paused), a client leaving mid-body, ``X-Accel-Redirect`` with ``Range`` and
a dead upstream.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import socket
import time
from dataclasses import dataclass, field

import pytest
from conftest import CountingLane, Server, free_port, write_site
from proxy_upstream import Handler, Upstream
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from twisthost.graceful import Connections
from twisthost.proxy_lane import ProxyLaneRequest
from twisthost.service import HostService, prepare

UP_PORT, DEAD_PORT = 9801, 9802  # in process nothing listens: the harness plays these ports
FILE = bytes(range(256)) * 40  # the internal Static's file, 10240 bytes

IN_PROCESS_SITE = f"""
from twisthost import Host, Proxy, Site, Static
UP = "http://127.0.0.1:{UP_PORT}"
DEAD = "http://127.0.0.1:{DEAD_PORT}"
site = Site(
    hosts=[
        Host("p.test", Proxy(UP, max_fails=0)),
        Host("rules.test", Proxy(UP, host="inner.test", via=True, max_fails=0,
                                 headers_up={{"X-Api-Key": "k1", "User-Agent": None}},
                                 headers_down={{"X-Kept": None, "X-Added": "yes", "Server": "upstream-ruled"}})),
        Host("prefix.test", routes={{
            "/api": Proxy(UP + "/base", strip_prefix=True, max_fails=0),
            "/keep": Proxy(UP + "/base", max_fails=0),
            "/": Static("www"),
        }}),
        Host("slow.test", Proxy(UP, response_timeout=5, idle_timeout=7, max_fails=0)),
        Host("dead.test", Proxy(DEAD, max_fails=0)),
        Host("down.test", Proxy(DEAD, unavailable_status=503, max_fails=1, fail_timeout=1e9)),
        Host("accel.test", Proxy(UP, max_fails=0), routes={{"/files": Static("www", internal=True)}}),
        Host("noaccel.test", Proxy(UP, accel=False, max_fails=0),
             routes={{"/files": Static("www", internal=True)}}),
        Host("close.test", Proxy(UP, keepalive=0, max_fails=0)),
        Host("hsts.test", Proxy(UP, max_fails=0), hsts=True),
    ],
    trusted_proxies=["127.0.0.2"],
    access_log="access.log",
    log_format="json",
)
"""

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
TRUSTED_PEER = IPv4Address("TCP", "127.0.0.2", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
UPSTREAM_DATE = b"Mon, 01 Jan 2001 00:00:00 GMT"  # an upstream's Date is relayed, never masked


def masked(data: bytes) -> bytes:
    """``Date`` (but the upstream's fixed one) and ``X-Request-Id`` values replaced by ``*``."""
    data = re.sub(rb"(?im)^(X-Request-Id): [^\r\n]*(?=\r\n)", rb"\1: *", data)
    return re.sub(rb"(?m)^(Date): (?!" + re.escape(UPSTREAM_DATE) + rb")[^\r\n]*(?=\r\n)", rb"\1: *", data)


# -- the scripted upstream ------------------------------------------------------------------------

def requests_in(data: bytes) -> list[bytes]:
    """Split what an upstream connection received into whole requests (heads with their bodies)."""
    out = []
    while b"\r\n\r\n" in data:
        end = data.index(b"\r\n\r\n") + 4
        found = re.search(rb"(?im)^content-length: *(\d+)\r\n", data[:end])
        end += int(found.group(1)) if found else 0
        if len(data) < end:
            break
        out.append(data[:end])
        data = data[end:]
    return out


def target_of(request: bytes) -> bytes:
    return request.split(b" ", 2)[1]


def response(status: bytes = b"200 OK", *headers: bytes, body: bytes = b"", length: bool = True) -> bytes:
    lines = [b"HTTP/1.1 " + status, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def echo(request: bytes) -> list:
    """The default script: a small JSON-ish body naming what was asked, Content-Length framed."""
    method = request.split(b" ", 1)[0]
    body = b"echo " + target_of(request)
    head = response(b"200 OK", b"Content-Type: text/plain", b"Date: " + UPSTREAM_DATE, body=body)
    return [head if method != b"HEAD" else head[: -len(body)]]


@dataclass
class UpstreamConn:
    protocol: object
    transport: StringTransport
    answered: int = 0
    lost: bool = False
    reads: list = field(default_factory=list)


class ScriptedUpstreams:
    """Plays the upstream side of the proxy's connections in a ``MemoryReactorClock``.

    ``script(request) -> [step, ...]``: a step is bytes (one read the proxy
    gets), ``"close"`` (the upstream closes), or ``"hang"`` (nothing more).
    Connections to ``DEAD_PORT`` are refused.
    """

    def __init__(self, reactor: MemoryReactorClock):
        self.reactor = reactor
        self.seen = 0  # tcpClients entries handled
        self.conns: list[UpstreamConn] = []
        self.script = echo

    def reset(self, script) -> None:
        self.script = script or echo
        self.conns = []

    def pump(self, client_lost=None) -> None:
        """Run until nothing more happens: connects, scripted answers, closes."""
        progress = True
        while progress:
            progress = False
            while self.seen < len(self.reactor.tcpClients):
                host, port, factory, _, _ = self.reactor.tcpClients[self.seen]
                connector = self.reactor.connectors[self.seen]
                self.seen += 1
                progress = True
                if port == DEAD_PORT:
                    factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
                    continue
                protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
                transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
                self.conns.append(UpstreamConn(protocol, transport))
                protocol.makeConnection(transport)
            for conn in self.conns:
                if conn.lost:
                    continue
                if conn.transport.disconnecting:  # the proxy closed or aborted it
                    conn.lost = True
                    conn.protocol.connectionLost(Failure(ConnectionDone()))
                    progress = True
                    continue
                pending = requests_in(conn.transport.value())
                if len(pending) > conn.answered:
                    request = pending[conn.answered]
                    conn.answered += 1
                    progress = True
                    for step in self.script(request):
                        if step == "hang":
                            break
                        if step == "close":
                            conn.lost = True
                            conn.protocol.connectionLost(Failure(ConnectionDone()))
                            break
                        conn.protocol.dataReceived(step)
                        if conn.transport.disconnecting:
                            break
            if client_lost is not None and client_lost():
                progress = True

    def drop_idle(self) -> None:
        """Close what the pool kept, so the next run opens its own connections like this one did."""
        for conn in self.conns:
            if not conn.lost:
                conn.lost = True
                conn.protocol.connectionLost(Failure(ConnectionDone()))

    def report(self) -> list:
        """Per upstream connection: what it received (request ids masked), and whether it was closed."""
        return [(masked(conn.transport.value()), conn.transport.disconnecting) for conn in self.conns]


# -- the in-process host ------------------------------------------------------------------------


class Outcome:
    """What one exchange left: client bytes, upstream bytes, log records, metrics, counts, state."""

    def __init__(self, **facts):
        self.__dict__.update(facts)

    def same_as(self, other: Outcome) -> None:
        assert masked(self.response) == masked(other.response)
        assert self.upstream == other.upstream
        assert self.log == other.log
        assert self.metrics == other.metrics
        assert (self.started, self.closed, self.pending) == (other.started, other.closed, other.pending)
        assert self.ends == other.ends


_TIMINGS = ("duration_ms", "time")
_COUNTED = ("_total", "_count")


class InProcess:
    """A ``HostService`` on a ``MemoryReactorClock``, its clients and upstreams over ``StringTransport``."""

    def __init__(self, path):
        self.reactor = MemoryReactorClock()
        self.service = HostService(prepare(str(path), reactor=self.reactor), reactor=self.reactor)
        self.factory = self.service.factory
        self.own_lane = self.factory.lane
        self.observers = list(self.factory.connections.request_observers)
        self.upstreams = ScriptedUpstreams(self.reactor)
        self.log = path.parent / self.service.current.site.access_log

    def connect(self, peer):
        protocol = self.factory.buildProtocol(peer)
        protocol.callLater = self.reactor.callLater  # the channel's timers on the same clock
        transport = StringTransport(hostAddress=HOST, peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def _metrics(self) -> dict:
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in self.service.metrics.registry.collect() for sample in family.samples
                if sample.name.startswith("twisthost_") and sample.name.endswith(_COUNTED)}

    def _log_records(self, start: int) -> list:
        if not self.log.exists():
            return []
        with open(self.log, "rb") as file:
            file.seek(start)
            records = [json.loads(line) for line in file.read().splitlines()]
        for record in records:
            for name in _TIMINGS:
                record.pop(name)
            if re.fullmatch(r"[0-9a-f]{32}", record["request_id"] or ""):
                record["request_id"] = "*"  # made by the server: differs per run
        return records

    def exchange(self, data: bytes, lane: bool, script=None, peer=PEER, then=None, bytewise=False) -> Outcome:
        """``data`` on a new connection, the upstream playing ``script``; what came of it."""
        counting = CountingLane(self.own_lane, ProxyLaneRequest) if lane else None
        self.factory.lane = counting
        # A fresh count (and drain state) per run, on the test's clock.
        self.factory.connections = Connections(self.reactor)
        # What waits on each request's end (metrics in workers, post_request hooks) hears of it.
        ends = []
        self.factory.connections.request_observers[:] = [*self.observers, lambda request: request.notifyFinish(
        ).addCallbacks(lambda _: ends.append("finished"), lambda _: ends.append("lost"))]
        self.upstreams.reset(script)
        log_from = self.log.stat().st_size if self.log.exists() else 0
        metrics_before = self._metrics()
        protocol, transport = self.connect(peer)
        lost = []

        def client_lost() -> bool:  # the reactor tells a closed connection so
            if transport.disconnecting and not lost:
                lost.append(True)
                protocol.connectionLost(Failure(ConnectionLost()))
                return True
            return False

        try:
            for piece in ([data[i:i + 1] for i in range(len(data))] if bytewise else [data]):
                if not lost:
                    protocol.dataReceived(piece)
                self.upstreams.pump(client_lost)
            if then is not None:
                then(self, protocol, transport)
                self.upstreams.pump(client_lost)
            closed = transport.disconnecting
            pending = len(protocol.channel.requests)  # answers still under way
            response = transport.value()
        finally:
            if not lost:
                protocol.connectionLost(Failure(ConnectionDone()))
            self.upstreams.pump()
            self.upstreams.drop_idle()
            self.factory.lane = self.own_lane
        after = self._metrics()
        metrics = {key: value - metrics_before.get(key, 0) for key, value in after.items()
                   if value != metrics_before.get(key, 0)}
        return Outcome(response=response, taken=counting.taken if counting else [],
                       upstream=self.upstreams.report(), log=self._log_records(log_from), metrics=metrics,
                       started=self.factory.connections.requests, closed=closed, pending=pending, ends=ends)

    def compare(self, data: bytes, answered: bool = True, **kwargs) -> tuple[Outcome, Outcome]:
        """The exchange with the lane and without; fails unless both left the same."""
        with_lane = self.exchange(data, lane=True, **kwargs)
        without = self.exchange(data, lane=False, **kwargs)
        assert bool(with_lane.response) == answered
        with_lane.same_as(without)
        return with_lane, without


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("proxy_lane")
    (base / "www").mkdir()
    (base / "www" / "file.bin").write_bytes(FILE)
    (base / "www" / "page.html").write_bytes(b"<p>static</p>\n")
    write_site(base, IN_PROCESS_SITE, "inproc.py")
    return base


@pytest.fixture(scope="module")
def inproc(tree):
    host = InProcess(tree / "inproc.py")
    # down.test's one upstream is marked down for good (max_fails=1): every request there is a 503.
    host.exchange(get("/warm", host="down.test"), lane=False)
    return host


def get(path: str, *headers: str, method: str = "GET", host: str = "p.test", version: str = "HTTP/1.1",
        body: bytes = b"") -> bytes:
    lines = [f"{method} {path} {version}", *([f"Host: {host}"] if host else []), *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body



# -- upstream scripts ---------------------------------------------------------------------------

def answer(*steps):
    """A script answering every request with the same ``steps``."""
    return lambda request: list(steps)


CHUNKED = answer(
    response(b"200 OK", b"Content-Type: text/plain", b"Transfer-Encoding: chunked", length=False),
    b"5\r\nhello\r\n", b"7\r\n, world\r\n", b"0\r\n\r\n")
UNTIL_CLOSE = answer(response(b"200 OK", b"Content-Type: text/plain", length=False) + b"until ", b"close", "close")
NO_CONTENT = answer(response(b"204 No Content", b"X-Thing: 1", length=False))
NOT_MODIFIED = answer(response(b"304 Not Modified", b'ETag: "v1"', b"Cache-Control: max-age=5", length=False))
COOKIES = answer(response(b"200 OK", b"Set-Cookie: a=1; Path=/", b"Set-Cookie: b=2; Path=/",
                          b"Vary: Accept", b"Vary: Cookie", body=b"{}"))
SERVER_AND_DATE = answer(response(b"200 OK", b"Server: upstream/1.0", b"Date: " + UPSTREAM_DATE, body=b"x"))
HOP_BY_HOP = answer(response(b"200 OK", b"Connection: X-Secret-Hop", b"X-Secret-Hop: 1", b"Keep-Alive: timeout=5",
                             b"Proxy-Authenticate: Basic", b"X-Kept: yes", b"Trailer: X-T", body=b"hop"))
RULED = answer(response(b"200 OK", b"Server: upstream/1.0", b"X-Kept: drop me", b"Via: 1.0 inner",
                        b"X-Added: upstream's", body=b"ruled"))
UPSTREAM_CLOSES = answer(response(b"200 OK", b"Connection: close", body=b"bye"))
INTERIM = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                 response(b"200 OK", body=b"final"))
SPLIT_HEAD = answer(b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 4\r\n\r\n", b"ab", b"cd")
UPSTREAM_500 = answer(response(b"500 Internal Server Error", b"Content-Type: text/html", body=b"<h1>oops</h1>"))
ODD_PHRASE = answer(response(b"299 Fine By Me", body=b"odd"))
EMPTY_PHRASE = answer(response(b"200 ", body=b"no phrase"))  # RFC 9112: the reason phrase may be empty
NO_PHRASE = answer(response(b"200", body=b"no phrase"))
SMUGGLE_SMELL = answer(response(b"200 OK", b"Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n")
                       .replace(b"Content-Length: 15", b"Content-Length: 99"))
BIG_BODY = answer(response(b"200 OK", b"Content-Length: 300000", length=False),
                  *[bytes([65 + i]) * 30000 for i in range(10)])
MALFORMED = answer(b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n")
BAD_STATUS = answer(b"HTTP/2 200 OK\r\n\r\n")
BAD_LENGTH = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc")
MID_BODY_CLOSE = answer(response(b"200 OK", b"Content-Length: 100", length=False) + b"partial", "close")
MID_CHUNK_CLOSE = answer(response(b"200 OK", b"Transfer-Encoding: chunked", length=False) + b"5\r\nhel", "close")
CLOSE_BEFORE_HEAD = answer("close")
HANG = answer("hang")
ACCEL = answer(response(b"200 OK", b"X-Accel-Redirect: /files/file.bin", b"Set-Cookie: s=1",
                        b"Content-Type: application/x-upstream", b"Cache-Control: private", body=b"ignored"))
ACCEL_MISSING = answer(response(b"200 OK", b"X-Accel-Redirect: /files/nothing.bin", b"Set-Cookie: s=1", body=b""))
ACCEL_CHUNKED = answer(response(b"200 OK", b"X-Accel-Redirect: /files/file.bin", b"Transfer-Encoding: chunked",
                                length=False), b"3\r\nabc\r\n", b"0\r\n\r\n")


def advance(seconds):
    """A ``then`` step: the clock moves on (timeouts), the upstreams play on."""
    def step(host, protocol, transport):
        host.reactor.advance(seconds)
    return step


ID = "X-Request-Id: client-id.1:2"
XFF = "X-Forwarded-For: 192.0.2.1, 203.0.113.9"
FWD = 'Forwarded: for=198.51.100.7;proto=https;host="front.test"'

# (case id, request, upstream script, peer, status the client gets, does the lane take it?
#  None: the head is refused before a lane is asked)
CASES = [
    ("get", get("/x"), None, PEER, 200, True),
    ("head", get("/x", method="HEAD"), None, PEER, 200, True),
    ("query", get("/x?a=1&b=%20&c"), None, PEER, 200, True),
    ("empty-query", get("/x?"), None, PEER, 200, True),
    ("percent-path", get("/a%20b/%C3%A9t%C3%A9/%2F?q=%2F"), None, PEER, 200, True),
    ("root", get("/"), None, PEER, 200, True),
    ("double-slash", get("//x//y"), None, PEER, 200, True),
    ("strip-prefix", get("/api/x/y?z=1", host="prefix.test"), None, PEER, 200, True),
    ("strip-prefix-encoded", get("/a%70i/x%2Fy", host="prefix.test"), None, PEER, 200, True),
    ("strip-prefix-exact", get("/api", host="prefix.test"), None, PEER, 200, True),
    ("strip-prefix-slash", get("/api/", host="prefix.test"), None, PEER, 200, True),
    ("base-path", get("/keep/x?y", host="prefix.test"), None, PEER, 200, True),
    ("static-beside-proxies", get("/page.html", host="prefix.test"), None, PEER, 200, False),
    ("host-case-port", get("/x", host="P.TEST:8080"), None, PEER, 200, True),
    ("untrusted-xff", get("/x", XFF, FWD, "X-Real-Ip: 1.2.3.4"), None, PEER, 200, True),
    ("trusted-xff", get("/x", XFF), None, TRUSTED_PEER, 200, True),
    ("trusted-forwarded", get("/x", FWD, "X-Forwarded-Proto: https"), None, TRUSTED_PEER, 200, True),
    ("trusted-both", get("/x", XFF, FWD, "X-Forwarded-Host: front.test"), None, TRUSTED_PEER, 200, True),
    ("request-id", get("/x", ID), None, PEER, 200, True),
    ("request-id-repeated", get("/x", "X-Request-Id: first", ID), None, PEER, 200, True),
    ("request-id-insane", get("/x", "X-Request-Id: not valid!"), None, PEER, 200, True),
    ("request-id-empty", get("/x", "X-Request-Id:"), None, PEER, 200, True),
    ("cookies", get("/x", "Cookie: a=1", "Cookie: b=2", "Accept: */*", "User-Agent: ua/1",
                    "Referer: http://r.test/"), None, PEER, 200, True),
    ("keep-alive", get("/x", "Connection: keep-alive"), None, PEER, 200, True),
    ("keep-alive-case", get("/x", "connection: Keep-Alive"), None, PEER, 200, True),
    ("hop-by-hop-request", get("/x", "Keep-Alive: 300", "TE: trailers", "Proxy-Authorization: x",
                               "X-Other: 1"), None, PEER, 200, True),
    ("zero-body", get("/x", "Content-Length: 0"), None, PEER, 200, True),
    ("chunked", get("/x"), CHUNKED, PEER, 200, True),
    ("chunked-head", get("/x", method="HEAD"), CHUNKED, PEER, 200, True),
    ("until-close", get("/x"), UNTIL_CLOSE, PEER, 200, True),
    ("204", get("/x"), NO_CONTENT, PEER, 204, True),
    ("304", get("/x", 'If-None-Match: "v1"'), NOT_MODIFIED, PEER, 304, True),
    ("set-cookie", get("/x"), COOKIES, PEER, 200, True),
    ("server-and-date", get("/x"), SERVER_AND_DATE, PEER, 200, True),
    ("hop-by-hop-response", get("/x"), HOP_BY_HOP, PEER, 200, True),
    ("rules", get("/x", "User-Agent: ua/1", "X-Api-Key: client's", "Via: 1.0 front"), RULED, PEER, 200, True),
    ("rules-head", get("/x", method="HEAD"), RULED, PEER, 200, True),
    ("upstream-closes", get("/x"), UPSTREAM_CLOSES, PEER, 200, True),
    ("upstream-keepalive-off", get("/x", host="close.test"), None, PEER, 200, True),
    ("interim-responses", get("/x"), INTERIM, PEER, 200, True),
    ("split-head", get("/x"), SPLIT_HEAD, PEER, 200, True),
    ("upstream-500", get("/x"), UPSTREAM_500, PEER, 500, True),
    ("odd-phrase", get("/x"), ODD_PHRASE, PEER, 299, True),
    ("empty-phrase", get("/x"), EMPTY_PHRASE, PEER, 200, True),
    ("no-phrase", get("/x"), NO_PHRASE, PEER, 200, True),
    ("two-hosts", get("/x", "Host: p.test"), None, PEER, 400, None),  # refused before any lane
    ("length-and-chunked", get("/x"), SMUGGLE_SMELL, PEER, 200, True),
    ("big-body", get("/x"), BIG_BODY, PEER, 200, True),
    # Errors: promoted to a Twisted request before anything is written.
    ("refused-502", get("/x", host="dead.test"), None, PEER, 502, True),
    ("refused-head-502", get("/x", method="HEAD", host="dead.test"), None, PEER, 502, True),
    ("unavailable-503", get("/x", ID, host="down.test"), None, PEER, 503, True),
    ("malformed-head-502", get("/x"), MALFORMED, PEER, 502, True),
    ("bad-status-502", get("/x"), BAD_STATUS, PEER, 502, True),
    ("bad-length-502", get("/x"), BAD_LENGTH, PEER, 502, True),
    ("closed-before-head-502", get("/x"), CLOSE_BEFORE_HEAD, PEER, 502, True),
    ("closed-mid-body", get("/x"), MID_BODY_CLOSE, PEER, 200, True),
    ("closed-mid-chunk", get("/x"), MID_CHUNK_CLOSE, PEER, 200, True),
    # X-Accel-Redirect: promoted, the internal Static answers.
    ("accel", get("/x", host="accel.test"), ACCEL, PEER, 200, True),
    ("accel-head", get("/x", method="HEAD", host="accel.test"), ACCEL, PEER, 200, True),
    ("accel-range", get("/x", "Range: bytes=100-199", host="accel.test"), ACCEL, PEER, 206, True),
    ("accel-conditional", get("/x", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", host="accel.test"),
     ACCEL, PEER, 304, True),
    ("accel-missing", get("/x", host="accel.test"), ACCEL_MISSING, PEER, 404, True),
    ("accel-chunked-dropped", get("/x", host="accel.test"), ACCEL_CHUNKED, PEER, 200, True),
    ("accel-off", get("/x", host="noaccel.test"), ACCEL, PEER, 200, True),
    ("accel-upstream-breaks", get("/x", host="accel.test"), answer(ACCEL(b"")[0][:-3], "close"), PEER, 200, True),
    # Declined: the usual path answers.
    ("post", get("/x", "Content-Length: 3", method="POST", body=b"abc"), None, PEER, 200, False),
    ("post-empty", get("/x", method="POST"), None, PEER, 200, False),
    ("options", get("/x", method="OPTIONS"), None, PEER, 200, False),
    ("http10", get("/x", version="HTTP/1.0"), None, PEER, 200, False),
    ("http10-keep-alive", get("/x", "Connection: keep-alive", version="HTTP/1.0"), None, PEER, 200, False),
    ("expect", get("/x", "Expect: 100-continue"), None, PEER, 100, False),  # then the 200
    ("upgrade", get("/x", "Connection: Upgrade", "Upgrade: websocket"), None, PEER, 200, False),
    ("upgrade-alone", get("/x", "Upgrade: h2c"), None, PEER, 200, False),
    ("http2-settings", get("/x", "HTTP2-Settings: AAMAAABkAAQAAP__"), None, PEER, 200, False),
    ("connection-close", get("/x", "Connection: close"), None, PEER, 200, False),
    ("connection-other", get("/x", "Connection: keep-alive, X-Foo"), None, PEER, 200, False),
    ("get-with-body", get("/x", "Content-Length: 5", body=b"hello"), None, PEER, 200, False),
    ("get-chunked-body", get("/x", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"),
     None, PEER, 200, False),
    ("absolute-form", get("http://p.test/x"), None, PEER, 200, True),  # made origin-form by http1
    ("hsts-host", get("/x", host="hsts.test"), None, PEER, 200, False),
    ("unknown-host", get("/x", host="nowhere.test"), None, PEER, 404, False),
    ("declined-refused-502", get("/x", method="POST", host="dead.test"), None, PEER, 502, False),
]


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize("data, script, peer, code, takes", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_same_exchange_as_the_usual_path(inproc, data, script, peer, code, takes):
    with_lane, _ = inproc.compare(data, script=script, peer=peer)
    assert with_lane.taken == ([] if takes is None else [takes])
    assert status_of(with_lane.response) == code
    assert with_lane.started == (takes is not None)
    if with_lane.ends == ["finished"]:  # not cut off mid-body, not a tunnel
        assert with_lane.metrics and with_lane.log, "nothing compared: the harness lost the metrics or log"


def test_timeouts_give_the_same_answers(inproc):
    """response_timeout (504 on the clock) and a body stalled past idle_timeout (both sides cut)."""
    late, _ = inproc.compare(get("/x", host="slow.test"), script=HANG, then=advance(5.5))
    assert late.taken == [True] and status_of(late.response) == 504
    assert late.upstream[0][1], "the upstream connection was not dropped"
    stalled, _ = inproc.compare(get("/x", host="slow.test"), script=answer(
        response(b"200 OK", b"Content-Length: 10", length=False) + b"part", "hang"), then=advance(8))
    assert stalled.taken == [True] and stalled.closed and stalled.response.endswith(b"part")
    assert stalled.upstream[0][1] and not stalled.log


def cyclic_garbage(inproc, data: bytes, **kwargs) -> list:
    """The objects only the cyclic GC would free after one :meth:`InProcess.exchange`."""
    gc.collect()
    gc.disable()
    try:
        inproc.exchange(data, **kwargs)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return [type(thing).__qualname__ for thing in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "usual"])
@pytest.mark.parametrize("data, script", [(get("/x"), None), (get("/x", method="HEAD"), None),
                                          (get("/x"), CHUNKED), (get("/x"), NOT_MODIFIED)],
                         ids=["get", "head", "chunked", "304"])
def test_answered_requests_leave_no_cyclic_garbage(inproc, lane, data, script):
    """What a proxied request made is freed by reference counting when it ends, so
    ten requests on a connection leave what one leaves (the connection's own).  A
    cycle per request (the lane once kept one through its client-gone callback)
    hands the work to the cyclic GC, which on a busy server took ~9 µs a request."""
    cyclic_garbage(inproc, data, lane=lane, script=script)  # pools and caches set up
    one = cyclic_garbage(inproc, data, lane=lane, script=script)
    ten = cyclic_garbage(inproc, data * 10, lane=lane, script=script)
    assert sorted(ten) == sorted(one)


def responses(data: bytes, methods: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Split a connection's output into (head, body) per request; bodies by Content-Length or chunks."""
    out = []
    buffer = data
    for method in methods:
        while True:
            end = buffer.index(b"\r\n\r\n") + 4
            head, buffer = buffer[:end], buffer[end:]
            if not head.startswith(b"HTTP/1.1 1"):
                break
        if method == b"HEAD" or re.match(rb"HTTP/1.1 (204|304)", head):
            body = b""
        elif b"\r\nTransfer-Encoding: chunked\r\n" in head:
            end = buffer.index(b"\r\n0\r\n\r\n") + 7
            body, buffer = buffer[:end], buffer[end:]
        else:
            length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", head).group(1))
            if len(buffer) < length:
                raise ValueError("body cut short")
            body, buffer = buffer[:length], buffer[length:]
        out.append((head, body))
    assert not buffer, buffer[:200]
    return out


PIPELINE = [
    get("/one"),
    get("/two?x", method="HEAD"),
    get("/three", "Content-Length: 4", method="POST", body=b"body"),
    get("/four", host="dead.test"),
    get("/five", host="accel.test"),
    get("/six", "Expect: 100-continue"),
    get("/api/seven", host="prefix.test"),
    get("/eight", "X-Request-Id: piped-8"),
]


def pipeline_script(request: bytes) -> list:
    return ACCEL(request) if b"Host: accel.test" in request else echo(request)


@pytest.mark.parametrize("bytewise", [False, True], ids=["one-read", "byte-per-read"])
def test_pipelined_requests_keep_their_order(inproc, bytewise):
    """Lane, declined, error and X-Accel answers interleave on one connection in request order,
    and the upstream sees one request at a time on a reused connection."""
    data = b"".join(PIPELINE)
    with_lane, _ = inproc.compare(data, script=pipeline_script, bytewise=bytewise)
    assert with_lane.taken == [True, True, False, True, True, False, True, True]
    assert with_lane.started == len(PIPELINE) and with_lane.pending == 0 and not with_lane.closed
    methods = [request.split(b" ", 1)[0] for request in PIPELINE]
    answers = responses(with_lane.response, methods)
    assert [status_of(head) for head, _ in answers] == [200, 200, 200, 502, 200, 200, 200, 200]
    assert [body for _, body in answers][:3] == [b"echo /one", b"", b"echo /three"]
    assert answers[4][1] == FILE and answers[6][1] == b"echo /base/seven"
    assert [record["path"] for record in with_lane.log] == [
        "/one", "/two", "/three", "/four", "/five", "/six", "/api/seven", "/eight"]
    # One connection per Proxy (each has its pool) carried its requests in order.
    sent = [[target_of(request) for request in requests_in(data)] for data, _ in with_lane.upstream]
    assert sent == [[b"/one", b"/two?x", b"/three", b"/six", b"/eight"], [b"/five"], [b"/base/seven"]]


def test_two_gets_in_one_read_while_the_first_waits(inproc):
    """The second GET is held until the first answer is out, then reuses the upstream connection."""
    held = []

    def script(request):
        if target_of(request) == b"/first":
            held.append(request)
            return ["hang"]
        return echo(request)

    def answer_first(host, protocol, transport):
        assert transport.value() == b"", "an answer left before the first one"
        assert len(requests_in(host.upstreams.conns[0].transport.value())) == 1
        host.upstreams.conns[0].protocol.dataReceived(echo(held[-1])[0])

    with_lane, _ = inproc.compare(get("/first") + get("/second"), script=script, then=answer_first)
    assert with_lane.taken == [True, True]
    assert [body for _, body in responses(with_lane.response, [b"GET", b"GET"])] == [b"echo /first", b"echo /second"]
    assert len(with_lane.upstream) == 1


def drain_while_waiting(host, protocol, transport):
    """A graceful stop begins while the upstream has the request; then it answers."""
    host.factory.connections.drain(30)
    conn = host.upstreams.conns[0]
    conn.protocol.dataReceived(echo(requests_in(conn.transport.value())[-1])[0])


@pytest.mark.parametrize("script", [HANG, answer(response(b"200 OK", b"Transfer-Encoding: chunked", length=False)
                                                 + b"2\r\nab\r\n", "hang")], ids=["before-head", "mid-body"])
def test_drain_mid_request_closes_in_the_same_place(inproc, script):
    def drain(host, protocol, transport):
        host.factory.connections.drain(30)
        conn = host.upstreams.conns[0]
        if script is HANG:
            conn.protocol.dataReceived(echo(requests_in(conn.transport.value())[-1])[0])
        else:
            conn.protocol.dataReceived(b"3\r\ncde\r\n0\r\n\r\n")

    with_lane, _ = inproc.compare(get("/x") + get("/never"), script=script, then=drain)
    assert with_lane.taken == [True]
    assert with_lane.closed and with_lane.started == 1
    head = with_lane.response.partition(b"\r\n\r\n")[0]
    assert (b"\r\nConnection: close" in head) == (script is HANG)  # a head already sent cannot say it


def test_request_arriving_while_draining(inproc):
    def drain_then_request(host, protocol, transport):
        host.factory.connections.drain(30)
        protocol.dataReceived(get("/x") + get("/never"))
        host.upstreams.pump()

    with_lane, _ = inproc.compare(b"", then=drain_then_request)
    assert with_lane.taken == [True] and with_lane.closed
    assert b"\r\nConnection: close\r\n" in with_lane.response and with_lane.response.endswith(b"echo /x")


def test_drain_before_an_error_page(inproc):
    def drain(host, protocol, transport):
        host.factory.connections.drain(30)
        host.reactor.advance(5.5)

    with_lane, _ = inproc.compare(get("/x", host="slow.test"), script=HANG, then=drain)
    assert status_of(with_lane.response) == 504 and with_lane.closed
    assert b"\r\nConnection: close\r\n" in with_lane.response


def test_client_leaving_mid_body_aborts_the_upstream(inproc):
    def leave(host, protocol, transport):
        protocol.connectionLost(Failure(ConnectionLost()))
        transport.disconnecting = True  # the harness's connectionLost is not repeated
        host.upstreams.pump()

    script = answer(response(b"200 OK", b"Content-Length: 1000", length=False) + b"x" * 100, "hang")
    with_lane, _ = inproc.compare(get("/x"), script=script, then=leave)
    assert with_lane.taken == [True]
    assert with_lane.upstream[0][1], "the upstream connection was left open"
    assert not with_lane.log  # as documented: a request whose client left is not logged


def test_client_leaving_before_the_head_aborts_the_upstream(inproc):
    def leave(host, protocol, transport):
        protocol.connectionLost(Failure(ConnectionLost()))
        transport.disconnecting = True
        host.upstreams.pump()

    with_lane, _ = inproc.compare(get("/x"), script=HANG, then=leave, answered=False)
    assert with_lane.taken == [True] and with_lane.upstream[0][1]
    assert not with_lane.log and with_lane.response == b""


def test_a_client_that_stops_reading_pauses_the_upstream(inproc):
    """Back-pressure: the client's transport pauses the channel, which pauses the upstream connection."""
    states = []

    def full_then_drained(host, protocol, transport):
        upstream = host.upstreams.conns[0]
        transport.producer.pauseProducing()  # what a full socket buffer does
        states.append(upstream.transport.producerState)
        upstream.protocol.dataReceived(b"y" * 50)
        transport.producer.resumeProducing()
        states.append(upstream.transport.producerState)
        upstream.protocol.dataReceived(b"z" * 50)

    script = answer(response(b"200 OK", b"Content-Length: 200", length=False) + b"x" * 100, "hang")
    with_lane, _ = inproc.compare(get("/x"), script=script, then=full_then_drained)
    assert with_lane.taken == [True]
    assert states == ["paused", "producing"] * 2
    assert with_lane.response.endswith(b"x" * 100 + b"y" * 50 + b"z" * 50)


def test_timers_while_waiting_and_after_the_answer(inproc):
    """No read timer runs while the upstream takes its time; keep-alive runs after the answer."""
    site = inproc.service.current.site
    keepalive, waited = site.keepalive_timeout, max(site.header_timeout, site.keepalive_timeout) + 5
    closed = []

    def wait_then_answer(host, protocol, transport):
        host.reactor.advance(waited)
        closed.append(transport.disconnecting)
        conn = host.upstreams.conns[0]
        conn.protocol.dataReceived(echo(requests_in(conn.transport.value())[-1])[0])
        host.reactor.advance(keepalive - 1)
        closed.append(transport.disconnecting)
        host.reactor.advance(2)
        closed.append(transport.disconnecting)

    with_lane, _ = inproc.compare(get("/x"), script=HANG, then=wait_then_answer)
    assert with_lane.taken == [True] and with_lane.response.endswith(b"echo /x")
    assert closed == [False, False, True] * 2
    assert with_lane.log[0]["upstream_ms"] == waited * 1000


# -- real sockets -------------------------------------------------------------------------------


class LaneTestHandler(Handler):
    """``proxy_upstream``'s handler, plus answers that do not name the connection they came on."""

    def _any(self):
        path = self.path.split("?")[0]
        if path == "/echo":
            body = self._body()
            payload = f"{self.command} {self.path} body={body.decode('latin-1')}".encode()
            self._send(200, [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
                       payload)
        elif path == "/big":
            self._big(int(self.path.split("size=")[1]))
        elif path == "/accel":
            self._body()
            self._send(200, [("X-Accel-Redirect", "/files/file.bin"), ("Set-Cookie", "s=1"),
                             ("Content-Type", "application/x-ignored")], b"ignored")
        else:
            super()._any()

    def _big(self, size: int) -> None:
        """``size`` bytes of ``big_body`` with a Content-Length, counted in ``sent``."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = big_body(65536)
        try:
            for start in range(0, size, len(block)):
                piece = block[: min(len(block), size - start)]
                self.wfile.write(piece)
                with self.server.lock:
                    self.server.sent += len(piece)
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_HEAD = _any


def big_body(size: int) -> bytes:
    return b"x" * size  # what /big and /stream send: a repeated byte, checked by length and sha256


SERVED_SITE = """
from twisthost import Host, Proxy, Site, Static
HOOK_DEF
site = Site(
    hosts=[
        Host("p.test", Proxy("UP", idle_timeout=30), routes={"/files": Static("www", internal=True)}),
        Host("dead.test", Proxy("DEAD")),
    ],
    HOOK_ARG
)
"""


@pytest.fixture(scope="module")
def upstream():
    server = Upstream("lane")
    server.RequestHandlerClass = LaneTestHandler
    yield server
    server.stop()


@pytest.fixture(scope="module")
def servers(tree, upstream):
    """The same site twice: as is (the lane on) and with a no-op pre_request hook (the lane off)."""
    site = SERVED_SITE.replace("UP", upstream.url).replace("DEAD", f"http://127.0.0.1:{free_port()}")
    write_site(tree, site.replace("HOOK_DEF", "").replace("HOOK_ARG", ""), "lane_on.py")
    write_site(tree, site.replace("HOOK_DEF", "def pre_request(request):\n    pass")
               .replace("HOOK_ARG", 'hooks={"pre_request": pre_request},'), "lane_off.py")
    started = [Server(tree / "lane_on.py", free_port())]
    try:
        started.append(Server(tree / "lane_off.py", free_port()))
        yield started
    finally:
        for server in started:
            log = server.log()
            server.stop()
            assert "Traceback" not in log and "Unhandled" not in log, log


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=20)


def read_answers(sock, methods: list[bytes], data: bytes = b"") -> list[tuple[bytes, bytes]]:
    """Read (after ``data``, already read) until ``methods`` answers are complete; split them."""
    while True:
        try:
            return responses(data, methods)
        except (ValueError, AttributeError, AssertionError):
            pass  # incomplete still (or not yet a head)
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {data[-300:]!r}"
        data += chunk


def both(servers, data: bytes, methods: list[bytes]):
    """Send ``data`` in one sendall to each server; their answers, the same once masked."""
    answers = []
    for server in servers:
        with connect(server) as sock:
            sock.sendall(data)
            answers.append(read_answers(sock, methods))
    lane, usual = answers
    assert [(masked(head), body) for head, body in lane] == [(masked(head), body) for head, body in usual]
    return lane


def test_pipelined_gets_and_a_post_in_one_sendall(servers):
    requests = [
        get("/echo?1"),
        get("/echo?2", method="HEAD"),
        get("/echo?3", "Content-Length: 5", method="POST", body=b"hello"),
        get("/echo?4", "Cookie: a=1", "Cookie: b=2"),
        get("/status/204"),
        get("/accel", "Range: bytes=0-9"),
        get("/echo?5", "X-Request-Id: piped-5"),
        get("/x", host="dead.test"),
        get("/echo?6"),
    ]
    answers = both(servers, b"".join(requests), [r.split(b" ", 1)[0] for r in requests])
    assert [status_of(head) for head, _ in answers] == [200, 200, 200, 200, 204, 206, 200, 502, 200]
    assert [body for _, body in answers[:4]] == [b"GET /echo?1 body=", b"", b"POST /echo?3 body=hello",
                                                 b"GET /echo?4 body="]
    assert answers[5][1] == FILE[:10] and answers[8][1] == b"GET /echo?6 body="
    assert b"\r\nX-Request-Id: piped-5\r\n" in answers[6][0]


def test_accel_redirect_with_range_and_a_dead_upstream(servers):
    answers = both(servers, get("/accel", "Range: bytes=100-199") + get("/accel", method="HEAD")
                   + get("/x", host="dead.test") + get("/x", method="HEAD", host="dead.test"),
                   [b"GET", b"HEAD", b"GET", b"HEAD"])
    (head, body), (head_only, _), (bad, page), (bad_head, _) = answers
    assert status_of(head) == 206 and body == FILE[100:200]
    assert b"\r\nContent-Range: bytes 100-199/10240\r\n" in head and b"\r\nSet-Cookie: s=1\r\n" in head
    assert b"x-ignored" not in head and status_of(head_only) == 200
    assert b"\r\nContent-Length: 10240\r\n" in head_only
    assert status_of(bad) == status_of(bad_head) == 502 and page.startswith(b"502 ")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


@pytest.mark.parametrize("path", ["/stream", "/big"], ids=["chunked", "content-length"])
def test_big_body_read_slowly_pauses_the_upstream(servers, upstream, path):
    """A client that stops reading stops the upstream (bounded memory); then it gets every byte."""
    server = servers[0]
    size = 48 * 1024 * 1024
    with connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(get(f"{path}?size={size}") + get("/echo?after"))
        before_sent, before_rss = upstream.sent, _rss_kib(server.proc.pid)
        time.sleep(1.0)  # reads nothing meanwhile
        sent = upstream.sent - before_sent
        assert sent < size // 2, f"the upstream sent {sent} bytes to a client that read nothing"
        assert _rss_kib(server.proc.pid) - before_rss < 16 * 1024
        digest, got, data = hashlib.sha256(), 0, b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, data = data.partition(b"\r\n\r\n")
        chunked = b"\r\nTransfer-Encoding: chunked" in head
        assert chunked == (path == "/stream") and status_of(head) == 200
        # Read slowly: small reads, the decoded body counted as it comes.
        raw, ended = bytearray(data), False
        while True:
            if chunked:
                while not ended and (line_end := raw.find(b"\r\n")) >= 0:
                    length = int(raw[:line_end], 16)
                    if len(raw) < line_end + 2 + length + 2:
                        break
                    digest.update(raw[line_end + 2:line_end + 2 + length])
                    got += length
                    del raw[:line_end + 2 + length + 2]
                    ended = length == 0
                if ended:
                    break
            else:
                take = min(len(raw), size - got)
                digest.update(raw[:take])
                got += take
                del raw[:take]
                if got == size:
                    break
            raw += sock.recv(16384)
        assert digest.digest() == hashlib.sha256(big_body(size)).digest()
        ((_, after),) = read_answers(sock, [b"GET"], bytes(raw))
        assert after == b"GET /echo?after body="


def test_client_leaving_mid_body_aborts_the_upstream_and_harms_nothing(servers, upstream):
    server = servers[0]
    size = 256 * 1024 * 1024
    with connect(server) as sock:
        sock.sendall(get(f"/stream?size={size}"))
        got = 0
        while got < 1024 * 1024:
            chunk = sock.recv(65536)
            assert chunk
            got += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    previous = -1
    deadline = time.monotonic() + 10
    while upstream.sent != previous:  # the upstream stops once its connection is aborted
        assert time.monotonic() < deadline, "the upstream kept sending"
        previous = upstream.sent
        time.sleep(0.3)
    answers = both(servers, get("/echo?next"), [b"GET"])
    assert answers[0][1] == b"GET /echo?next body="
