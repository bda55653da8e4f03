"""The proxy's HTTP/1.1 client: keep-alive connections per upstream, one request at a time each.

Twisted's ``Agent`` was the largest share of the proxy's own CPU per
request (docs/design.md, "Proxy client"): it parses a URL per request, runs
a chain of Deferreds per step, reads responses line by line into a
``Headers`` and a ``Response`` state machine, and wraps pooled connections
in a retrying protocol.  A proxy needs less: the request head is already
bytes, the response head is read in one piece and handed over as
``(lower-case name, name, value)`` triples, the body is passed straight
through, and the connection goes back to its upstream's idle list.

What stays as in ``HTTPConnectionPool``: ``keepalive`` idle connections
per upstream (more for a second after a burst), each closed after
``keepalive_timeout`` unused;
a request that finds its reused connection closed before any answer (the
upstream timed it out meanwhile) is retried once on a new connection when
its method is idempotent; ``close()`` drops the idle connections.  Bodies
are read by the rules requests are read by (:class:`twisthost.http.h1.BodyReader`:
``Content-Length``, chunked, trailers) and a response framed by neither is
read until the upstream closes.

The caller (``proxy.Exchange``) takes an idle connection (``UpstreamPool.take``)
or opens one (``UpstreamPool.open``), and then hears from the connection:
``head(...)``, ``body(data)``, ``done()`` or ``failed(reason, stale)`` /
``broken(reason)``, and ``expired()`` when the deadline it set with
``UpstreamConnection.watch`` passes.
"""

from __future__ import annotations


from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from .accel import HEADER as ACCEL_HEADER
from .accel import HEADERS as ACCEL_HEADERS
from .directsend import is_plain_socket, send_now
from .http.h1 import BadRequest, BodyReader, Data, EndOfMessage
from .http.wire import IS_TOKEN
from .lazytimer import LazyTimer

MAX_HEAD = 64 * 1024  # bytes of response head before the response is refused
_NAMES: dict = {}  # header names seen and found valid -> lower case (a few dozen in practice)
_MAX_NAMES = 1000
_NO_BODY_STATUS = frozenset({204, 304})
# Names Head looks at: framing, and the hand-offs to an internal Static (twisthost.accel).
_FRAMING = frozenset({b"connection", b"content-length", b"transfer-encoding", *ACCEL_HEADERS})
SURPLUS_IDLE = 1.0  # seconds an idle connection beyond ``keepalive`` is kept (UpstreamPool.release)


class BadResponse(Exception):
    """The upstream's response cannot be relayed safely."""


_NO_TOKENS = frozenset()
_TOKENS: dict = {}  # one Connection value -> its tokens ("keep-alive", "close": a few in practice)
_MAX_TOKENS = 1000  # values are peer-chosen: bounded like _NAMES


def connection_tokens(values) -> frozenset:
    """Lower-case header names listed in ``Connection`` values."""
    if not values:
        return _NO_TOKENS
    if len(values) == 1:
        tokens = _TOKENS.get(values[0])
        if tokens is None:
            tokens = _tokens(values)
            if len(_TOKENS) < _MAX_TOKENS:
                _TOKENS[values[0]] = tokens
        return tokens
    return _tokens(values)


def _tokens(values) -> frozenset:
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",") if token.strip()
    )


