"""The request class: Twisted's, minus the error pages it writes itself.

``twisted.web.server.Request`` answers a failing resource with an HTML page
(a traceback when ``displayTracebacks`` is on), an unsupported method with
an HTML 405/501 that echoes the method, and a resource that returns a
non-bytes body with a page quoting ``repr()`` of the request and resource.
Here each becomes the uniform plain-text page of :mod:`twisthost.pages`, and
the details go to the log only.
"""

from __future__ import annotations

from twisted.web import server
from twisted.web.error import UnsupportedMethod

from .pages import write_error


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
