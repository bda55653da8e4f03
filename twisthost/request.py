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
from twisted.web import server
from twisted.web.error import UnsupportedMethod
from twisted.web.http import datetimeToString

from ._compat import FastHeaders, answer_star, is_encoding_resource
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
            answer_star(self)
            return
        try:
            resrc = site.getResourceFor(self)
            if is_encoding_resource(resrc):
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