class Head:
    """A parsed response head.

    ``headers`` are ``(lower-case name, line)`` pairs, ``line`` being the
    header line as received (checked: a token, a colon, no CR or LF), so
    that what crosses to a client can be relayed as it came; values are
    taken out of lines only where needed (:func:`field`).  ``accel`` is the
    ``(header, value)`` of a hand-off to an internal ``Static`` (as
    :func:`twisthost.accel.target_of` finds it: ``X-Accel-Redirect`` wins over
    ``X-Sendfile``), if any.
    """

    __slots__ = ("version", "status", "phrase", "headers", "connection", "length", "chunked", "keep",
                 "accel")

    def __init__(self, head: bytes):
        # Lines end in CRLF only: a bare CR or LF could split a header on the way to the client.
        lines = head.split(b"\r\n")
        ends = len(lines) - 1
        if head.count(b"\n") != ends or head.count(b"\r") != ends:
            raise BadResponse("bare CR or LF in the response head")
        version, _, rest = lines[0].partition(b" ")
        code, _, self.phrase = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        self.version, self.status = version, int(code)
        self.headers = headers = []
        self.accel = None
        connection, lengths, codings = [], [], []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            lower = _NAMES.get(name) if colon else None
            if lower is None:
                lower = _header_name(name, colon, line)
            if lower in _FRAMING:
                value = value.strip(b" \t")
                if lower == b"connection":
                    connection.append(value)
                elif lower == b"content-length":
                    lengths.append(value)
                elif lower == b"transfer-encoding":
                    codings.append(value)
                elif self.accel is None or (lower == ACCEL_HEADER and self.accel[0] != ACCEL_HEADER):
                    self.accel = (lower, value)
            headers.append((lower, line))
        self.connection = connection_tokens(connection)
        # Kept alive unless told otherwise; a length next to a coding is a
        # smuggling smell (RFC 9112 6.3): the coding wins, the connection closes after.
        self.keep = version == b"HTTP/1.1" and b"close" not in self.connection and not (
            codings and lengths
        )
        self.chunked = False
        self.length = None  # body bytes when known; None: chunked or until close
        if codings:
            last = b",".join(codings).rsplit(b",", 1)[-1].strip().lower()
            self.chunked = last == b"chunked"  # otherwise the body runs until close
        elif lengths:
            values = lengths if len(lengths) == 1 and b"," not in lengths[0] else {
                part.strip() for value in lengths for part in value.split(b",")
            }
            if len(values) != 1:
                raise BadResponse("bad Content-Length")
            (length,) = values
            if not length.isdigit() or len(length) > 18:
                raise BadResponse("bad Content-Length")
            self.length = int(length)


def field(line: bytes) -> tuple:
    """``(name, value)`` of a header line of a :class:`Head`."""
    name, _, value = line.partition(b":")
    return name, value.strip(b" \t")


def _header_name(name: bytes, colon: bytes, line: bytes) -> bytes:
    """The lower-case form of a header name not seen before, once it is checked."""
    if not colon or not IS_TOKEN.match(name):
        raise BadResponse(f"bad header line {line[:80]!r}")
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[name] = name.lower()
    return name.lower()


class _BodyLimits:
    """What a response body's trailer fields may take: as much as its head."""

    max_request_line = max_header_size = MAX_HEAD
    max_headers = 100


class _FramedBody:
    """A ``Content-Length`` or chunked response body, read by :class:`~twisthost.http.h1.BodyReader`."""

    def __init__(self, connection: "UpstreamConnection", length: int | None = None, chunked: bool = False):
        self.connection = connection
        self.reader = BodyReader(_BodyLimits, length, chunked)

    def dataReceived(self, data: bytes) -> None:
        reader, connection = self.reader, self.connection
        reader.feed(data)
        try:
            while True:
                event = reader.next_event()
                if type(event) is Data:
                    connection._data(event.data)
                elif type(event) is EndOfMessage:
                    connection._finished(reader.rest())
                    return
                else:  # more bytes needed
                    return
        except BadRequest:  # malformed framing: what was relayed cannot be completed
            connection.transport.abortConnection()


class _UntilClose:
    """The body of a response framed by neither length nor chunks: all bytes until close."""

    def __init__(self, data_callback):
        self.dataReceived = data_callback


class _OneProtocol(Factory):
    """Twisted's ``connectProtocol`` without the class it defines per call:
    making one costs ~15 µs and leaves a cycle for the GC on every connect.
    The protocol is let go once built, as Twisted's connector and transport
    keep each other (and this factory) until the cyclic GC runs."""

    noisy = False  # no "Starting factory" / "Stopping factory" log lines per upstream connection

    def __init__(self, protocol):
        self.one = protocol

    def buildProtocol(self, addr):
        protocol, self.one = self.one, None
        return protocol


def connect_protocol(endpoint, protocol) -> defer.Deferred:
    """``endpoint.connect`` for this very ``protocol``, as ``connectProtocol``."""
    return endpoint.connect(_OneProtocol(protocol))


