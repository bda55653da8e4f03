"""``Proxy(...)``: a reverse proxy with keep-alive upstream connections, balancing and health.

Twisted's ``ReverseProxyResource`` opens an HTTP/1.0 connection per request
and has no timeouts, balancing or health.  Here one ``Gateway`` per
``Proxy`` config owns the upstreams, the balancer, the keep-alive pool
(``proxy_client``) and the health checker; each client request becomes an
``Exchange`` that picks an upstream, retries where that is safe, and streams
the response back with back-pressure.  Request bodies arrive whole (Twisted's
server buffers them before ``render``), so they are sent with a
``Content-Length`` and can be replayed to the next upstream on a retry.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .accel import hand_off
from .balance import Balancer
from .forwarded import resolve_client
from .health import HealthChecker
from .lazytimer import LazyTimer
from .pages import write_error
from .proxy_client import UpstreamPool, field
from .proxy_headers import (
    ResponseRules, copy_response_headers, head_bytes, is_upgrade, response_head, upstream_headers,
)
from .proxy_lane import proxy_lane
from .tunnel import can_tunnel, open_tunnel
from .upstream import Upstream, UpstreamEndpoints

log = Logger()

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_NEVER_CONNECTED = (net_error.ConnectError, net_error.DNSLookupError)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_NO_BODY_STATUS = frozenset({204, 304})
INLINE_BODY = 256 * 1024  # bodies up to this size go out in the same write as the head


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
        self.pool = UpstreamPool(reactor, config.keepalive, config.keepalive_timeout)
        self.rules = ResponseRules(config)
        # Health checks are rare: Twisted's Agent, on connections of their own, is the simple tool.
        self.checker = HealthChecker(
            config.health, self.upstreams,
            Agent.usingEndpointFactory(reactor, UpstreamEndpoints(self.upstreams)), reactor,
            proxy_host=config.host,
        ) if config.health else None

    def startService(self):
        super().startService()
        if self.checker is not None:
            self.checker.startService()

    def stopService(self):
        super().stopService()
        if self.checker is not None:
            self.checker.stopService()
        return self.pool.close()


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

    def lane(self, channel, head, table, route: str, prefix, segments):
        """The proxy lane's request for ``head`` (:mod:`twisthost.proxy_lane`), or None."""
        return proxy_lane(channel, head, table, route, self, prefix, segments)


