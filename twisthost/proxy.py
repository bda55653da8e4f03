"""``Proxy(...)``: a reverse proxy on ``Agent`` with a persistent ``HTTPConnectionPool``.

Twisted's ``ReverseProxyResource`` opens an HTTP/1.0 connection per request
and has no timeouts, balancing or health.  Here one ``Gateway`` per
``Proxy`` config owns the upstreams, the balancer, the keep-alive pool and
the health checker; each client request becomes an ``Exchange`` that picks
an upstream, retries where that is safe, and streams the response back with
back-pressure.  Request bodies arrive whole (Twisted's server buffers them
before ``render``), so they are sent with a ``Content-Length`` and can be
replayed to the next upstream on a retry.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import error as net_error
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .balance import Balancer
from .forwarded import resolve_client
from .health import HealthChecker
from .pages import write_error
from .proxy_headers import connection_tokens, copy_response_headers, is_upgrade, upstream_headers
from .tunnel import can_tunnel, open_tunnel, request_head
from .upstream import Upstream, UpstreamEndpoints

log = Logger()

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_NEVER_CONNECTED = (net_error.ConnectError, net_error.DNSLookupError)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_NO_BODY_STATUS = frozenset({204, 304})


def build_proxy(config, context) -> Resource:
    gateway = Gateway(config, context.reactor)
    gateway.setServiceParent(context.services)
    context.shared.setdefault("upstreams", []).extend(gateway.upstreams)
    return ProxyResource(gateway, context.site.trusted_proxies)


class Gateway(Service):
    """Everything one ``Proxy`` config shares across requests.

    As a service it starts the health checks and, when stopped (shutdown or
    a reload that replaced it), closes the idle pooled connections.
    """

    def __init__(self, config, reactor):
        self.config, self.reactor = config, reactor
        primaries = [Upstream(url, i, config, reactor) for i, url in enumerate(config.upstreams)]
        backups = [
            Upstream(url, len(primaries) + i, config, reactor, backup=True)
            for i, url in enumerate(config.backup)
        ]
        self.upstreams = primaries + backups
        self.balancer = Balancer(config.balance, primaries, backups)
        self.pool = HTTPConnectionPool(reactor, persistent=config.keepalive > 0)
        self.pool._factory = _ClientFactory
        self.pool.maxPersistentPerHost = config.keepalive
        self.pool.cachedConnectionTimeout = config.keepalive_timeout
        self.agent = Agent.usingEndpointFactory(reactor, UpstreamEndpoints(self.upstreams), self.pool)
        self.checker = (
            HealthChecker(config.health, self.upstreams, self.agent, reactor) if config.health else None
        )

    def startService(self):
        super().startService()
        if self.checker is not None:
            self.checker.startService()

    def stopService(self):
        super().stopService()
        if self.checker is not None:
            self.checker.stopService()
        return self.pool.closeCachedConnections()


class _ClientProtocol(HTTP11ClientProtocol):
    """Twisted's HTTP/1.1 client with TCP_NODELAY, telling which headers the
    upstream's ``Connection`` lists.

    ``Response.headers`` leaves out ``Connection`` itself, yet the names it
    lists are hop-by-hop too and must not reach the client; the parser that
    saw it is only reachable here, so each response gets ``hop_by_hop``.
    """

    def connectionMade(self):
        super().connectionMade()
        # Request head and body are separate writes: without TCP_NODELAY the
        # body can wait for the upstream's delayed ACK (40 ms), like nginx's tcp_nodelay.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)

    def request(self, request):
        d = super().request(request)
        parser = getattr(self, "_parser", None)

        def tag(response):
            response.hop_by_hop = connection_tokens(parser.connHeaders.getRawHeaders(b"connection"))
            return response

        return d.addCallback(tag) if parser is not None else d


class _ClientFactory(_HTTP11ClientFactory):
    noisy = False  # no "Starting factory" log line per upstream connection

    def buildProtocol(self, addr):
        return _ClientProtocol(self._quiescentCallback)


class ProxyResource(Resource):
    """The leaf resource a ``Proxy`` route is built into."""

    isLeaf = True

    def __init__(self, gateway: Gateway, trusted_proxies):
        super().__init__()
        self.gateway, self.trusted = gateway, trusted_proxies

    def render(self, request):
        if not request.uri.startswith(b"/"):
            return write_error(request, 400, "Only origin-form request targets are proxied.")
        client = resolve_client(request, self.trusted)
        config = self.gateway.config
        upgrade = config.websocket and is_upgrade(request) and can_tunnel(request)
        Exchange(self.gateway, request, client, upgrade).start()
        return NOT_DONE_YET


class Exchange:
    """One client request: choose an upstream, try, maybe retry, stream the answer."""

    def __init__(self, gateway: Gateway, request, client, upgrade: bool):
        self.gateway, self.config, self.reactor = gateway, gateway.config, gateway.reactor
        self.request, self.client, self.upgrade = request, client, upgrade
        config = self.config
        self.host = config.host.encode("idna") if config.host else (
            request.requestHeaders.getRawHeaders(b"host") or [None]
        )[0]
        self.path = self._path_below_mount() if config.strip_prefix else request.uri
        content = request.content
        content.seek(0, 2)
        self.body_length = content.tell()
        self.tried: list[Upstream] = []
        self.upstream: Upstream | None = None
        self.pending = None  # the Agent Deferred in flight
        self.stream = None  # the BodyStream once the response head arrived
        self.timer = None
        self.timed_out = False
        self.gone = False
        self.deadline = self.reactor.seconds() + config.try_duration

    def _path_below_mount(self) -> bytes:
        raw = self.request.uri
        depth = len(self.request.prepath)
        if depth == 0:
            return raw
        path, mark, query = raw.partition(b"?")
        rest = path.split(b"/")[1 + depth:]
        return b"/" + b"/".join(rest) + mark + query

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._client_gone)
        self.try_next(None)

    # -- choosing and trying ---------------------------------------------------

    def try_next(self, last_status) -> None:
        now = self.reactor.seconds()
        upstream = None
        if last_status is None or (len(self.tried) <= self.config.retries and now < self.deadline):
            upstream = self.gateway.balancer.choose(now, self.tried, self.client.addr, self.request.uri)
        if upstream is None:
            self._give_up(last_status)
            return
        self.tried.append(upstream)
        self.upstream = upstream
        host = self.host or upstream.netloc
        headers = upstream_headers(self.request, self.client, host, self.config, self.upgrade)
        path = upstream.base_path + self.path
        if self.upgrade:
            self._tunnel(upstream, headers, path)
            return
        upstream.active += 1
        self.timed_out = False
        self.pending = self.gateway.agent.request(
            self.request.method, upstream.origin + path, headers, self._body()
        )
        self.timer = self.reactor.callLater(self.config.response_timeout, self._response_timeout)
        self.pending.addCallbacks(self._response, self._failed)
        self.pending.addErrback(self._bug)

    def _body(self):
        if not self.body_length and self.request.method not in _BODY_METHODS:
            return None
        self.request.content.seek(0)
        return FileBodyProducer(_Unclosed(self.request.content))

    def _response_timeout(self) -> None:
        self.timed_out = True
        self.pending.cancel()

    def _failed(self, failure) -> None:
        self._settle()
        upstream = self.upstream
        upstream.active -= 1
        if self.gone:
            return
        upstream.failed(self.reactor.seconds())
        status = 504 if self.timed_out else 502
        log.warn(
            "proxy: {method} {url} failed: {why}",
            method=self.request.method.decode("latin-1"), url=upstream.url,
            why="no answer within response_timeout" if self.timed_out else failure.getErrorMessage(),
        )
        # Replaying is safe when the request never left, or when repeating it is harmless.
        if failure.check(*_NEVER_CONNECTED) or self.request.method in IDEMPOTENT:
            self.try_next(status)
        else:
            self._give_up(status)

    def _give_up(self, status) -> None:
        if status is None:
            self._error(self.config.unavailable_status, "No upstream server is available.")
        elif status == 504:
            self._error(504, "The upstream server did not answer in time.")
        else:
            self._error(502, "The upstream server could not be reached or failed to answer.")

    def _settle(self) -> None:
        """The try is over: stop its response timer, release the upstream slot."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.pending = None

    def _error(self, status: int, detail: str) -> None:
        if self.gone:
            return
        self.request.write(write_error(self.request, status, detail))
        self.request.finish()

    def _bug(self, failure) -> None:
        log.failure("proxy: unexpected error", failure)
        if not self.gone and not self.request.startedWriting:
            self._error(502, "The proxy failed.")

    # -- the response ----------------------------------------------------------

    def _response(self, response) -> None:
        self._settle()
        request = self.request
        if self.gone:
            response.deliverBody(_Discard())
            self.upstream.active -= 1
            return
        request.setResponseCode(response.code, response.phrase)
        request.defaultContentType = None
        copy_response_headers(response, request.responseHeaders, self.config)
        if request.method == b"HEAD":
            length = response.headers.getRawHeaders(b"content-length")
            if length:
                request.responseHeaders.setRawHeaders(b"content-length", length[-1:])
        elif isinstance(response.length, int) and response.code not in _NO_BODY_STATUS:
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % response.length])
        self.stream = BodyStream(self)
        response.deliverBody(self.stream)

    def _client_gone(self, failure) -> None:
        self.gone = True
        if self.pending is not None:
            self.pending.cancel()
        elif self.stream is not None and self.stream.transport is not None:
            self.stream.transport.stopProducing()

    # -- upgrades --------------------------------------------------------------

    def _tunnel(self, upstream, headers, path) -> None:
        request = self.request
        if self.body_length:
            headers.setRawHeaders(b"content-length", [b"%d" % self.body_length])
        request.content.seek(0)
        head = request_head(request.method, path, headers)

        def failed(reason):
            upstream.failed(self.reactor.seconds())
            if not self.gone:
                self.try_next(502)

        open_tunnel(request, upstream, head, request.content.read(), self.config.idle_timeout,
                    self.reactor, failed)