class UpstreamConnection(Protocol):
    """One connection to an upstream; carries one exchange at a time."""

    exchange = None  # the caller waiting on this connection
    decoder = None  # reads the body once the head is in
    producer = None  # a FileBodyProducer sending a large request body
    keep = False  # may go back to the pool after this response
    head_only = False  # a HEAD request: no body, whatever the headers say
    got_bytes = False
    reused = False  # came from the idle list: may have been closed by the upstream meanwhile
    paused = False
    refused = None  # the BadResponse that made us drop the connection
    on_lost = None  # a Deferred fired by connectionLost (UpstreamPool.close waits on it)

    def __init__(self, pool: "UpstreamPool", upstream):
        self.pool, self.upstream = pool, upstream
        self.buffer = b""
        # The exchange's deadline while in use, the idle one in the pool: the
        # deadline moves several times per request, a LazyTimer keeps one
        # DelayedCall for all of them (twisthost.lazytimer).
        self.timer = LazyTimer(pool.reactor.callLater, self._expired)

    def connectionMade(self) -> None:
        # The head may go out in two writes (head, then a large body): without
        # TCP_NODELAY the second can wait for a delayed ACK (40 ms), like nginx's tcp_nodelay.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)

    # -- sending

    def send(self, exchange, data: bytes, head_only: bool, producer=None) -> None:
        """Write a request (``data``: head and small body), then stream ``producer`` if any."""
        self.exchange, self.head_only, self.got_bytes = exchange, head_only, False
        if is_plain_socket(self.transport):
            send_now(self.transport, data)
        else:
            self.transport.write(data)
        if producer is not None:
            self.producer = producer
            self.transport.registerProducer(producer, True)
            producer.startProducing(self.transport).addBoth(self._sent)

    def _sent(self, result):
        if self.producer is not None and self.transport is not None:
            self.transport.unregisterProducer()
        self.producer = None
        return None  # a stopped producer's failure is no error here: the connection tells

    # -- receiving

    def dataReceived(self, data: bytes) -> None:
        """Hand one read over, with the client's output held so that it leaves in one send."""
        exchange = self.exchange
        send_held = exchange.hold_output() if exchange is not None else None
        try:
            self._receive(data)
        finally:
            if send_held is not None:
                send_held()

    def _receive(self, data: bytes) -> None:
        if self.decoder is not None:
            self.decoder.dataReceived(data)
            return
        if self.exchange is None:  # bytes nobody asked for: the stream is out of step
            self.transport.abortConnection()
            return
        self.got_bytes = True
        buffer = self.buffer + data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end == -1:
                self.buffer = buffer
                if len(buffer) > MAX_HEAD:
                    self._refuse(BadResponse("response head too large"))
                return
            try:
                head = Head(buffer[:end])
            except BadResponse as error:
                self._refuse(error)
                return
            buffer = buffer[end + 4:]
            if not 100 <= head.status < 200:
                break
            if head.status == 101:  # upgrades go through tunnel.py, never through the pool
                self._refuse(BadResponse("unexpected 101 Switching Protocols"))
                return
            # else an interim response (100 Continue, 103 Early Hints): the final one follows
        self.buffer = b""
        self._start_body(head, buffer)

    def _start_body(self, head: Head, rest: bytes) -> None:
        self.keep = head.keep
        exchange = self.exchange
        if self.head_only or head.status in _NO_BODY_STATUS:
            exchange.head(head)
            self._finished(rest)
            return
        if head.chunked:
            self.decoder = _FramedBody(self, chunked=True)
        elif head.length is not None and len(rest) >= head.length:
            self._whole(exchange, head, rest)  # a small response, all in this read
            return
        elif head.length is not None:
            self.decoder = _FramedBody(self, length=head.length)
        else:
            self.keep = False
            self.decoder = _UntilClose(self._data)
        exchange.head(head)
        if self.exchange is exchange and self.decoder is not None:
            if head.length == 0:
                self._finished(rest)
            elif rest:
                self.decoder.dataReceived(rest)

    def _whole(self, exchange, head: Head, rest: bytes) -> None:
        """The head and the whole body came in one read: no decoder to set up and feed."""
        exchange.head(head)
        if self.exchange is exchange:  # not given up on by the head
            length = head.length
            if length:
                exchange.body(rest[:length] if len(rest) > length else rest)
            self._finished(rest[length:])

    def _data(self, data: bytes) -> None:
        if self.exchange is not None:
            self.exchange.body(data)

    def _finished(self, extra: bytes) -> None:
        exchange, self.exchange, self.decoder = self.exchange, None, None
        if self.keep and not extra and self.producer is None:
            self.pool.release(self)
        elif self.producer is not None:  # answered before the whole body went up: stop sending
            self.transport.abortConnection()
        else:  # told to close, or extra bytes after the response: the upstream is out of step
            self.transport.loseConnection()
        if exchange is not None:
            exchange.done()

    def _refuse(self, error: BadResponse) -> None:
        self.buffer, self.refused = b"", error
        self.transport.abortConnection()  # connectionLost tells the exchange

    # -- flow control, called by the exchange

    def pause(self) -> None:
        self.paused = True
        self.transport.pauseProducing()

    def resume(self) -> None:
        self.paused = False
        self.transport.resumeProducing()

    def abort(self) -> None:
        """Give up this exchange: the connection cannot be reused mid-request."""
        self.exchange = None
        if self.transport is not None:
            self.transport.abortConnection()

    def watch(self, period: float) -> None:
        """Tell the exchange ``expired()`` ``period`` s from now, instead of any earlier setting."""
        self.timer.start(period)

    def _expired(self) -> None:
        if self.exchange is not None:
            self.exchange.expired()
        else:  # idle too long
            self.pool.forget(self)
            self.transport.loseConnection()

    # -- in the pool

    def idle(self, timeout: float) -> None:
        """In the idle list until ``timeout`` s from now, then closed."""
        if self.paused:
            self.resume()
        self.reused = True
        self.timer.start(timeout)

    def connectionLost(self, reason) -> None:
        if self.on_lost is not None:
            self.on_lost.callback(None)
        self.timer.close()
        self.pool.forget(self)
        if self.producer is not None:
            self.producer.stopProducing()
            self.producer = None
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        if self.refused is not None:
            exchange.failed(Failure(self.refused), stale=False)
        elif isinstance(self.decoder, _UntilClose):
            self.decoder = None
            exchange.done()
        elif self.decoder is not None:
            exchange.broken(reason)
        else:
            exchange.failed(reason, stale=self.reused and not self.got_bytes)


