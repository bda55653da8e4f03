"""One HTTP/1.1 connection: Twisted's ``HTTPChannel`` behind a strict gate, with real timeouts.

What this subclass changes, and why:

* Every request head passes :class:`twisthost.http1.HeadReader` and is
  handed to Twisted's request already parsed; hostile or ambiguous input
  gets a 4xx and a closed connection instead of Twisted's lenient reading,
  so a smuggled second request is never served.  Over-long lines get 414/431 where Twisted just
  drops the connection.
* Twisted's single idle timer is restarted by every byte (a client sending
  one byte every 59 s holds a connection forever) and is off while a request
  is handled.  Here the timer follows the phase of the connection:
  ``keepalive_timeout`` idle between requests, ``header_timeout`` for a
  whole head counted from its first byte (from the accept for the first
  request), ``body_timeout`` between two reads of a request body, and
  ``write_timeout`` whenever a response waits on a client that stopped
  reading (its buffers are freed by aborting the connection).
* Errors the channel answers itself have the body every twisthost error has,
  and the connection is closed with a short linger (send, half-close, read
  and drop for ``LINGER`` s) so the client can read the answer even when it
  was still sending; a plain close would reset the connection and lose it.
* Output is batched and, when the socket is idle, sent at once (see
  :meth:`HostChannel.write`): a response costs one ``send`` and no
  reactor round trip, instead of two buffered writes, two epoll updates and
  a write event.
* Pipelined requests are answered only as fast as the client takes the
  answers (:meth:`HostChannel._wait_for_client`): Twisted answers every
  request of a read, however many answers pile up unsent.
* Plain GETs of cached static files, and for proxies, skip Twisted's
  request object (:mod:`twisthost.lane`).

Limits are read from the ``Site`` config at each phase, so a reload applies
to open connections from their next request on.
"""

from __future__ import annotations

import functools
import socket
from http import HTTPStatus

from twisted.protocols import basic
from twisted.web import http
from twisted.web.iweb import INonQueuedRequestFactory

from .directsend import idle, is_plain_socket, send_now
from .http1 import BadRequest, Head, HeadReader, StrictChunkedDecoder
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


def linger_close(protocol, transport) -> None:
    """Half-close after the pending writes, then drop the socket ``LINGER`` s later.

    ``protocol`` is a ``TimeoutMixin`` whose ``timeoutConnection`` aborts;
    it must ignore data from now on.
    """
    # On the class: a TLS transport forwards unknown names to the TCP one under
    # it, whose half-close would go around TLS.
    if hasattr(type(transport), "loseWriteConnection"):
        transport.loseWriteConnection()
        protocol.setTimeout(LINGER)
    else:
        transport.loseConnection()


@functools.cache
def _non_queued(factory) -> bool:
    """``INonQueuedRequestFactory.providedBy``, asked once per factory instead of per request."""
    return INonQueuedRequestFactory.providedBy(factory)


