"""The static lane: plain GETs of cached static files, answered without a Twisted ``Request``.

Most requests a static site gets are the same shape: GET or HEAD, HTTP/1.1,
no body, no Range, no conditions, no coding to pick, for a file whose facts
(:class:`twisthost.staticfile.FileFacts`) are cached.  Through Twisted's
``Request`` such a request costs about 120 µs of Python: the request object
and its two header sets, ``process``, routing by path segments, a dozen
``setHeader`` calls, ``write``, ``finish``, and the head formatted header by
header.  The answer itself is a head that only differs by ``Date`` and
``X-Request-Id`` from the last one and a body already in memory (or one
``sendfile``).

So the channel asks :func:`lane_request` for every bodiless head before it
builds a Twisted request.  When the head qualifies, a :class:`LaneRequest`
answers from the cached facts, within the read; only a ``sendfile`` the
socket cannot take at once enters the channel's request queue, as a Twisted
request would, so pipelined requests wait for it.  Otherwise the head goes the usual way, which gives every other
answer (304, 206, 404, redirects, compressed variants, errors).  A head only
qualifies when the usual way would answer 200 (or a HEAD of it) with the
whole file in identity coding, so the two paths give the same response;
``tests/test_lane.py`` holds them to that, byte for byte but for ``Date``
and ``X-Request-Id``.

What every request gets still happens here: the ``Server``/``Date``/
``X-Request-Id`` headers, the access log and metrics (the site's finish
observers, which see this object as they see a ``Request``), the count
``max_requests`` and graceful drains use, keep-alive and its timers, the
order of pipelined responses, and ``sendfile`` for big files.
"""

from __future__ import annotations

import time

from twisted.internet import defer

from .logs import RequestNotes, new_request_id
from .request import FastHeaders, http_date
from .sendfile import SendfileProducer

_METHODS = (b"GET", b"HEAD")

# What a request header means to the lane, by its name as sent.
_PLAIN, _CODINGS, _CONNECTION, _REQUEST_ID, _REFUSE = range(5)
_MEANINGS = {
    b"accept-encoding": _CODINGS,
    b"connection": _CONNECTION,
    b"x-request-id": _REQUEST_ID,
    # The usual path answers these with something else than the whole file:
    # 206/416, 304/412, 100-continue, an upgrade.
    **dict.fromkeys((b"range", b"if-range", b"if-match", b"if-none-match", b"if-modified-since",
                     b"if-unmodified-since", b"expect", b"upgrade", b"http2-settings"), _REFUSE),
}
_SEEN: dict[bytes, int] = {}  # name as sent -> meaning; names are client-chosen, so bounded
_SEEN_MAX = 4096


def _meaning(name: bytes) -> int:
    meaning = _MEANINGS.get(name.lower(), _PLAIN)
    if len(_SEEN) < _SEEN_MAX:
        _SEEN[name] = meaning
    return meaning


def lane_request(channel, head) -> "LaneRequest | None":
    """The request that answers ``head`` from cached file facts, or None for the usual path."""
    if head.method not in _METHODS or head.version != b"HTTP/1.1" or head.length or head.chunked:
        return None
    find = getattr(channel.site.resource, "static_target", None)
    target = find(head.host, head.target) if find is not None else None  # HTTP/1.1 has a Host
    if target is None:
        return None
    table, route, resource, segments = target
    whole_file = getattr(resource, "whole_file", None)  # a Static mount's
    if whole_file is None:
        return None
    given_id = None
    codings = False
    for name, value in head.headers:
        meaning = _SEEN.get(name)
        if meaning is None:
            meaning = _meaning(name)
        if meaning == _PLAIN:
            continue
        if meaning == _CODINGS:
            codings = True
        elif meaning == _REQUEST_ID:
            given_id = value
        elif meaning == _REFUSE or value.lower() != b"keep-alive":  # Connection: close, upgrade...
            return None
    found = whole_file(segments, codings, channel.can_sendfile)
    if found is None:
        return None
    return LaneRequest(channel, head, table, route, given_id, *found)


class LaneRequest:
    """One request answered from :class:`~twisthost.staticfile.FileFacts`.

    Has what the channel, the finish observers (access log, metrics),
    :mod:`twisthost.graceful` and :class:`~twisthost.sendfile.SendfileProducer`
    use of a ``twisted.web.server.Request``, and nothing more.
    """

    code = 200
    queued = False  # True once the channel queued us: a sendfile that outlived its read
    sentLength = 0
    startedWriting = True  # a drain must not try to add headers: ours are written at once
    finished = False
    producer = None
    notes = None

    def __init__(self, channel, head, table, route: str, given_id, facts, file):
        self.channel = channel
        self.site = channel.site
        self.method, self.uri, self.clientproto = head.method, head.target, head.version
        self.path = head.target.partition(b"?")[0]
        self._fields, self._headers = head.headers, None
        self._table, self._route, self._given_id = table, route, given_id
        self._facts, self._file = facts, file
        self._waiting: list[defer.Deferred] | None = None

    # -- the channel's side

    def answer(self) -> None:
        """Write the answer; :meth:`finish` runs when it is all out (at once unless it is a sendfile)."""
        site = self.site
        site.connections.request_started(self)  # may end keep-alive, for a drain
        request_id = new_request_id([self._given_id] if self._given_id is not None else None)
        table = self._table
        self.notes = RequestNotes(table.label, self._route, time.monotonic(), request_id.decode("ascii"),
                                  table.access_log)
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
        self._notify(reason)  # a sendfile under way is stopped (and its file closed) by the channel

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
        """Made when first asked for: only an access log (or a multi-process metric) asks."""
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