class UpstreamPool:
    """Idle keep-alive connections per upstream, like ``HTTPConnectionPool``."""

    def __init__(self, reactor, keepalive: int, keepalive_timeout: float):
        self.reactor = reactor
        self.keepalive, self.timeout = keepalive, keepalive_timeout
        self.idle: dict = {}  # Upstream -> [UpstreamConnection], most recently used last
        self.closed = False

    def take(self, upstream):
        """The most recently used idle connection to ``upstream``, or None."""
        idle = self.idle.get(upstream)
        if idle:
            conn = idle.pop()
            conn.timer.stop()
            return conn
        return None

    def open(self, upstream) -> defer.Deferred:
        """A new connection to ``upstream``: a Deferred firing with it (cancel it to give up)."""
        return connect_protocol(upstream.endpoint, UpstreamConnection(self, upstream))

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the idle list; one beyond ``keepalive`` only for ``SURPLUS_IDLE`` seconds.

        Responses come in bursts (one reactor turn reads many), so for a
        moment more connections are idle than are kept; closing those at
        once meant opening as many again when the clients' next requests
        arrived a turn later (~2% of requests at 50 clients, keepalive 32).
        """
        if self.closed:
            conn.transport.loseConnection()
            return
        idle = self.idle.setdefault(conn.upstream, [])
        conn.idle(SURPLUS_IDLE if len(idle) >= self.keepalive else self.timeout)
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self.idle.get(conn.upstream)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> defer.Deferred:
        """Close the idle connections (shutdown, or the config was replaced); busy ones close when done."""
        self.closed = True
        waits = []
        for idle in self.idle.values():
            for conn in list(idle):
                conn.on_lost = defer.Deferred()
                waits.append(conn.on_lost)
                conn.transport.loseConnection()
        return defer.DeferredList(waits)
