"""The HTTP factory every listener shares.

A thin ``twisted.web.server.Site`` subclass: tracebacks are never shown to
clients, form bodies are not parsed into memory (WSGI apps read the raw body
themselves), and the root resource can be swapped on reload while requests
already routed finish on the old tree.  Connections are admitted by
``limits.ConnectionSlots`` and spoken to by ``channel.HostChannel`` (strict
parsing, timeouts), both reading the ``Site`` config given here.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.web import server

from ._compat import h2_connection
from .bodylimit import BodyLimitRequest
from .channel import HostChannel
from .config import Site
from .graceful import Connections
from .lane import lane_request
from .limits import ConnectionSlots, fit_open_files
from .request import DefaultHeadersRequest, SafeErrorsRequest


class HostRequest(BodyLimitRequest, SafeErrorsRequest, DefaultHeadersRequest):
    """Every request: service body limits, error pages without internals, cheap default headers."""


class HostConnection(Protocol):
    """One accepted connection: HTTP/1.x on a ``HostChannel``, or HTTP/2 when TLS negotiated ``h2``.

    ALPN's answer is known with the first bytes (the TLS handshake is done by
    then), so the switch happens there; afterwards the transport's calls go
    straight to the chosen protocol.  The slot is released here, not in the
    channel, because an HTTP/2 connection replaces the channel.
    """

    slot = None  # (ConnectionSlots, peer address)

    def __init__(self, channel: HostChannel):
        self.channel = channel  # HostChannel, or the H2Connection that replaced it

    @property
    def callLater(self):
        """The clock of the channel's timers (a test may give it a ``task.Clock``'s)."""
        return self.channel.callLater

    @callLater.setter
    def callLater(self, call_later) -> None:
        self.channel.callLater = call_later

    def makeConnection(self, transport):
        self.transport = transport
        self.channel.makeConnection(transport)

    def dataReceived(self, data):
        channel = self.channel
        if getattr(channel.transport, "negotiatedProtocol", None) == b"h2":
            channel = self.channel = self._switch_to_http2(channel)
        self.dataReceived = channel.dataReceived  # decided: no more look-ups
        channel.dataReceived(data)

    def _switch_to_http2(self, channel: HostChannel):
        """Twisted's ``H2Connection`` in the channel's place, with its site and clock."""
        transport = channel.transport
        transport.unregisterProducer()
        channel.close_timers()
        h2 = h2_connection()
        h2.requestFactory, h2.site, h2.factory = channel.requestFactory, channel.site, channel.factory
        h2.timeOut, h2.callLater = channel.site.timeOut, channel.callLater
        h2.makeConnection(transport)
        transport.registerProducer(h2, True)
        return h2

    def connectionLost(self, reason):
        try:
            self.channel.connectionLost(reason)
        finally:
            slots, addr = self.slot
            slots.release(addr)


class HostSite(server.Site):
    """The ``HTTPFactory`` for all listeners of one twisthost process."""

    displayTracebacks = False
    requestFactory = HostRequest

    def __init__(self, root, config: Site | None = None, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(root, **kwargs)
        self.config = config if config is not None else Site()  # limits, timeouts, server_header
        self.slots = ConnectionSlots()
        self.connections = Connections(self.reactor)  # for graceful stop and max_requests
        self.finish_observers: list = []  # callables(request): access log, metrics
        #: callables(request): requests the connection refused (400, 408, 413, 414, 431...),
        #: with what is known of them (``HostChannel._refused_request``)
        self.refusal_observers: list = []


    @property
    def config(self) -> Site:
        return self._config

    @config.setter
    def config(self, config: Site) -> None:
        self._config = config
        value = config.server_header
        #: The ``Server`` header value every response gets, from the config in force.
        self.server_header = value.encode("ascii") if value else None
        hooks = config.hooks or {}
        #: Answers plain GETs of cached static files without a ``Request`` (None: never),
        #: unless request hooks are to be handed Twisted's request object.
        self.lane = None if "pre_request" in hooks or "post_request" in hooks else lane_request

    def buildProtocol(self, addr):
        refusal = self.slots.admit(addr, self.config)
        if refusal is not None:
            return refusal
        channel = HostChannel()
        channel.site = channel.factory = self
        channel.requestFactory = self.requestFactory
        channel.callLater = self.reactor.callLater
        protocol = HostConnection(channel)
        protocol.factory = self
        protocol.slot = (self.slots, addr)
        self.connections.track(protocol)
        return protocol

    def startFactory(self) -> None:
        fit_open_files(self.config.max_connections)
        super().startFactory()

    def getResourceFor(self, request):
        self.connections.request_started(request)
        return super().getResourceFor(request)

    def log(self, request) -> None:
        """Replaces Twisted's access log (a legacy-log call per request)."""
        for observer in self.finish_observers:
            observer(request)

    def swap_root(self, root, config: Site | None = None) -> None:
        """Serve new requests from ``root`` and limits from ``config``; routed requests keep the old tree."""
        self.resource = root
        if config is not None:
            self.config = config