class HostChannel(http.HTTPChannel):
    """The ``HTTPChannel`` of every twisthost HTTP/1.x connection."""

    # "head": reading a request head; "body": its body; "busy": a request is
    # being answered; "idle": between requests; "closing": refused, lingering.
    phase = "head"
    _head: HeadReader | None = None
    _write_timer = None
    _phase_timer: LazyTimer | None = None  # times out the current phase
    _out: list | None = None  # output held back while a read is handled (see write)
    _direct = False  # the transport is a plain kernel socket we may send on at once
    _peer = _host = _secure = None  # per connection, asked for by every request

    @property
    def limits(self):
        """The ``Site`` config in force (replaced on reload)."""
        return self.site.config

    def connectionMade(self):
        transport = self.transport
        self._direct = is_plain_socket(transport)
        if self._direct and transport.socket.family in INET:
            # A response ending in a short segment (a file body's last bytes
            # after a full one) must not wait for the client's delayed ACK:
            # nginx's tcp_nodelay.  Our writes are whole responses already.
            transport.setTcpNoDelay(True)
        self.timeOut = self.limits.header_timeout  # the first head's clock starts at the accept
        super().connectionMade()
        self._expect_head()

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
        """Cached: Twisted's answer is a zope interface adaptation per call."""
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    def can_sendfile(self) -> bool:
        """May a response body be sent with ``sendfile(2)`` on this connection now?"""
        return self._direct and HAVE_SENDFILE and not self.transport.disconnecting

    # -- the phase timer

    def setTimeout(self, period):
        """``TimeoutMixin.setTimeout`` on a :class:`~twisthost.lazytimer.LazyTimer`.

        Every request changes the phase timeout three or four times (head,
        body, none while answering, keep-alive); Twisted's timer cancels or
        reschedules a ``DelayedCall`` each time (heap operations, ~15 µs a
        request).
        """
        previous, self.timeOut = self.timeOut, period
        self._arm(period)
        return previous

    def resetTimeout(self):
        if self._phase_timer is not None and self._phase_timer.deadline is not None and self.timeOut is not None:
            self._arm(self.timeOut)

    def _arm(self, period) -> None:
        timer = self._phase_timer
        if period is None:
            if timer is not None:
                timer.stop()
            return
        if timer is None:
            self._phase_timer = timer = LazyTimer(self.callLater, self.timeoutConnection)
        timer.start(period)

    def _expect_head(self) -> None:
        self._head = HeadReader(self.limits)
        self.MAX_LENGTH = self._head.max_line()

    # -- reading

    def dataReceived(self, data):
        held = self.hold_output()  # not when re-entered from setLineMode: the outer call sends
        try:
            self._receive(data)
        finally:
            if held:
                self.send_held()

    def _receive(self, data) -> None:
        if self.paused:  # requests wait for the client (_wait_for_client): keep their order
            self._buffer += data
            return
        while data:
            if self.phase == "closing":
                return
            if self.phase == "idle":
                if self._backed_up():
                    self._buffer += data  # after what LineReceiver left unread, if anything
                    self._wait_for_client()
                    return
                self.phase = "head"
                self.setTimeout(self.limits.header_timeout)
            if self.phase == "head" and self.line_mode and not self._buffer and not self._busyReceiving:
                end = data.find(b"\r\n\r\n")  # a whole head in this read: no line splitting
                if end > 0:
                    try:
                        head = self._head.read_block(data[:end])
                    except BadRequest as error:
                        self.reject(error.status, error.detail)
                        return
                    if head is not None:
                        self._start_request(head)
                        data = data[end + 4:]  # a body, or pipelined requests
                        continue
            # Not HTTPChannel.dataReceived: it would restart the timer on every byte.
            basic.LineReceiver.dataReceived(self, data)
            if self.phase == "head" and self.line_mode and not self._busyReceiving and not self.paused:
                # The buffer holds no CRLF now, so any CR or LF in it (but a
                # trailing CR) is a bare line end: refuse now, not at the timeout.
                pending = self._buffer
                if b"\n" in pending or b"\r" in pending[:-1]:
                    self.reject(400, "Lines must end with CRLF.")
            return

    def lineReceived(self, line):
        if self.phase == "closing":
            return True
        if not self._head.started and line:
            if self._backed_up():
                self._buffer = line + b"\r\n" + self._buffer  # split off its front: put it back
                self._wait_for_client()
                return None
            if self.phase == "idle":  # a head begins in the read that ended the last answer
                self.phase = "head"
                self.setTimeout(self.limits.header_timeout)
        try:
            head = self._head.feed(line)
        except BadRequest as error:
            return self.reject(error.status, error.detail)
        if head is None:
            self.MAX_LENGTH = self._head.max_line()
            return None
        self._start_request(head)
        return True if self.phase == "closing" else None

    def _start_request(self, head: Head) -> None:
        """Make Twisted's request from a judged head, as ``HTTPChannel.lineReceived`` does.

        Twisted's line parser (``lineReceived``, ``headerReceived``) is
        bypassed: it would split, check and canonicalise again every line
        :mod:`twisthost.http1` has already judged more strictly, a fifth of
        the CPU of a small request.  What it does with the result is kept:
        the request with its headers, the body decoder (our strict chunked
        one), ``allHeadersReceived``, then the body or the request itself.
        """
        self._head = None
        lane = self.site.lane
        request = lane(self, head) if lane is not None else None
        if request is not None:  # a plain GET of a cached file or for a proxy: see twisthost.lane
            self.persistent = True  # the lane takes only HTTP/1.1 without "Connection: close"
            request.answer()  # if it is all out, its finish has called answered_at_once
            if not request.finished and not request.queued:
                self.queue_lane_request(request)
            return
        factory = self.requestFactory
        if _non_queued(factory):
            request = factory(self)
        else:
            request = factory(self, len(self.requests))
        self.requests.append(request)
        self._command, self._path, self._version = head.method, head.target, head.version
        headers = request.requestHeaders
        if isinstance(headers, FastHeaders):
            headers.add_judged(head.headers)
        else:
            for name, value in head.headers:
                headers.addRawHeader(name, value)
        if head.chunked:
            self.length = None
            self._transferDecoder = StrictChunkedDecoder(request.handleContentChunk, self._finishRequestBody)
        elif head.length:
            self.length = head.length
            self._transferDecoder = http._IdentityTransferDecoder(
                head.length, request.handleContentChunk, self._finishRequestBody)
        self.allHeadersReceived()
        if self.length == 0:
            self.allContentReceived()
        else:
            self.setRawMode()

    # -- pipelined requests wait while their answers pile up

    def _backed_up(self) -> bool:
        """Are answers piling up: the transport's buffer full, or much held back in this read?

        One read can carry hundreds of pipelined GETs, each answered at once
        from memory; a client that sends them and never reads would make the
        process hold every answer.
        """
        if self._waitingForTransport:
            return True
        out = self._out
        return bool(out) and sum(map(len, out)) > PIPELINE_OUTPUT

    def _wait_for_client(self) -> None:
        """Leave what is in the buffer unread until the answers so far are sent.

        ``paused`` stops ``LineReceiver``'s loop over its buffer, and
        :meth:`_receive` appends whatever still arrives (a TLS read can hold
        several records); reading stops too, and so does the phase timer: a
        client that stops reading meets ``write_timeout`` instead.
        :meth:`_catch_up` goes on when the transport drains
        (:meth:`resumeProducing`), or on the next reactor turn if sending
        what was held back did not fill it.
        """
        self.paused = True
        self._networkProducer.pauseProducing()
        self.setTimeout(None)
        self.callLater(0, self._catch_up)

    def _catch_up(self) -> None:
        if not self.paused or self._waitingForTransport or self.phase == "closing":
            return
        self.paused = False
        self.setTimeout(self.limits.header_timeout)  # the next head's clock starts as it is read
        data, self._buffer = self._buffer, b""
        if not self._handlingRequest:
            self._networkProducer.resumeProducing()
        self.dataReceived(data)

    def lineLengthExceeded(self, line):
        error = self._head.too_long()
        return self.reject(error.status, error.detail)

    def allHeadersReceived(self):
        super().allHeadersReceived()
        self.phase = "body"
        self.setTimeout(self.limits.body_timeout)

    def rawDataReceived(self, data):
        if self.phase == "body":
            self.resetTimeout()
        super().rawDataReceived(data)

    def allContentReceived(self):
        self.phase = "busy"  # before super(): it may answer and finish right away
        super().allContentReceived()

    def requestDone(self, request):
        if self.persistent:
            self.phase = "idle"
            self._expect_head()
            self._savedTimeOut = self.limits.keepalive_timeout  # Twisted restarts the timer with it
        else:
            self.phase = "closing"
        super().requestDone(request)

    def queue_lane_request(self, request) -> None:
        """Queue a lane answer still under way (a ``sendfile`` waiting for the socket, a proxied
        request), as ``allContentReceived`` queues a Twisted request: what the client sends
        meanwhile is held until its ``finish`` calls :meth:`requestDone`."""
        request.queued = True
        self.requests.append(request)
        self.phase = "busy"
        self._savedTimeOut = self.setTimeout(None)
        self._handlingRequest = True
        self.setRawMode()

    def answered_at_once(self) -> None:
        """A request answered within its read, never queued (:mod:`twisthost.lane`): on to the next."""
        if self.persistent:
            self.phase = "idle"
            self._expect_head()
            self.setTimeout(self.limits.keepalive_timeout)
        else:  # a drain began meanwhile
            self.phase = "closing"
            self.loseConnection()

    # -- refusing

    def reject(self, status: int, detail: str) -> bool:
        """Answer ``status`` ourselves and close: the stream is no longer in sync."""
        self.phase = "closing"
        self._log.info("refused {peer}: {status} {detail}", peer=str(self.transport.getPeer()),
                       status=status, detail=detail)
        for observer in self.site.refusal_observers:
            observer(status)
        self.send_held()
        self.transport.write(error_response(status, detail, self.limits.server_header))
        self._networkProducer.unregisterProducer()
        linger_close(self, self.transport)
        return True  # stops LineReceiver from parsing further lines

    def _respondToBadRequestAndDisconnect(self):
        # Twisted's own refusals (a malformed chunked body) get the uniform page too.
        self.reject(400, "Malformed request body.")

    def timeoutConnection(self):
        if self.phase == "closing":
            self.transport.abortConnection()
        elif self.phase == "body" or (self.phase == "head" and (self._head.started or self._buffer)):
            self.reject(408, "The request did not arrive in time.")
        else:  # idle keep-alive, or a connection that never sent a byte
            super().timeoutConnection()

    # -- writing

    def writeHeaders(self, version, code, reason, headers):
        """Twisted's, through :meth:`write` (Twisted writes the head straight to the transport)."""
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

    def _send100Continue(self):
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # in order with held-back output

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
        self.send_held()
        super().loseConnection()

    def pauseProducing(self):
        """The transport's buffer is full: the client must drain it within ``write_timeout``.

        Twisted stops reading meanwhile, so the read timers stop too: a
        request the client sent is not late while it waits unread.
        """
        super().pauseProducing()
        if self.phase in _READ_TIMEOUTS:
            self.setTimeout(None)
        if self._write_timer is None:
            self._write_timer = self.callLater(self.limits.write_timeout, self._write_stalled)

    def resumeProducing(self):
        self._stop_write_timer()
        super().resumeProducing()
        if self.phase in _READ_TIMEOUTS and not self.paused:
            self.setTimeout(getattr(self.limits, _READ_TIMEOUTS[self.phase]))  # a fresh period
        self._catch_up()

    def _write_stalled(self) -> None:
        self._write_timer = None
        self._log.info("dropping {peer}: it stopped reading", peer=str(self.transport.getPeer()))
        self.transport.abortConnection()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            if self._write_timer.active():
                self._write_timer.cancel()
            self._write_timer = None

    def connectionLost(self, reason):
        self._out = None
        self.paused, self._buffer = False, b""  # pipelined requests left waiting are dropped
        self._stop_write_timer()
        super().connectionLost(reason)
        if self._phase_timer is not None:
            self._phase_timer.close()  # do not keep a closed connection referenced until it fires
