"""The lanes: plain requests answered without building a Twisted ``Request``.

Most requests a host gets are the same shape: GET or HEAD, HTTP/1.1, no
body, for a cached static file or a proxied upstream.  Through Twisted's
``Request`` such a request costs about 120 µs of Python: the request object
and its two header sets, ``process``, routing by path segments, a dozen
``setHeader`` calls, ``write``, ``finish``, and the head formatted header by
header.

So the channel asks :func:`lane_request` for every bodiless head before it
builds a Twisted request.  The route's service decides (its ``lane``
method): a ``Static`` mount answers a plain GET of a cached file
(:class:`FileLaneRequest`, here), a ``Proxy`` forwards it
(:mod:`twisthost.proxy_lane`).  Otherwise the head goes the usual way, which
gives every other answer.  A head only qualifies when the usual way would
give the same response; ``tests/test_lane.py`` and
``tests/test_proxy_lane.py`` hold the two paths to that, byte for byte but
for ``Date`` and ``X-Request-Id``.

What every request gets still happens: the ``Server``/``Date``/
``X-Request-Id`` headers, the access log and metrics (the site's finish
observers, which see a lane request as they see a ``Request``), the count
``max_requests`` and graceful drains use, keep-alive and its timers, and
the order of pipelined responses.

The static lane answers from the cached facts
(:class:`twisthost.staticfile.FileFacts`) within the read; only a
``sendfile`` the socket cannot take at once enters the channel's request
queue, as a Twisted request would, so pipelined requests wait for it.  It
takes a head only when the usual way would answer 200 (or a HEAD of it)
with the whole file in identity coding.
"""

from __future__ import annotations

from twisted.internet import defer

from .logs import new_request_id
from .request import FastHeaders, http_date
from .sendfile import SendfileProducer

_METHODS = (b"GET", b"HEAD")

# What a request header means to a lane, by its name.
PLAIN, CODINGS, CONNECTION, REQUEST_ID, REFUSE = range(5)


class HeaderMeanings:
    """What each request header means to one lane, remembered by the name as sent."""

    MAX_SEEN = 4096  # names are client-chosen: bounded

    def __init__(self, meanings: dict[bytes, int]):
        self.meanings = meanings  # lower-case name -> meaning; PLAIN for the rest
        self.seen: dict[bytes, int] = {}

    def learn(self, name: bytes) -> int:
        meaning = self.meanings.get(name.lower(), PLAIN)
        if len(self.seen) < self.MAX_SEEN:
            self.seen[name] = meaning
        return meaning


_FILE_HEADERS = HeaderMeanings({
    b"accept-encoding": CODINGS,
    b"connection": CONNECTION,
    b"x-request-id": REQUEST_ID,
    # The usual path answers these with something else than the whole file:
    # 206/416, 304/412, 100-continue, an upgrade.
    **dict.fromkeys((b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since",
                     b"if-unmodified-since", b"expect", b"upgrade", b"http2-settings"), REFUSE),
})


def lane_request(channel, head) -> "LaneRequest | None":
    """The request that answers ``head`` in a lane, or None for the usual path.

    The route's service has the last word (its ``lane`` method): only
    GET and HEAD without a body, over HTTP/1.1 (which always has a Host), get that far.
    """
    if head.method not in _METHODS or head.version != b"HTTP/1.1" or head.length or head.chunked:
        return None
    find = getattr(channel.site.resource, "lane_target", None)
    target = find(head.host, head.target) if find is not None else None
    if target is None:
        return None
    table, route, resource, prefix, segments = target
    lane = getattr(resource, "lane", None)  # a longer route without one may be below a mount with one
    return lane(channel, head, table, route, prefix, segments) if lane is not None else None


def file_lane(channel, head, table, route: str, static, segments) -> "FileLaneRequest | None":
    """A :class:`FileLaneRequest` when ``static`` (a ``Static`` mount) would answer with the whole file."""
    given_id = None
    codings = False
    seen = _FILE_HEADERS.seen
    for name, value in head.headers:
        meaning = seen.get(name)
        if meaning is None:
            meaning = _FILE_HEADERS.learn(name)
        if meaning == PLAIN:
            continue
        if meaning == CODINGS:
            codings = True
        elif meaning == REQUEST_ID:
            given_id = value
        elif meaning == REFUSE or value.lower() != b"keep-alive":  # Connection: close, upgrade...
            return None
    found = static.whole_file(segments, codings, channel.can_sendfile)
    if found is None:
        return None
    return FileLaneRequest(channel, head, table, route, given_id, *found)


