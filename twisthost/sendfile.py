"""Zero-copy file bodies: ``os.sendfile`` paced by the reactor's write readiness.

Twisted has no sendfile (ticket #585, open since 2004): file bodies are read
into Python 64 KiB at a time and copied through the transport's buffer.  For
a plain TCP (or UNIX) socket the kernel can copy page cache to socket itself.

How it is driven, without a second registration of the socket in the reactor:
the HTTP channel is the transport's streaming producer, and a transport
whose buffer empties calls ``producer.resumeProducing()`` if it marked that
producer paused.  So after each ``sendfile`` the producer marks the channel
paused and asks the transport to watch for writability; when the socket can
take more the channel forwards ``resumeProducing`` to us.  The first
``sendfile`` does not wait: the headers are sent corked (``MSG_MORE``) and
the file follows at once, so a small file leaves in as few packets as nginx's
``tcp_nopush`` gives, without a reactor turn.  Nothing is ever buffered in
user space, so a client that stops reading costs one open file, not memory.

TLS and HTTP/2 transports cannot take raw file bytes; :func:`can_sendfile`
says no for them and the caller uses Twisted's buffered producers instead.
"""

from __future__ import annotations

import os

from twisted.internet import interfaces
from twisted.python import log
from zope.interface import implementer

HAVE_SENDFILE = hasattr(os, "sendfile")


def can_sendfile(request) -> bool:
    """True when ``request`` is HTTP/1.x straight on a kernel socket (no TLS): the channel knows."""
    can = getattr(request.channel, "can_sendfile", None)  # HTTP/2 streams have none
    return can is not None and can()


@implementer(interfaces.IPushProducer)
class SendfileProducer:
    """Send ``count`` bytes of ``file`` from ``offset`` as the response body.

    The response status and headers (with Content-Length) must be set before
    :meth:`start`; the producer finishes the request when all bytes are out,
    and aborts the connection if the file shrank or the socket failed, since
    a short body under a promised Content-Length cannot be repaired.
    """

    def __init__(self, request, file, offset: int, count: int):
        self.request = request
        self.file = file
        self.offset = offset
        self.remaining = count
        self.transport = request.channel.transport
        self.done = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.write(b"")  # the headers
        send_ahead = getattr(self.request.channel, "send_ahead_of_file", None)
        if send_ahead is not None and send_ahead():
            self.resumeProducing()  # the headers left corked: the file's first bytes join them
        else:
            self._wait_writable()

    def _wait_writable(self) -> None:
        self.transport.producerPaused = True
        self.transport.startWriting()

    def resumeProducing(self) -> None:
        if self.done:
            return
        try:
            sent = os.sendfile(
                self.transport.fileno(), self.file.fileno(), self.offset, self.remaining
            )
        except BlockingIOError:
            sent = None
        except OSError as error:
            self._abort(f"sendfile failed: {error}")
            return
        if sent == 0:
            self._abort("file shrank while being sent")
            return
        if sent:
            self.offset += sent
            self.remaining -= sent
            self.request.sentLength += sent
        if self.remaining:
            self._wait_writable()
        else:
            self._close()
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        """Nothing to pause: bytes only move when the transport calls us."""

    def stopProducing(self) -> None:
        """The connection went away: release the file."""
        self._close()

    def _abort(self, why: str) -> None:
        log.msg(f"sendfile: {why}; aborting the connection")
        self._close()
        self.transport.abortConnection()

    def _close(self) -> None:
        if not self.done:
            self.done = True
            self.file.close()
