"""The request class: Twisted's, minus the error pages it writes itself, with cheaper defaults.

``twisted.web.server.Request`` answers a failing resource with an HTML page
(a traceback when ``displayTracebacks`` is on), an unsupported method with
an HTML 405/501 that echoes the method, and a resource that returns a
non-bytes body with a page quoting ``repr()`` of the request and resource.
Here each becomes the uniform plain-text page of :mod:`twisthost.pages`, and
the details go to the log only.

:class:`DefaultHeadersRequest` sets the ``Server`` and ``Date`` headers
every response carries without Twisted's per-request costs.
"""

from __future__ import annotations

import time

from twisted.python import failure
from twisted.web import resource, server
from twisted.web.error import UnsupportedMethod
from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from .pages import write_error

_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The ``Date`` header value for now, formatted at most once a second."""
    global _date
    now = int(time.time())
    if now != _date[0]:
        _date = (now, datetimeToString(now))  # one tuple: safe to read from any thread
    return _date[1]


def set_default_headers(headers, server_header: bytes | None) -> None:
    """``Server`` (when the site names one) and ``Date``: the headers every response starts with."""
    if server_header:
        headers.setRawHeaders(b"server", [server_header])
    headers.setRawHeaders(b"date", [http_date()])


#: bytes header name -> the key Twisted's ``Headers`` stores it under.
_KEYS: dict[bytes, bytes] = {}
_MAX_KEYS = 10_000  # names are client-chosen: bounded like Twisted's own name cache


def _key(name: bytes) -> bytes:
    """The storage key of ``name``, learnt from the base class itself once per name.

    Asking ``Headers`` (rather than repeating its canonicalisation) keeps
    the fast paths right whatever form a Twisted version stores names in;
    an invalid name raises here as it would there.
    """
    key = _KEYS.get(name)
    if key is None:
        probe = Headers()
        probe.setRawHeaders(name, [b""])
        (key,) = probe._rawHeaders
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


class FastHeaders(Headers):
    """Twisted's ``Headers`` without its per-call costs for ``bytes`` names and values.

    A small request sets or reads a dozen headers.  The base class derives
    the stored name through a method call each time and rebuilds every value
    with ``b" ".join(value.splitlines())`` even when it holds no line break.
    Here the stored name comes from one dict look-up, and ``bytes`` values
    without CR or LF are kept as they are; ``str`` names or values, and
    values with line breaks, take the base class's path, so every result is
    the same.
    """

    __slots__ = ()

    def add_judged(self, fields) -> None:
        """Add ``(name, value)`` pairs a strict parser already checked (no CR/LF)."""
        raw = self._rawHeaders
        for name, value in fields:
            key = _KEYS.get(name) or _key(name)
            values = raw.get(key)
            if values is None:
                raw[key] = [value]
            else:
                values.append(value)

    def setRawHeaders(self, name, values):
        # One value is nearly every call (Server, Date, X-Request-Id: four per
        # proxied request): judged without the loop and the copy, ~1.2 of ~73 µs.
        if type(name) is bytes and type(values) is list and len(values) == 1:
            value = values[0]
            if type(value) is bytes and b"\r" not in value and b"\n" not in value:
                self._rawHeaders[_KEYS.get(name) or _key(name)] = [value]
                return
        if type(name) is bytes and type(values) is list:
            for value in values:
                if type(value) is not bytes or b"\r" in value or b"\n" in value:
                    break
            else:
                self._rawHeaders[_KEYS.get(name) or _key(name)] = values[:]
                return
        super().setRawHeaders(name, values)

    def addRawHeader(self, name, value):
        if type(name) is bytes and type(value) is bytes and b"\r" not in value and b"\n" not in value:
            self.add_judged(((name, value),))
        else:
            super().addRawHeader(name, value)

    def getRawHeaders(self, name, default=None):
        if type(name) is bytes:
            return self._rawHeaders.get(_KEYS.get(name) or _key(name)) or default
        return super().getRawHeaders(name, default)

    def hasHeader(self, name):
        if type(name) is bytes:
            return (_KEYS.get(name) or _key(name)) in self._rawHeaders
        return super().hasHeader(name)

    def removeHeader(self, name):
        if type(name) is bytes:
            self._rawHeaders.pop(_KEYS.get(name) or _key(name), None)
        else:
            super().removeHeader(name)


class DefaultHeadersRequest(server.Request):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requestHeaders = FastHeaders()
        self.responseHeaders = FastHeaders()

    def process(self):
        """Twisted's ``Request.process`` with its two default headers made cheap.

        Twisted formats ``Date`` anew for every request (~5 µs) and sets
        ``Server: TwistedWeb/<version>``, which then had to be found and
        replaced when the head was written.  Here ``Date`` comes from
        :func:`http_date` and ``Server`` is ``Site(server_header=)`` (or
        absent) from the start; the rest is Twisted's method unchanged.
        """
        site = self.site = self.channel.site
        set_default_headers(self.responseHeaders, getattr(site, "server_header", None))
        self.prepath = []
        self.postpath = list(map(server.unquote, self.path[1:].split(b"/")))
        if self.path == b"*":
            self._handleStar()
            return
        try:
            resrc = site.getResourceFor(self)
            if resource._IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(resrc)
        except BaseException:
            self.processingFailed(failure.Failure())


class SafeErrorsRequest(server.Request):
    def render(self, resrc):
        super().render(_UniformErrors(resrc))

    def processingFailed(self, reason):
        self._log.failure("request for {uri} failed", failure=reason, uri=self.uri)
        if self.startedWriting:  # too late for an error page: cut the response short
            self.loseConnection()
            return reason
        self.responseHeaders.removeHeader(b"content-encoding")
        self._encoder = None
        self.write(write_error(self, 500))
        self.finish()
        return reason


class _UniformErrors:
    """Wraps the routed resource for one ``render`` call."""

    def __init__(self, resource):
        self.resource = resource

    def render(self, request):
        try:
            body = self.resource.render(request)
        except UnsupportedMethod as error:
            if request.method == b"HEAD" and b"GET" in error.allowedMethods:
                raise  # Twisted answers HEAD by rendering GET without the body
            request.setHeader(b"allow", b", ".join(error.allowedMethods))
            return write_error(request, 405)
        if body is not server.NOT_DONE_YET and not isinstance(body, bytes):
            raise TypeError(f"{self.resource!r} rendered {type(body).__name__}, not bytes")
        return body

    def __repr__(self) -> str:
        return repr(self.resource)