class Exchange:
    """One client request: choose an upstream, try, maybe retry, stream the answer.

    It listens to the upstream connection (``head``, ``body``, ``done``,
    ``failed``, ``broken``, ``expired``) and is the client request's push
    producer, so a client that reads slowly pauses the upstream connection.
    A try has one deadline, moved rather than replaced: ``response_timeout``
    after sending until the response head, then ``idle_timeout`` while the
    body streams; when the body stalls both sides are aborted, as a
    half-sent response must not look complete.  The deadline is kept by the
    connection's timer (``UpstreamConnection.watch``), so a request on a
    pooled connection schedules nothing in the reactor; only while a new
    connection is being opened does the exchange keep a timer of its own.
    """

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
        self.counted = False  # this try is counted in upstream.active
        self.connecting = None  # the Deferred of a connection being opened
        self.conn = None  # the upstream connection carrying this try
        self.opening = None  # a LazyTimer for the try's deadline while its connection is being opened
        self.receiving = False  # the response head is in: the timer watches the body
        self.accel = None  # (target, headers) of an X-Accel-Redirect or X-Sendfile answer: its body is dropped
        self.timed_out = self.gone = self.retried_stale = False
        self.deadline = self.reactor.seconds() + config.try_duration
        self.sent_at = 0.0

    def _path_below_mount(self) -> bytes:
        raw = self.request.uri
        depth = len(self.request.prepath)
        if depth == 0:
            return raw
        path, mark, query = raw.partition(b"?")
        rest = path.split(b"/")[1 + depth:]
        return b"/" + b"/".join(rest) + mark + query

    def start(self) -> None:
        when_gone = getattr(self.request, "when_gone", None)  # a lane request: no Deferred per request
        if when_gone is not None:
            when_gone(self._client_gone)
        else:
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
        headers = upstream_headers(self.request, self.client, self.host or upstream.netloc,
                                   self.config, self.upgrade)
        path = upstream.base_path + self.path
        if self.upgrade:
            self._tunnel(upstream, headers, path)
            return
        self.data = self._request_bytes(headers, path)
        upstream.active += 1
        self.counted, self.timed_out, self.sent_at = True, False, now
        self._connect(fresh=False)

    def _request_bytes(self, headers: dict, path: bytes) -> bytes:
        """The request head, with the body when it is small enough for one write."""
        length = self.body_length
        if length or self.request.method in _BODY_METHODS:
            headers[b"content-length"] = (b"Content-Length", [b"%d" % length])
        if not self.config.keepalive:
            headers[b"connection"] = (b"Connection", [b"close"])
        data = head_bytes(self.request.method, path, headers)
        if 0 < length <= INLINE_BODY:
            self.request.content.seek(0)
            data += self.request.content.read()
        return data

    def _connect(self, fresh: bool) -> None:
        pool = self.gateway.pool
        conn = None if fresh else pool.take(self.upstream)
        if conn is not None:
            self._connected(conn)
            return
        if self.opening is None:
            self.opening = LazyTimer(self.reactor.callLater, self.expired)
        self.opening.start(self._time_left())
        self.connecting = d = pool.open(self.upstream)
        d.addCallbacks(self._connected, self._connect_failed).addErrback(self._bug)

    def _stop_opening(self) -> None:
        """The connection is open or the try is over: its connect deadline is off."""
        if self.opening is not None:
            self.opening.cancel()
            self.opening = None  # it holds our method: no cycle left behind

    def _time_left(self) -> float:
        return self.sent_at + self.config.response_timeout - self.reactor.seconds()

    def _connected(self, conn) -> None:
        self.connecting = None
        self._stop_opening()
        if self.gone or self.timed_out:  # the client left or the try timed out meanwhile
            self.gateway.pool.release(conn)
            return
        self.conn = conn
        conn.watch(self._time_left())
        producer = None
        if self.body_length > INLINE_BODY:
            self.request.content.seek(0)
            producer = FileBodyProducer(_Unclosed(self.request.content))
        conn.send(self, self.data, self.request.method == b"HEAD", producer)

    def _connect_failed(self, failure) -> None:
        self.connecting = None
        self.failed(failure, stale=False)

    def expired(self) -> None:
        """The try's deadline passed: no connection, head or body in time."""
        if self.receiving:
            self._stalled()
            return
        self.timed_out = True
        if self.connecting is not None:
            self.connecting.cancel()  # errback: _connect_failed
        elif self.conn is not None:
            conn, self.conn = self.conn, None
            conn.abort()
            self.failed(Failure(defer.TimeoutError()), stale=False)

    def failed(self, failure, stale: bool) -> None:
        """The try ended before a response head: retry, next upstream, or an error page."""
        self.conn = None
        if stale and not self.retried_stale and not self.gone and self.request.method in IDEMPOTENT:
            # A reused connection the upstream had closed: once more on a new one, same upstream.
            self.retried_stale = True
            self._connect(fresh=True)
            return
        self._end_try()
        if self.gone:
            return
        upstream = self.upstream
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

    def _end_try(self) -> None:
        """The try is over: stop its timer, release the upstream slot.

        The connection's timer is the connection's again: back in the pool
        it is set to the idle timeout, and a closed connection cancels it.
        """
        self._stop_opening()
        self.conn = self.connecting = None
        if self.counted:
            self.counted = False
            self.upstream.active -= 1

    def _give_up(self, status) -> None:
        if status is None:
            self._error(self.config.unavailable_status, "No upstream server is available.")
        elif status == 504:
            self._error(504, "The upstream server did not answer in time.")
        else:
            self._error(502, "The upstream server could not be reached or failed to answer.")

    def _error(self, status: int, detail: str) -> None:
        if self.gone:
            return
        request = self._twisted_request()
        request.write(write_error(request, status, detail))
        request.finish()

    def _twisted_request(self):
        """The client's request as a Twisted ``Request``, for an answer only that gives.

        A lane request (:mod:`twisthost.proxy_lane`) hands over to one here.
        """
        promote = getattr(self.request, "promote", None)
        if promote is not None:
            self.request = promote()
        return self.request

    def _bug(self, failure) -> None:
        log.failure("proxy: unexpected error", failure)
        if not self.gone and not self.request.startedWriting:
            self._error(502, "The proxy failed.")

    # -- the response ----------------------------------------------------------

    def hold_output(self):
        """Hold the client's output while the upstream connection hands over one read.

        The response head, body and end a read produces then leave in one
        send (``HostChannel.hold_output``) instead of one each.  Returns what
        sends them, or None when output is held already or the channel
        cannot hold it (HTTP/2).
        """
        channel = getattr(self.request, "channel", None)
        hold = getattr(channel, "hold_output", None)
        return channel.send_held if hold is not None and hold() else None

    def head(self, head) -> None:
        """The upstream's response head (a ``proxy_client.Head``); the body follows."""
        request = self.request
        notes = getattr(request, "notes", None)
        if notes is not None:
            notes.extra["upstream"] = self.upstream.url
            notes.extra["upstream_ms"] = round((self.reactor.seconds() - self.sent_at) * 1000, 3)
        self.receiving = True
        self.conn.watch(self.config.idle_timeout)
        if head.accel is not None and self.config.accel:  # an internal Static of this host answers (twisthost.accel)
            self.accel = (head.accel, [field(line) for _, line in head.headers])
            return
        request.setResponseCode(head.status, head.phrase)
        if not self._write_head(head):
            request.defaultContentType = None
            copy_response_headers(head, request.responseHeaders, self.gateway.rules)
            if head.length is not None and (request.method == b"HEAD" or head.status not in _NO_BODY_STATUS):
                request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % head.length])
        request.registerProducer(self, True)

    def _write_head(self, head) -> bool:
        """Write the response head to an HTTP/1 channel; False when it takes ``Headers`` instead.

        Copying the upstream's headers into ``request.responseHeaders`` for
        the channel to write them out again was the largest part of relaying
        a head.  Here the head is made once (``proxy_headers.response_head``)
        and the request is left as ``Request.write`` (twisted.web.http)
        leaves it after its first call: started, and chunked when the body
        has neither a length nor a reason to be empty (HEAD, 204, 304: the
        upstream connection passes no body for those).  Requests carrying
        what that method would add (cookies, ETag, Last-Modified: nothing in
        the proxy sets them) take the ``Headers`` path.
        """
        request = self.request
        channel = request.channel
        if (getattr(channel, "hold_output", None) is None or request.startedWriting or request.cookies
                or request.etag is not None or request.lastModified is not None):
            return False
        status, head_request = head.status, request.method == b"HEAD"
        if head.length is not None and (head_request or status not in _NO_BODY_STATUS):
            framing = b"Content-Length: %d\r\n" % head.length
        elif request.clientproto == b"HTTP/1.1" and not head_request and status not in _NO_BODY_STATUS:
            framing, request.chunked = b"Transfer-Encoding: chunked\r\n", 1
        else:
            framing = b""
        request.startedWriting = 1
        status_line = b"%s %d %s\r\n" % (request.clientproto, status, request.code_message)
        channel.write(response_head(status_line, request.responseHeaders, head, self.gateway.rules, framing))
        return True

    def body(self, data: bytes) -> None:
        self.conn.watch(self.config.idle_timeout)
        if self.accel is None:
            self.request.write(data)

    def done(self) -> None:
        self._end_try()
        if self.gone:
            return
        if self.accel is not None:
            self._hand_off()
            return
        self.request.unregisterProducer()
        self.request.finish()

    def _hand_off(self) -> None:
        target, headers = self.accel
        hand_off(self._twisted_request(), target, headers, f"proxy {self.upstream.url}")

    def broken(self, reason) -> None:
        self._end_try()
        if self.gone:
            return
        if self.accel is not None:  # the body was being dropped anyway
            self._hand_off()
            return
        log.warn("proxy: response from {url} broke off: {why}",
                 url=self.upstream.url, why=reason.getErrorMessage())
        self.request.unregisterProducer()
        self._abort_client()

    def _stalled(self) -> None:
        log.warn("proxy: response from {url} stalled for {idle}s, aborting",
                 url=self.upstream.url, idle=self.config.idle_timeout)
        conn = self.conn
        self._end_try()
        conn.abort()
        self._abort_client()

    def _abort_client(self) -> None:
        channel = self.request.channel
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()

    # -- as the client request's producer ----------------------------------------

    def pauseProducing(self) -> None:
        if self.conn is not None:
            self.conn.pause()

    def resumeProducing(self) -> None:
        if self.conn is not None:
            self.conn.watch(self.config.idle_timeout)
            self.conn.resume()

    def stopProducing(self) -> None:
        self._client_gone(None)

    def _client_gone(self, failure) -> None:
        if self.gone:
            return
        self.gone = True
        if self.connecting is not None:
            self.connecting.cancel()  # errback: _connect_failed, which sees gone
        elif self.conn is not None:
            conn = self.conn
            self._end_try()
            conn.abort()

    # -- upgrades --------------------------------------------------------------

    def _tunnel(self, upstream, headers, path) -> None:
        request = self.request
        if self.body_length:
            headers[b"content-length"] = (b"Content-Length", [b"%d" % self.body_length])
        request.content.seek(0)

        def failed(reason):
            upstream.failed(self.reactor.seconds())
            if not self.gone:
                self.try_next(502)

        open_tunnel(request, upstream, head_bytes(request.method, path, headers),
                    request.content.read(), self.config.idle_timeout, self.reactor, failed)


class _Unclosed:
    """``request.content`` as FileBodyProducer reads it, minus the close, so a retry can replay it."""

    def __init__(self, file):
        self.read, self.seek, self.tell = file.read, file.seek, file.tell

    def close(self) -> None:
        pass
