"""``X-Accel-Redirect``: an application names a file, the host serves it.

The application (a WSGI app, or a proxied upstream) decides *whether* a
client may have a file (a login, a quota, a signed link) and answers
``X-Accel-Redirect: /protected/report.pdf``;
the host then serves that path from a ``Static(..., internal=True)`` route of
the same host, with everything a static file gets (validators, conditional
requests, Range, ``sendfile``), instead of a pool thread or the proxy
streaming the bytes.
As nginx does it:

- the target must route, on the request's host, to a ``Static`` marked
  ``internal``; anything else is a 404 and an error log line, so an app
  cannot reach files the config did not set aside for it;
- the path is decoded and checked by that ``Static`` like any request path
  (traversal refused, hidden names 404);
- the application's status and body are dropped; of its headers only those
  in :data:`KEPT` stay (nginx's list), the rest come from the file;
- the file is fetched as a GET (a HEAD stays a HEAD), with the client's
  Range and conditional headers.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from .pages import ErrorPage
from .static import StaticResource

log = Logger()

HEADER = b"x-accel-redirect"
#: Application headers that stay on the file's response (nginx keeps the same ones).
KEPT = frozenset((b"set-cookie", b"content-disposition", b"cache-control", b"expires"))

_NOT_FOUND = ErrorPage(404, "Not found.")
#: Answers that mean the target was refused or missing (412, 416, 304 are the client's conditions).
_REFUSED = frozenset((400, 403, 404))


def target_of(headers) -> bytes | None:
    """The ``X-Accel-Redirect`` value among ``[(name, value), ...]`` (bytes), if any."""
    for name, value in headers:
        if len(name) == 16 and name.lower() == HEADER:
            return value
    return None


def hand_off(request, target: bytes, headers, source: str) -> None:
    """Answer ``request`` with the file ``target`` names, keeping the :data:`KEPT` ``headers``.

    ``source`` names the application in log lines.  Finishes the request.
    """
    kept = [(name, value) for name, value in headers if name.lower() in KEPT]
    try:
        request.render(_internal_file(request, target.strip(), kept))
    except Exception:
        request.processingFailed(Failure())
        return
    if request.code in _REFUSED:
        log.error(
            "{source}: X-Accel-Redirect to {target!r} for {method} {uri} answered {code}",
            source=source, target=target.decode("latin-1"), code=request.code,
            method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"),
        )


def _internal_file(request, target: bytes, kept: list):
    """The resource that serves ``target``: the internal ``Static``'s file, or a 404 page."""
    route_for = getattr(request.site.resource, "route_for", None)
    found = route_for(request, target) if route_for is not None and target.startswith(b"/") else None
    if found is None or not isinstance(found[0], StaticResource) or not found[0].config.internal:
        return _NOT_FOUND  # logged by hand_off with the 404
    return _InternalFile(*found, kept)


class _InternalFile:
    """One ``render`` of an internal ``Static`` for the redirect's path segments."""

    def __init__(self, static: StaticResource, segments: list[bytes], kept: list):
        self.static, self.segments, self.kept = static, segments, kept

    def render(self, request):
        headers = request.responseHeaders
        for name, value in self.kept:
            headers.addRawHeader(name, value)
        method = request.method
        if method != b"HEAD":
            request.method = b"GET"  # a POST answered with a file gets the file, as in nginx
        try:
            body = self.static.serve(request, self.segments)
        finally:
            request.method = method
        if request.code in _REFUSED:  # an error page is not the download the headers describe
            for name in {name.lower() for name, _ in self.kept}:
                headers.removeHeader(name)
        return body
