"""One HTTP/1.1 connection: Twisted's ``HTTPChannel`` behind a strict gate, with real timeouts.

What this subclass changes, and why:

* Every request head passes :class:`twisthost.http1.HeadReader` before
  Twisted parses it; hostile or ambiguous input gets a 4xx and a closed
  connection instead of Twisted's lenient reading, so a smuggled second
  request is never served.  Over-long lines get 414/431 where Twisted just
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
* Twisted's ``Server: TwistedWeb/<version>`` becomes ``Site(server_header=)``.

Limits are read from the ``Site`` config at each phase, so a reload applies
to open connections from their next request on.
"""

from __future__ import annotations

from http import HTTPStatus

from twisted.protocols import basic
from twisted.web import http, server

from .http1 import BadRequest, HeadReader, StrictChunkedDecoder
from .pages import error_body

LINGER = 2.0  # seconds a refused client may keep sending before the socket is aborted


def error_response(status: int, detail: str, server_header: str | None) -> bytes:
    """A complete ``Connection: close`` response with the uniform error body."""
    body = error_body(status, detail)
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
        "Date: " + http.datetimeToString().decode("ascii"),
    ]
    if server_header:
        lines.append(f"Server: {server_header}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def linger_close(protocol, transport) -> None:
    """Half-close after the pending writes, then drop the socket ``LINGER`` s later.

    ``protocol`` is a ``TimeoutMixin`` whose ``timeoutConnection`` aborts;
    it must ignore data from now on.
    """
    if hasattr(transport, "loseWriteConnection"):
        transport.loseWriteConnection()
        protocol.setTimeout(LINGER)
    else:
        transport.loseConnection()


class HostChannel(http.HTTPChannel):
    """The ``HTTPChannel`` of every twisthost HTTP/1.x connection."""

    # "head": reading a request head; "body": its body; "busy": a request is
    # being answered; "idle": between requests; "closing": refused, lingering.
    phase = "head"
    _head: HeadReader | None = None
    _write_timer = None

    @property
    def limits(self):
        """The ``Site`` config in force (replaced on reload)."""
        return self.site.config

    def connectionMade(self):
        self.timeOut = self.limits.header_timeout  # the first head's clock starts at the accept
        super().connectionMade()
        self._expect_head()

    def _expect_head(self) -> None:
        limits = self.limits
        self._head = HeadReader(limits)
        self.MAX_LENGTH = self._head.max_line()
        # Twisted's own head limits stay as loose as the gate's, never stricter.
        self.maxHeaders = limits.max_headers
        self.totalHeadersSize = limits.max_request_line + limits.max_header_size

    # -- reading

    def dataReceived(self, data):
        if self.phase == "closing":
            return
        if self.phase == "idle":
            self.phase = "head"
            self.setTimeout(self.limits.header_timeout)
        # Not HTTPChannel.dataReceived: it would restart the timer on every byte.
        basic.LineReceiver.dataReceived(self, data)
        if self.phase == "head" and self.line_mode and not self._busyReceiving:
            # The buffer holds no CRLF now, so any CR or LF in it (but a
            # trailing CR) is a bare line end: refuse now, not at the timeout.
            pending = self._buffer
            if b"\n" in pending or b"\r" in pending[:-1]:
                self.reject(400, "Lines must end with CRLF.")

    def lineReceived(self, line):
        if self.phase == "closing":
            return True
        try:
            head = self._head.feed(line)
        except BadRequest as error:
            return self.reject(error.status, error.detail)
        if head is None:
            self.MAX_LENGTH = self._head.max_line()
            return None
        self._head = None
        for accepted in head + [b""]:
            super().lineReceived(accepted)
            if self.phase == "closing":
                return True
        return None

    def lineLengthExceeded(self, line):
        error = self._head.too_long()
        return self.reject(error.status, error.detail)

    def allHeadersReceived(self):
        super().allHeadersReceived()
        decoder = self._transferDecoder
        if type(decoder) is http._ChunkedTransferDecoder:
            self._transferDecoder = StrictChunkedDecoder(decoder.dataCallback, decoder.finishCallback)
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

    # -- refusing

    def reject(self, status: int, detail: str) -> bool:
        """Answer ``status`` ourselves and close: the stream is no longer in sync."""
        self.phase = "closing"
        self._log.info("refused {peer}: {status} {detail}", peer=str(self.transport.getPeer()),
                       status=status, detail=detail)
        for observer in self.site.refusal_observers:
            observer(status)
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
        if headers.getRawHeaders(b"server") == [server.version]:
            wanted = self.limits.server_header
            if wanted:
                headers.setRawHeaders(b"server", [wanted.encode("ascii")])
            else:
                headers.removeHeader(b"server")
        super().writeHeaders(version, code, reason, headers)

    def pauseProducing(self):
        """The transport's buffer is full: the client must drain it within ``write_timeout``."""
        super().pauseProducing()
        if self._write_timer is None:
            self._write_timer = self.callLater(self.limits.write_timeout, self._write_stalled)

    def resumeProducing(self):
        self._stop_write_timer()
        super().resumeProducing()

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
        self._stop_write_timer()
        super().connectionLost(reason)
