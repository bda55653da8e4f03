"""One HTTP/1.1 connection: a ``Protocol`` of our own, on Twisted's public interfaces only.

The bytes are read by the sans-IO :class:`~twisthost.http.h1.RequestReader`
(every strictness rule, with its RFC section, lives there); this protocol
does what needs a transport and a clock:

* **phase timers** (one :class:`~twisthost.lazytimer.LazyTimer`):
  ``keepalive_timeout`` idle between requests, ``header_timeout`` for a
  whole head counted from its first byte (from the accept for the first
  request), ``body_timeout`` between two reads of a request body, and
  ``write_timeout`` whenever a response waits on a client that stopped
  reading (the connection is then aborted and its buffers freed);
* **refusals** with the body every twisthost error has, then a short linger
  (send, half-close, read and drop for ``LINGER`` s) so that the client
  reads the answer even when it was still sending;
* **write batching**: everything one read produces (a whole response, or
  several for pipelined requests) leaves in one ``send`` at the end of
  ``dataReceived``, straight to a plain socket when nothing is waiting
  (:mod:`twisthost.directsend`);
* **pipelining bounds**: requests are read one at a time, the next only once
  the answer to the last is done, and not while answers already pile up in
  the transport (:meth:`HostChannel._backed_up`); what waits unread is
  bounded, and reading stops when it grows;
* **back-pressure**: the channel is the transport's streaming producer and
  passes ``pauseProducing``/``resumeProducing`` on to the producer of the
  request being answered, the same way over TLS as over TCP;
* **upgrade** as a state (:meth:`HostChannel.upgrade`): the connection
  leaves HTTP for a tunnel, with the bytes the client sent past the request.

A ``twisted.web.server.Request`` sits on this channel the way it sits on
Twisted's own ``HTTPChannel`` (``getPeer``, ``getHost``, ``isSecure``,
``writeHeaders``, ``write``, ``registerProducer``, ``requestDone``...), so
unmodified ``Resource``\\ s, ``.rpy`` scripts and every service answer on it.
Plain GETs of cached static files, and for proxies, are answered without a
Twisted request (:mod:`twisthost.lane`).

Limits are read from the ``Site`` config at each phase, so a reload applies
to open connections from their next request on.
"""

from __future__ import annotations

import socket
from http import HTTPStatus

from twisted.internet import task
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from .directsend import idle, is_plain_socket, send_now
from .http.h1 import NEED_DATA, PAUSED, BadRequest, Data, Head, RequestReader
from .lazytimer import LazyTimer
from .pages import error_body
from .request import FastHeaders, http_date
from .sendfile import HAVE_SENDFILE

INET = (socket.AF_INET, socket.AF_INET6)
LINGER = 2.0  # seconds a refused client may keep sending before the socket is aborted
#: The timeout option of each phase that waits for the client's bytes.
_READ_TIMEOUTS = {"idle": "keepalive_timeout", "head": "header_timeout", "body": "body_timeout"}
#: Bytes of answers held back or unsent beyond which pipelined requests are left unread
#: until the client takes some (:meth:`HostChannel._wait_for_client`).
PIPELINE_OUTPUT = 256 * 1024
#: Bytes of pipelined requests kept unread while one is answered; past it, reading stops
#: (TCP pushes back on the client) until the answer is done.
PIPELINE_INPUT = 16 * 1024

log = Logger()