class BodyStream(Protocol):
    """Copies a response body to the client, pausing the upstream when the client is slow.

    ``idle_timeout`` runs while nothing moves in either direction; it aborts
    both connections, as a half-sent response must not look complete.
    """

    def __init__(self, exchange: Exchange):
        self.exchange = exchange
        self.request = exchange.request
        config = exchange.config
        self.idle = config.idle_timeout
        self.timer = exchange.reactor.callLater(self.idle, self._stalled)

    def connectionMade(self) -> None:
        self.request.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.timer.reset(self.idle)
        self.request.write(data)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.timer.reset(self.idle)
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def _stalled(self) -> None:
        log.warn("proxy: response from {url} stalled for {idle}s, aborting",
                 url=self.exchange.upstream.url, idle=self.idle)
        self.transport.stopProducing()
        self._abort_client()

    def _abort_client(self) -> None:
        channel = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if self.timer.active():
            self.timer.cancel()
        self.exchange.upstream.active -= 1
        if self.exchange.gone:
            return
        self.request.unregisterProducer()
        if reason.check(ResponseDone, PotentialDataLoss):
            self.request.finish()
        else:
            log.warn("proxy: response from {url} broke off: {why}",
                     url=self.exchange.upstream.url, why=reason.getErrorMessage())
            self._abort_client()


class _Discard(Protocol):
    """Drains a response nobody wants, so its connection can go back to the pool."""

    def connectionMade(self) -> None:
        self.transport.stopProducing()


class _Unclosed:
    """``request.content`` as FileBodyProducer reads it, minus the close, so a retry can replay it."""

    def __init__(self, file):
        self.read, self.seek, self.tell = file.read, file.seek, file.tell

    def close(self) -> None:
        pass
