"""Open HTTP connections of a site, and closing them gracefully.

A graceful stop must wait for every kind of in-flight work (WSGI, proxied
streams and tunnels, static files, .rpy scripts) without each service having
to report it, so the unit tracked here is the connection: a connection with a
request on it is busy, one without is idle.  ``drain`` closes idle
connections at once, lets busy ones finish their current response (then
closes them: no more keep-alive), and aborts whatever is left at the deadline,
so a stop never hangs on a stuck client or application.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger()


def _channel(protocol):
    """The HTTP/1.1 channel or HTTP/2 connection behind Twisted's protocol switcher."""
    return getattr(protocol, "_channel", protocol)


def _busy(protocol) -> bool:
    channel = _channel(protocol)
    return bool(getattr(channel, "requests", None) or getattr(channel, "streams", None))


class Connections:
    """The live connections of one ``HostSite`` and the requests started on them."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.open: set = set()
        self.requests = 0  # started since the process began: what max_requests counts
        self.request_observers: list = []  # callables(request), run as each request starts
        self._draining = False
        self._drained: list[defer.Deferred] = []

    def track(self, protocol) -> None:
        """Remember ``protocol`` until its connection is lost."""
        self.open.add(protocol)
        lost = protocol.connectionLost

        def connection_lost(reason):
            self.open.discard(protocol)
            try:
                return lost(reason)
            finally:
                if self._draining and not self.open:
                    self._fire()

        protocol.connectionLost = connection_lost

    def request_started(self, request) -> None:
        self.requests += 1
        if self._draining:
            _close_after(request)
        for observer in self.request_observers:
            observer(request)

    def drain(self, timeout: float) -> defer.Deferred:
        """Close connections gracefully; fire once all are gone (at most ``timeout`` s).

        Idle connections are closed now and then every ``SWEEP`` seconds, which
        also catches HTTP/2 connections whose last stream just ended.
        """
        self._draining = True
        done = defer.Deferred()
        self._drained.append(done)
        for protocol in list(self.open):
            for request in getattr(_channel(protocol), "requests", ()):
                _close_after(request)
        self._sweep()
        if not self.open:
            self._fire()
            return done
        sweeper = task.LoopingCall(self._sweep)
        sweeper.clock = self.reactor
        sweeper.start(self.SWEEP, now=False)
        deadline = self.reactor.callLater(timeout, self._abort)

        def stop_timers(result):
            sweeper.stop()
            if deadline.active():
                deadline.cancel()
            return result

        return done.addBoth(stop_timers)

    SWEEP = 0.2

    def _sweep(self) -> None:
        for protocol in list(self.open):
            if not _busy(protocol):
                _channel(protocol).transport.loseConnection()

    def _abort(self) -> None:
        if self.open:
            log.warn(
                "graceful timeout: closing {count} connection(s) still busy", count=len(self.open)
            )
        for protocol in list(self.open):
            _channel(protocol).transport.abortConnection()
        self._fire()

    def _fire(self) -> None:
        waiting, self._drained = self._drained, []
        for done in waiting:
            done.callback(None)


def _close_after(request) -> None:
    """End the connection once this request's response is done."""
    channel = getattr(request, "channel", None)
    if hasattr(channel, "persistent"):
        channel.persistent = False
    if not getattr(request, "startedWriting", True):
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