def error_response(status: int, detail: str, server_header: str | None) -> bytes:
    """A complete ``Connection: close`` response with the uniform error body."""
    body = error_body(status, detail)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
        "Date: " + http_date().decode("ascii"),
    ]
    if server_header:
        lines.append(f"Server: {server_header}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def linger_close(transport, start_timer) -> None:
    """Half-close after the pending writes, then drop the socket ``LINGER`` s later.

    ``start_timer(LINGER)`` arms the caller's timer, whose expiry aborts the
    connection; the caller must ignore data from now on.
    """
    # On the class: a TLS transport forwards unknown names to the TCP one under
    # it, whose half-close would go around TLS.
    if hasattr(type(transport), "loseWriteConnection"):
        transport.loseWriteConnection()
        start_timer(LINGER)
    else:
        transport.loseConnection()


def _connection_tokens(headers) -> list[bytes]:
    """The ``Connection`` options (RFC 9110 7.6.1), lower-cased."""
    tokens = []
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens += (token.strip(b" \t").lower() for token in value.split(b","))
    return tokens


@implementer(IPushProducer)
class PullToPush:
    """Drives a pull producer (``streaming=False``) as a push one, for the channel to pause.

    Twisted's own request producers (``static.File``'s) are pull producers;
    the channel only knows push ones.  A cooperator task calls
    ``resumeProducing`` once per turn while not paused.
    """

    def __init__(self, producer):
        self.producer = producer
        self._task = task.cooperate(self._pull())

    def _pull(self):
        while True:
            self.producer.resumeProducing()
            yield None

    def pauseProducing(self):
        self._task.pause()

    def resumeProducing(self):
        self._task.resume()

    def stopProducing(self):
        self.stop()
        self.producer.stopProducing()

    def stop(self):
        try:
            self._task.stop()
        except (task.TaskStopped, task.TaskFinished, task.TaskDone):
            pass


@implementer(IPushProducer)
class HostChannel(Protocol):
    """Every twisthost HTTP/1.x connection.

    ``site``, ``factory`` and ``requestFactory`` are set by the
    ``HostSite`` that builds it.
    """

    # "head": reading a request head; "body": its body; "busy": a request is
    # being answered; "idle": between requests; "closing": refused or
    # closing, lingering; "tunnel": upgraded, no longer HTTP.
    phase = "head"
    persistent = True
    site = factory = requestFactory = None
    head: Head | None = None  # the head of the request being read or answered
    callLater = None  # the reactor's, unless a test sets a clock's
    _write_timer = None
    _phase_timer: LazyTimer | None = None  # times out the current phase
    _out: list | None = None  # output held back while a read is handled (see write)
    _direct = False  # the transport is a plain kernel socket we may send on at once
    _peer = _host = _secure = None  # per connection, asked for by every request
    _producer = None  # the push producer of the response being written (IPushProducer)
    _pull = None  # the PullToPush wrapping a pull producer, if that is what it is
    _waiting_for_transport = False  # the transport's buffer is full
    _reading_paused = False  # we asked the transport to stop reading
    _waiting_for_client = False  # pipelined requests wait until answers drain
    _receiving = False  # inside _receive: a re-entrant call only feeds the reader
    _tunnel = None  # the protocol the connection was upgraded to

    def __init__(self):
        self.requests: list = []  # answers under way, the one being written first

    @property
    def limits(self):
        """The ``Site`` config in force (replaced on reload)."""
        return self.site.config

    def connectionMade(self):
        transport = self.transport
        if self.callLater is None:
            from twisted.internet import reactor
            self.callLater = reactor.callLater
        self._direct = is_plain_socket(transport)
        if self._direct and transport.socket.family in INET:
            # A response ending in a short segment (a file body's last bytes
            # after a full one) must not wait for the client's delayed ACK:
            # nginx's tcp_nodelay.  Our writes are whole responses already.
            transport.setTcpNoDelay(True)
        self.reader = RequestReader(self.limits)
        transport.registerProducer(self, True)
        self._set_timer(self.limits.header_timeout)  # the first head's clock starts at the accept

    # -- the address and TLS facts of the connection, asked for by every request

    def getPeer(self):
        """Cached: ``tcp.Connection.getPeer`` builds a new address object per call."""
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def getHost(self):
        """Cached: Twisted asks for it in every ``Request.__init__``, a ``getsockname`` each time."""
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def isSecure(self):
        """Cached: an interface adaptation per call otherwise."""
        if self._secure is None:
            self._secure = ISSLTransport(self.transport, None) is not None
        return self._secure

    def can_sendfile(self) -> bool:
        """May a response body be sent with ``sendfile(2)`` on this connection now?"""
        return self._direct and HAVE_SENDFILE and not self.transport.disconnecting

    # -- the phase timer

    def _set_timer(self, period) -> None:
        """Time out the phase ``period`` seconds from now; ``None``: no timeout.

        A :class:`~twisthost.lazytimer.LazyTimer`: every request changes the
        phase timeout three or four times, and a ``DelayedCall`` cancelled or
        rescheduled each time costs heap operations.
        """
        timer = self._phase_timer
        if period is None:
            if timer is not None:
                timer.stop()
            return
        if timer is None:
            self._phase_timer = timer = LazyTimer(self.callLater, self.timeoutConnection)
        timer.start(period)

    def _read_timeout(self):
        return getattr(self.limits, _READ_TIMEOUTS[self.phase])

    # -- reading

    def dataReceived(self, data):
        if self._tunnel is not None:
            self._tunnel.dataReceived(data)
            return
        if self.phase == "closing":
            return  # read and drop: a close with unread data would reset the answer away
        self.reader.feed(data)
        if self.phase == "body":
            self._set_timer(self.limits.body_timeout)  # between two reads of a body
        self._receive_batched()

    def _receive_batched(self) -> None:
        """:meth:`_receive` with output held, so what it answers leaves in one send."""
        held = self.hold_output()  # not when re-entered: the outer call sends
        try:
            self._receive()
        finally:
            if held:
                self.send_held()

    def _receive(self) -> None:
        """Turn what the reader has into requests and body data, as far as the state allows."""
        if self._receiving:
            return  # the outer loop goes on with what was just fed
        self._receiving = True
        try:
            self._read_events()
        finally:
            self._receiving = False

    def _read_events(self) -> None:
        reader = self.reader
        while self.phase not in ("closing", "tunnel") and not self._waiting_for_client:
            if self.phase == "idle":
                if not reader.buffered:
                    return
                if self._backed_up():
                    self._wait_for_client()
                    return
            try:
                event = reader.next_event()
            except BadRequest as error:
                self.reject(error.status, error.detail)
                return
            if event is NEED_DATA:
                if self.phase == "idle" and reader.head_started:
                    self.phase = "head"
                    self._set_timer(self.limits.header_timeout)
                return
            if event is PAUSED:
                # One request at a time: the next waits for requestDone; a
                # client that pipelines a lot meanwhile is read no further.
                if reader.buffered > PIPELINE_INPUT:
                    self._pause_reading()
                return
            if type(event) is Head:
                if self.phase == "idle":
                    self.phase = "head"
                self._start_request(event)
            elif type(event) is Data:
                self.requests[-1].handleContentChunk(event.data)
            else:  # EndOfMessage
                self._all_received()

    def _start_request(self, head: Head) -> None:
        """A judged head: a lane answers it, or a Twisted request is made for it."""
        self.head = head
        self.persistent = head.version == b"HTTP/1.1"
        lane = self.site.lane
        if lane is not None:  # lanes take only GET/HEAD without a body (lane_request decides)
            request = lane(self, head)
            if request is not None:  # a plain GET of a cached file or for a proxy: see twisthost.lane
                self.reader.next_event()  # its EndOfMessage
                self.phase = "busy"
                request.answer()  # if it is all out, its finish has called answered_at_once
                if not request.finished and not request.queued:
                    self.queue_lane_request(request)
                return
        request = self.requestFactory(self)
        self.requests.append(request)
        headers = request.requestHeaders
        if isinstance(headers, FastHeaders):
            headers.add_judged(head.headers)
        else:
            for name, value in head.headers:
                headers.addRawHeader(name, value)
        if self.persistent and b"close" in _connection_tokens(head.headers):
            self.persistent = False
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        request.parseCookies()
        self.phase = "body"
        self._set_timer(self.limits.body_timeout)
        request.gotLength(head.length)  # may refuse the body (413): the phase is then "closing"
        if self.phase == "closing":
            return
        try:
            self.reader.limit_body(getattr(request, "max_body", None))
        except BadRequest as error:
            self.reject(error.status, error.detail)
            return
        expect = request.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and head.version == b"HTTP/1.1":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # RFC 9110 10.1.1, in order with held output

    def _all_received(self) -> None:
        """The whole request is in: answer it (Twisted routes and renders here)."""
        self.phase = "busy"
        self._set_timer(None)
        head = self.head
        request = self.requests[-1]
        request.requestReceived(head.method, head.target, head.version)

    # -- pipelined requests wait while their answers pile up

    def _backed_up(self) -> bool:
        """Are answers piling up: the transport's buffer full, or much held back in this read?

        One read can carry hundreds of pipelined GETs, each answered at once
        from memory; a client that sends them and never reads would make the
        process hold every answer.
        """
        if self._waiting_for_transport:
            return True
        out = self._out
        return bool(out) and sum(map(len, out)) > PIPELINE_OUTPUT

    def _wait_for_client(self) -> None:
        """Leave what is buffered unread until the answers so far are sent.

        Reading stops, and so does the phase timer: a client that stops
        reading meets ``write_timeout`` instead.  :meth:`_catch_up` goes on
        when the transport drains (:meth:`resumeProducing`), or on the next
        reactor turn if sending what was held back did not fill it.
        """
        self._waiting_for_client = True
        self._pause_reading()
        self._set_timer(None)
        self.callLater(0, self._catch_up)

    def _catch_up(self) -> None:
        if not self._waiting_for_client or self._waiting_for_transport or self.phase == "closing":
            return
        self._waiting_for_client = False
        self._set_timer(self.limits.header_timeout)  # the next head's clock starts as it is read
        self._resume_reading()
        self._receive_batched()

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._waiting_for_client:
            self._reading_paused = False
            self.transport.resumeProducing()

    # -- the end of each answer

    def requestDone(self, request):
        """Called by the first request in the queue when its answer is complete."""
        if request is not self.requests[0]:
            raise TypeError("requestDone for a request that is not the first in the queue")
        del self.requests[0]
        if self.phase in ("closing", "tunnel"):
            return
        if not self.persistent:
            self.phase = "closing"
            self.loseConnection()
            return
        self._next_request()
        if not self._waiting_for_transport:
            self._resume_reading()
        self._receive_batched()  # pipelined requests read meanwhile

    def _next_request(self) -> None:
        self.head = None
        self.reader.next_request()
        self.phase = "idle"
        self._set_timer(self.limits.keepalive_timeout)

    def queue_lane_request(self, request) -> None:
        """Queue a lane answer still under way (a ``sendfile`` waiting for the socket, a proxied
        request), as a Twisted request is queued: what the client sends meanwhile is held
        until its ``finish`` calls :meth:`requestDone`."""
        request.queued = True
        self.requests.append(request)
        self.phase = "busy"
        self._set_timer(None)

    def answered_at_once(self) -> None:
        """A request answered within its read, never queued (:mod:`twisthost.lane`): on to the next."""
        if self.persistent:
            self._next_request()
        else:  # "Connection: close", or a drain began meanwhile
            self.phase = "closing"
            self.loseConnection()

    # -- leaving HTTP

    def upgrade(self, protocol) -> bytes:
        """Hand the connection to ``protocol`` (an accepted ``Upgrade``); return what the client
        sent past the request, which belongs to the new protocol.

        From now on bytes go to ``protocol.dataReceived`` and the end of the
        connection to its ``connectionLost``; ``protocol`` is connected to
        this transport.  The channel stays the transport's producer, so a
        producer registered with :meth:`registerProducer` still hears when
        the client stops reading.
        """
        self.phase = "tunnel"
        self._set_timer(None)
        self._tunnel = protocol
        rest = self.reader.upgrade()
        protocol.makeConnection(self.transport)
        self._resume_reading()
        return rest

    # -- refusing

    def reject(self, status: int, detail: str) -> bool:
        """Answer ``status`` ourselves and close: the stream is no longer in sync."""
        reading = self.requests[-1] if self.phase == "body" and self.requests else None
        self.phase = "closing"
        log.info("refused {peer}: {status} {detail}", peer=str(self.getPeer()), status=status, detail=detail)
        response = error_response(status, detail, self.limits.server_header)
        if self.site.refusal_observers:
            sent = len(response) - response.index(b"\r\n\r\n") - 4
            refused = self._refused_request(status, sent, reading)
            for observer in self.site.refusal_observers:
                observer(refused)
        self.send_held()
        self.transport.write(response)
        self.transport.unregisterProducer()
        self._resume_reading()  # read and drop what is still coming, so the answer is not reset away
        linger_close(self.transport, self._set_timer)
        return True

    def _refused_request(self, status: int, sent: int, reading=None):
        """A Twisted request for what is known of a refused one, for the access log and metrics.

        ``reading``: the request whose body was being read (a 413 or a late
        body); else one is made from the head or the request line the reader
        saw, if any.  It is never processed.  Unknown parts log as ``-``.
        """
        head = self.head
        request = reading
        if request is None:
            request = self.requestFactory(self)
            if head is not None:
                for name, value in head.headers:
                    request.requestHeaders.addRawHeader(name, value)
        if head is not None:
            request.method, request.uri, request.clientproto = head.method, head.target, head.version
        else:
            parts = (self.reader.request_line or b"").split(b" ")
            method, uri, version = parts if len(parts) == 3 else (b"", b"", b"")
            request.method, request.uri, request.clientproto = method, uri, version
            if self.reader.request_host is not None:  # the head was refused, its Host was fine
                request.requestHeaders.setRawHeaders(b"host", [self.reader.request_host])
        request.path = request.uri.partition(b"?")[0]
        request.site, request.code, request.sentLength = self.site, status, sent
        return request

    def timeoutConnection(self):
        if self.phase == "closing":
            self.transport.abortConnection()
        elif self.phase == "body" or (self.phase == "head" and self.reader.head_started):
            self.reject(408, "The request did not arrive in time.")
        else:  # idle keep-alive, or a connection that never sent a byte
            log.info("Timing out client: {peer}", peer=str(self.getPeer()))
            self.phase = "closing"
            self.loseConnection()
            self._set_timer(LINGER)

    # -- writing

    def writeHeaders(self, version, code, reason, headers):
        """The response head, through :meth:`write` (so it is batched with the body)."""
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.write(b"".join(head))

    def write(self, data):
        """Send ``data``; while a read is being handled, hold it until the read is done.

        Twisted's transports buffer every write and send on the next write
        event: per response that is a write of the head, one of the body,
        an epoll update to watch for writability, a reactor iteration and an
        epoll update to stop.  Here everything a read produces (a whole
        response, or several for pipelined requests) leaves in one piece at
        the end of ``dataReceived``, and output is sent right away when the
        transport holds nothing unsent (:meth:`_transmit`).
        """
        if self._out is not None:
            self._out.append(data)
        else:
            self._transmit(data)

    def writeSequence(self, iovec):
        self.write(b"".join(iovec))

    def hold_output(self) -> bool:
        """Hold what is written until :meth:`send_held`, to send it in one piece.

        False when output is held already: only the outer holder sends.
        """
        if self._out is not None:
            return False
        self._out = []
        return True

    def send_held(self) -> None:
        """Send what :meth:`write` held back; before anything else touches the transport."""
        out, self._out = self._out, None
        if out:
            self._transmit(out[0] if len(out) == 1 else b"".join(out))

    def send_ahead_of_file(self) -> bool:
        """Send held output now, corked (``MSG_MORE``) to share packets with a file body.

        True when the transport has nothing unsent afterwards, so the caller
        may ``sendfile`` on the socket at once instead of waiting a reactor
        turn for writability; held-back output stays held for what follows.
        """
        out = self._out
        if out:
            self._out = []
            self._transmit(b"".join(out), socket.MSG_MORE)
        return self._direct and idle(self.transport)

    def _transmit(self, data: bytes, flags: int = 0) -> None:
        """``transport.write``, but straight to a plain socket (:mod:`twisthost.directsend`)."""
        if self._direct:
            send_now(self.transport, data, flags)
        else:
            self.transport.write(data)

    def loseConnection(self):
        """Close once what was written is sent."""
        self.send_held()
        if self.transport is not None:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    # -- the response's producer (IConsumer, for requests)

    def registerProducer(self, producer, streaming):
        if self._producer is not None:
            raise RuntimeError(f"Cannot register producer {producer}: {self._producer} was never unregistered")
        if not streaming:
            producer = self._pull = PullToPush(producer)
        self._producer = producer
        if self._waiting_for_transport:
            producer.pauseProducing()

    def unregisterProducer(self):
        if self._pull is not None:
            self._pull.stop()
        self._producer = self._pull = None

    # -- IPushProducer, for the transport

    def pauseProducing(self):
        """The transport's buffer is full: the client must drain it within ``write_timeout``.

        The response's producer is paused, and so is reading: a client that
        does not read its answers sends no more requests; the read timers
        stop meanwhile, since a request waiting unread is not late.
        """
        self._waiting_for_transport = True
        if self._producer is not None:
            self._producer.pauseProducing()
        if self.phase not in ("busy", "tunnel"):
            self._pause_reading()
        if self.phase in _READ_TIMEOUTS:
            self._set_timer(None)
        if self._write_timer is None:
            self._write_timer = self.callLater(self.limits.write_timeout, self._write_stalled)

    def resumeProducing(self):
        self._waiting_for_transport = False
        self._stop_write_timer()
        if self._producer is not None:
            self._producer.resumeProducing()
        if self.phase in _READ_TIMEOUTS and not self._waiting_for_client:
            self._set_timer(self._read_timeout())  # a fresh period
            self._resume_reading()
        elif self.phase == "tunnel":
            self._resume_reading()
        self._catch_up()

    def stopProducing(self):
        if self._producer is not None:
            self._producer.stopProducing()

    def _write_stalled(self) -> None:
        self._write_timer = None
        log.info("dropping {peer}: it stopped reading", peer=str(self.getPeer()))
        self.transport.abortConnection()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            if self._write_timer.active():
                self._write_timer.cancel()
            self._write_timer = None

    # -- the end

    def close_timers(self) -> None:
        """Stop every timer for good (the connection is gone, or HTTP/2 took it over)."""
        self._stop_write_timer()
        if self._phase_timer is not None:
            self._phase_timer.close()  # do not keep a closed connection referenced until it fires

    def connectionLost(self, reason):
        self._out = None
        self._waiting_for_client = False
        self.close_timers()
        if self._pull is not None:
            self._pull.stop()
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            tunnel.connectionLost(reason)
        for request in self.requests:
            request.connectionLost(reason)