class LaneRequest:
    """What a lane request shares, whatever answers it.

    Has what the channel, the finish observers (access log, metrics) and
    :mod:`twisthost.graceful` use of a ``twisted.web.server.Request``.
    ``answer`` starts the answer; ``finish`` ends it.
    """

    code = 200
    queued = False  # True once the channel queued us: an answer that outlived its read
    sentLength = 0
    finished = False
    producer = None
    notes = None

    def __init__(self, channel, head, table, route: str):
        self.channel = channel
        self.site = channel.site
        self.method, self.uri, self.clientproto = head.method, head.target, head.version
        self.path = head.target.partition(b"?")[0]
        self._fields, self._headers = head.headers, None
        self._waiting: list[defer.Deferred] | None = None
        self._table, self._route = table, route  # the host's routes, and the route matched

    def take_notes(self, request_id: str) -> None:
        """The routed request's ``notes``, as ``VirtualHosts.route`` leaves them."""
        self.notes = self._table.notes(self._route, request_id)

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer
        self.channel.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.channel.unregisterProducer()
        self.producer = None

    def finish(self) -> None:
        self.finished = True
        self.site.log(self)
        if self.queued:
            self.channel.requestDone(self)
        else:
            self.channel.answered_at_once()
        self._notify(None)

    def connectionLost(self, reason) -> None:
        self._notify(reason)

    def notifyFinish(self) -> defer.Deferred:
        done = defer.Deferred()
        if self._waiting is None:
            self._waiting = []
        self._waiting.append(done)
        return done

    def _notify(self, reason) -> None:
        waiting, self._waiting = self._waiting, None
        for done in waiting or ():
            done.errback(reason) if reason is not None else done.callback(None)

    # -- what observers ask, as of a Twisted request

    @property
    def requestHeaders(self) -> FastHeaders:
        """Made when first asked for: a static answer only needs it for an access log."""
        if self._headers is None:
            self._headers = FastHeaders()
            self._headers.add_judged(self._fields)
        return self._headers

    def getHeader(self, name: bytes):
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def getClientAddress(self):
        return self.channel.getPeer()

    def isSecure(self) -> bool:
        return self.channel.isSecure()


class FileLaneRequest(LaneRequest):
    """One request answered from :class:`~twisthost.staticfile.FileFacts`.

    Also what :class:`~twisthost.sendfile.SendfileProducer` uses of a request.
    """

    startedWriting = True  # a drain must not try to add headers: ours are written at once

    def __init__(self, channel, head, table, route: str, given_id, facts, file):
        super().__init__(channel, head, table, route)
        self._given_id = given_id
        self._facts, self._file = facts, file

    def answer(self) -> None:
        """Write the answer; :meth:`finish` runs when it is all out (at once unless it is a sendfile)."""
        site = self.site
        site.connections.request_started(self)  # may end keep-alive, for a drain
        request_id = new_request_id([self._given_id] if self._given_id is not None else None)
        self.take_notes(request_id.decode("ascii"))
        facts, channel = self._facts, self.channel
        head = [b"HTTP/1.1 200 OK\r\n"]
        if site.server_header:
            head += (b"Server: ", site.server_header, b"\r\n")
        head += (b"Date: ", http_date(), b"\r\n")
        if not channel.persistent:  # where the usual path has it: a drain marks it as the request starts
            head.append(b"Connection: close\r\n")
        head += (b"X-Request-Id: ", request_id, b"\r\n", facts.head_lines(), b"\r\n")
        if self.method == b"HEAD":
            if self._file is not None:
                self._file.close()
            channel.write(b"".join(head))
        elif self._file is not None:
            self._head = b"".join(head)
            SendfileProducer(self, self._file, 0, facts.size).start()
            return
        else:
            head.append(facts.body)
            channel.write(b"".join(head))
            self.sentLength = facts.size
        self.finish()

    def write(self, data: bytes) -> None:
        """Only :class:`SendfileProducer` writes: an empty write that means "the head now"."""
        head, self._head = self._head, None
        self.channel.write(head + data if head else data)
