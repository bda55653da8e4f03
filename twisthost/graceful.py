"""Open HTTP connections of a site, and closing them gracefully.

A graceful stop must wait for every kind of in-flight work (WSGI, proxied
streams and tunnels, static files, .rpy scripts) without each service having
to report it, so the unit tracked here is the connection: a connection with a
request on it is busy, one without is idle.  ``drain`` closes idle
connections at once, lets busy ones finish their current response (then
closes them: no more keep-alive), and aborts whatever is left at the deadline,
so a stop never hangs on a stuck client or application.  A connection
accepted moments ago counts as busy for ``FRESH`` seconds: its client is
still sending the first request (or the TLS handshake before it), and closing
it would fail that request, e.g. on a worker retiring at a reload.

Past the connections, two more things could hold a stop: services that wait
for threads (``stop_by`` stops waiting at the graceful deadline) and code
that keeps the process alive after the reactor (``LastResort``).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger()


def _channel(protocol):
    """The HTTP/1.1 channel or HTTP/2 connection behind the protocol switch (``server.HostConnection``)."""
    return getattr(protocol, "channel", protocol)


def _in_progress(protocol) -> list:
    """The requests (HTTP/1.1) or streams (HTTP/2) under way on a connection."""
    channel = _channel(protocol)
    return [*getattr(channel, "requests", ()), *getattr(channel, "streams", {}).values()]


def _busy(protocol) -> bool:
    return bool(_in_progress(protocol))


class Connections:
    """The live connections of one ``HostSite`` and the requests started on them."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.open: dict = {}  # protocol -> when it was accepted (reactor seconds)
        self.requests = 0  # started since the process began: what max_requests counts
        self.request_observers: list = []  # callables(request), run as each request starts
        self._draining = False
        self._drained: list[defer.Deferred] = []

    def track(self, protocol) -> None:
        """Remember ``protocol`` until its connection is lost."""
        self.open[protocol] = self.reactor.seconds()
        lost = protocol.connectionLost

        def connection_lost(reason):
            self.open.pop(protocol, None)
            vars(protocol).pop("connectionLost", None)  # this closure holds the protocol: no cycle left
            try:
                return lost(reason)
            finally:
                if self._draining and not self.open:
                    self._fire()

        protocol.connectionLost = connection_lost

    def in_flight(self) -> int:
        """Requests (HTTP/1.1) and streams (HTTP/2) under way now; the metrics' gauge."""
        return sum(len(_in_progress(protocol)) for protocol in list(self.open))

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
        return self._poll(self._sweep, done, timeout, self._abort)

    SWEEP = 0.2
    FRESH = 1.0

    def settle(self, timeout: float) -> defer.Deferred:
        """Fire once the requests under way now are done (or their connections gone), at most ``timeout`` s.

        A reload stops the old tree's services (thread pools, proxy pools)
        only then, so a long response keeps the pool it started on.  Polled
        every ``SWEEP`` s, so requests pay nothing for it.
        """
        pending = [(protocol, item) for protocol in self.open for item in _in_progress(protocol)]
        settled: defer.Deferred = defer.Deferred()
        if not pending:
            settled.callback(None)
            return settled

        def check():
            pending[:] = [(p, item) for p, item in pending if p in self.open and item in _in_progress(p)]
            if not pending:
                settled.callback(None)

        return self._poll(check, settled, timeout, lambda: settled.callback(None))

    def _poll(self, step, done: defer.Deferred, timeout: float, on_timeout) -> defer.Deferred:
        """Run ``step`` every ``SWEEP`` s and ``on_timeout`` after ``timeout`` s, until ``done`` fires."""
        poller = task.LoopingCall(step)
        poller.clock = self.reactor
        poller.start(self.SWEEP, now=False)
        deadline = self.reactor.callLater(timeout, on_timeout)

        def stop_timers(result):
            poller.stop()
            if deadline.active():
                deadline.cancel()
            return result

        return done.addBoth(stop_timers)

    def _sweep(self) -> None:
        fresh_since = self.reactor.seconds() - self.FRESH
        for protocol, accepted in list(self.open.items()):
            if accepted <= fresh_since and not _busy(protocol):
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


def stop_by(service, deadline: float, reactor) -> defer.Deferred:
    """Stop ``service``, waiting for it until ``deadline`` (reactor seconds) at the latest.

    A WSGI pool waits for its threads; once the drain has used up the
    graceful time, a thread still running is stuck in the app and not worth
    more waiting: pool threads are daemon threads and end with the process.
    """
    waited: defer.Deferred = defer.Deferred()

    def give_up():
        log.warn("graceful timeout: not waiting any longer for thread pools and other services to stop")
        waited.callback(None)

    timer = reactor.callLater(max(0.0, deadline - reactor.seconds()), give_up)

    def stopped(result):
        if timer.active():
            timer.cancel()
            waited.callback(None)
        return result

    defer.maybeDeferred(service.stopService).addBoth(stopped).addErrback(
        lambda failure: log.failure("stopping {service} failed", failure, service=service))
    return waited


#: Seconds past graceful_timeout after which a stopping process ends no matter what.
EXIT_SLACK = 0.75


class LastResort:
    """Ends this process a set time after a stop signal, whatever holds it.

    The graceful path finishes sooner (``drain`` and ``stop_by`` are
    bounded), but application code can keep a process alive past it: a
    non-daemon thread the app started (joined at interpreter exit), a
    blocking call in the reactor thread (no reactor timer fires), a hung
    ``getaddrinfo`` in the reactor's thread pool (joined at shutdown).  A
    daemon thread is immune to all of these.  It is started up front and
    ``arm`` only stores a deadline and writes a byte to a pipe, so it takes
    no lock and is safe in a signal handler (starting a thread there could
    deadlock: the interrupted main thread may hold the lock ``Thread.start``
    needs).  Exit status 1 says the stop was forced.
    """

    def __init__(self):
        self._deadline: float | None = None
        self._seconds = 0.0
        self._wake_read, self._wake_write = os.pipe()
        threading.Thread(target=self._run, name="twisthost-last-resort", daemon=True).start()

    def on_signal(self, signum: int, graceful_timeout: float, extra: float = 0.0) -> None:
        """Arm for a stop signal: TERM allows ``graceful_timeout``, INT/QUIT no time.

        ``extra`` is time the process needs past that (a master SIGKILLing
        late workers); ``EXIT_SLACK`` comes on top.  Other signals do nothing.
        """
        if signum == signal.SIGTERM:
            self.arm(graceful_timeout + extra + EXIT_SLACK)
        elif signum in (signal.SIGINT, signal.SIGQUIT):
            self.arm(extra + EXIT_SLACK)

    def arm(self, seconds: float) -> None:
        """End the process ``seconds`` from now (an earlier deadline already set stays)."""
        deadline = time.monotonic() + seconds
        if self._deadline is None or deadline < self._deadline:
            self._deadline, self._seconds = deadline, seconds
        os.write(self._wake_write, b"!")

    def _run(self) -> None:
        os.read(self._wake_read, 1)
        while (left := self._deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))  # a later, shorter arm (INT after TERM) is seen
        me = threading.current_thread()
        others = [thread.name for thread in threading.enumerate() if thread is not me]
        # Straight to fd 2 (the master's pipe, the terminal or the journal): the
        # log machinery may be what is stuck.
        os.write(2, (
            f"twisthost: process {os.getpid()} still running {self._seconds:g}s after the stop began"
            f" (threads: {', '.join(others)}): exiting now\n"
        ).encode())
        os._exit(1)
