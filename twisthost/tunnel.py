"""``Connection: Upgrade`` (WebSocket) through the proxy: a raw byte splice.

The upgrade request goes to the upstream on a connection of its own (not
from the keep-alive pool, which only speaks request/response); from then on
whatever either side sends, the upstream's ``101 Switching Protocols``
included, is copied to the other.  Back-pressure is kept both ways (each
transport is the producer of the other) and a tunnel silent for
``idle_timeout`` in both directions is closed.  The client connection leaves
the HTTP channel for good, so it also outlives a config reload.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from .proxy_client import connect_protocol

log = Logger()


def can_tunnel(request) -> bool:
    """Only an HTTP/1.1 connection can be handed over (not HTTP/2 streams)."""
    return request.clientproto == b"HTTP/1.1" and hasattr(request.channel, "upgrade")


class _End(Protocol):
    """One end of the splice: what it receives is written to the other end."""

    def __init__(self, splice: "Splice"):
        self.splice = splice
        self.other: _End | None = None

    def dataReceived(self, data: bytes) -> None:
        self.splice.touch()
        self.other.transport.write(data)

    def connectionLost(self, reason=None) -> None:
        self.splice.close()


class Splice:
    """Two connections glued together until either closes or both go idle."""

    def __init__(self, idle_timeout: float):
        self.idle_timeout = idle_timeout
        self.client, self.upstream = _End(self), _End(self)
        self.client.other, self.upstream.other = self.upstream, self.client
        self.timer = None
        self.closed = False

    def start(self, reactor) -> None:
        self.timer = reactor.callLater(self.idle_timeout, self.close)

    def touch(self) -> None:
        if self.timer.active():
            self.timer.reset(self.idle_timeout)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        for end in (self.client, self.upstream):
            if end.transport is not None:
                end.transport.loseConnection()


def open_tunnel(request, upstream, head: bytes, body: bytes, idle_timeout: float, reactor, failed):
    """Connect to ``upstream``, send the request, then splice it with the client.

    ``failed(reason)`` is called when no connection could be opened; the
    client's request is then still an ordinary request to answer.
    """
    splice = Splice(idle_timeout)
    d = connect_protocol(upstream.endpoint, splice.upstream)

    def connected(_):
        channel = request.channel
        if channel is None or channel.transport is None:  # the client left meanwhile
            splice.close()
            return
        splice.start(reactor)
        splice.upstream.transport.write(head + body)
        early = channel.upgrade(splice.client)  # and the bytes the client sent after the request
        if early:
            splice.upstream.transport.write(early)
        # Back-pressure: a full client socket pauses reads from the upstream
        # (through the channel, which is its transport's producer) and vice versa.
        channel.registerProducer(splice.upstream.transport, True)
        splice.upstream.transport.registerProducer(channel.transport, True)
        channel.transport.resumeProducing()

    def not_connected(reason):
        splice.close()
        failed(reason)

    d.addCallbacks(connected, not_connected)
    d.addErrback(lambda f: log.failure("tunnel setup failed", f))
    return d
