"""The proxy lane: plain GETs for a ``Proxy`` route, forwarded without a Twisted ``Request``.

A proxied GET spent about a third of its Python time in Twisted's request
life cycle (the request object, ``process``, routing by path segments,
``finish`` and its clean-up), none of which the proxy needs: the
:class:`~twisthost.proxy.Exchange` writes the response head itself
(``Exchange._write_head``) and streams the body.  So a
:class:`ProxyLaneRequest` gives the exchange what it uses of a request, and
the shared request duties come from :class:`~twisthost.lane.LaneRequest`.

Two answers need all of Twisted's request: an error page (502, 503, 504,
or 500 when something raised) and the file an ``X-Accel-Redirect`` names.  Neither has written anything
when it is chosen, so the exchange then asks for a real request in this one's
place (:meth:`ProxyLaneRequest.promote`) and answers as on the usual path.

A head takes the usual path when it has a body, is not GET or HEAD over
HTTP/1.1, asks for ``100-continue`` or an upgrade, or has a ``Connection``
other than ``keep-alive``; so do sites with request hooks and hosts with an
https redirect or HSTS (see :func:`twisthost.lane.lane_request`).
"""

from __future__ import annotations

import io
from urllib.parse import parse_qs

from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from .lane import CONNECTION, PLAIN, REFUSE, HeaderMeanings, LaneRequest
from .logs import request_id
from .request import FastHeaders, set_default_headers

_HEADERS = HeaderMeanings({
    b"connection": CONNECTION,
    # The usual path answers these first (100 Continue) or may tunnel them.
    **dict.fromkeys((b"expect", b"upgrade", b"http2-settings"), REFUSE),
})


def proxy_lane(channel, head, table, route: str, proxy, prefix, segments) -> "ProxyLaneRequest | None":
    """A :class:`ProxyLaneRequest` for ``head`` to ``proxy`` (a ``ProxyResource``), or None."""
    seen = _HEADERS.seen
    for name, value in head.headers:
        meaning = seen.get(name)
        if meaning is None:
            meaning = _HEADERS.learn(name)
        if meaning != PLAIN and (meaning == REFUSE or value.lower() != b"keep-alive"):
            return None
    return ProxyLaneRequest(channel, head, table, route, proxy, prefix, segments)


class ProxyLaneRequest(LaneRequest):
    """One request an :class:`~twisthost.proxy.Exchange` forwards, seen by it as a Twisted request."""

    startedWriting = 0
    chunked = 0
    code_message = RESPONSES[200]
    cookies = ()
    etag = lastModified = None
    responseHeaders = content = None
    _gone = None  # told when the client leaves (when_gone)

    def __init__(self, channel, head, table, route: str, proxy, prefix, segments):
        super().__init__(channel, head, table, route)
        self._proxy = proxy
        self.prepath, self.postpath = prefix, segments

    def answer(self) -> None:
        """Start the exchange; the upstream answers later, so the channel queues us first."""
        site = self.site
        self.channel.queue_lane_request(self)
        # As DefaultHeadersRequest.process, HostSite.getResourceFor and VirtualHosts.route do it:
        self.responseHeaders = FastHeaders()
        set_default_headers(self.responseHeaders, site.server_header)
        site.connections.request_started(self)  # a drain adds "Connection: close"
        self.take_notes(request_id(self))
        self.content = io.BytesIO()
        try:
            self._proxy.render(self)
        except Exception:
            self.promote().processingFailed(Failure())

    # -- what the exchange uses, as Twisted's Request has it

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        # As Twisted's: an upstream's empty reason phrase is relayed empty, not replaced.
        self.code_message = message if message is not None else RESPONSES.get(code, b"Unknown Status")

    def write(self, data: bytes) -> None:
        """A body part, after the exchange wrote the head (``startedWriting``, ``chunked``)."""
        self.sentLength += len(data)
        if data:
            if self.chunked:
                self.channel.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.channel.write(data)

    def when_gone(self, callback) -> None:
        """Call ``callback(reason)`` if the client leaves before the end: ``notifyFinish``'s
        errback without a Deferred made and fired per request (~3 µs of ~75)."""
        self._gone = callback

    def connectionLost(self, reason) -> None:
        gone, self._gone = self._gone, None
        if gone is not None:
            gone(reason)
        super().connectionLost(reason)

    def finish(self) -> None:
        # The exchange's method, held here, holds the exchange, which holds us:
        # let go, so the two are freed when the answer ends, not by the cyclic GC.
        self._gone = None
        if self.chunked:
            self.channel.write(b"0\r\n\r\n")
        super().finish()

    def promote(self):
        """A Twisted request in this one's place, for an answer only it gives.

        Made as ``requestReceived``, ``process`` and routing would have left
        it, with this request's headers, notes and finish waiters; nothing
        has been written yet.
        """
        channel = self.channel
        request = channel.requestFactory(channel)
        request.method, request.uri, request.clientproto, request.path = (
            self.method, self.uri, self.clientproto, self.path)
        request.args = parse_qs(self.uri.partition(b"?")[2], 1)
        request.requestHeaders, request.responseHeaders = self.requestHeaders, self.responseHeaders
        request.content, request.notes, request.site = self.content, self.notes, self.site
        request.prepath, request.postpath, request.sitepath = self.prepath, self.postpath, []
        request.notifications, self._waiting = self._waiting or [], None
        if self._gone is not None:
            request.notifyFinish().addErrback(self._gone)
        requests = channel.requests
        requests[requests.index(self)] = request
        return request
