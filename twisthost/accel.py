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

``X-Sendfile: /srv/private/report.pdf`` (Apache's mod_xsendfile, lighttpd) names
the file by its filesystem path instead.  It is honoured only for a file under
the root of one of the host's ``Static(internal=True)`` routes, which then
serves it as above (the root plays ``XSendFilePath``'s part); any other path,
a relative one or one with a ``.``/``..`` segment, is refused with a 500 and an
error log line, since it is the application that is wrong, not the client.
The header itself, carrying a path of the server's, never reaches a client.
When an answer has both headers, ``X-Accel-Redirect`` wins.
"""

from __future__ import annotations

import os

from twisted.logger import Logger
from twisted.python.failure import Failure

from .pages import ErrorPage
from .static import StaticResource

log = Logger()

HEADER = b"x-accel-redirect"
#: Names a file by its filesystem path (mod_xsendfile, lighttpd).
SENDFILE = b"x-sendfile"
#: The headers that hand an answer to an internal ``Static``, in the order they win.
HEADERS = (HEADER, SENDFILE)
#: Application headers that stay on the file's response (nginx keeps the same ones).
KEPT = frozenset((b"set-cookie", b"content-disposition", b"cache-control", b"expires"))

_NOT_FOUND = ErrorPage(404, "Not found.")
_NOT_ALLOWED = ErrorPage(500, "The application named a file it may not send.")
#: Answers that mean the target was refused or missing (412, 416, 304 are the client's conditions).
_REFUSED = frozenset((400, 403, 404, 500))


def target_of(headers) -> tuple[bytes, bytes] | None:
    """``(header, value)`` of the hand-off among ``[(name, value), ...]`` (bytes), if any.

    ``header`` is one of :data:`HEADERS` (lower case); ``X-Accel-Redirect`` wins.
    """
    found = None
    for name, value in headers:
        if len(name) in (10, 16):
            lower = name.lower()
            if lower == HEADER:
                return HEADER, value
            if lower == SENDFILE and found is None:
                found = SENDFILE, value
    return found


def hand_off(request, target: tuple[bytes, bytes], headers, source: str) -> None:
    """Answer ``request`` with the file ``target`` (:func:`target_of`) names, keeping the
    :data:`KEPT` ``headers``.

    ``source`` names the application in log lines.  Finishes the request.
    """
    header, value = target
    kept = [(name, value) for name, value in headers if name.lower() in KEPT]
    find = _internal_file if header == HEADER else _sent_file
    try:
        request.render(find(request, value.strip(), kept))
    except Exception:
        request.processingFailed(Failure())
        return
    if request.code in _REFUSED:
        log.error(
            "{source}: {header} to {target!r} for {method} {uri} answered {code}",
            source=source, header="X-Accel-Redirect" if header == HEADER else "X-Sendfile",
            target=value.decode("latin-1"), code=request.code,
            method=request.method.decode("latin-1"), uri=request.uri.decode("latin-1"),
        )


def _internal_file(request, target: bytes, kept: list):
    """The resource that serves ``target``: the internal ``Static``'s file, or a 404 page."""
    route_for = getattr(request.site.resource, "route_for", None)
    found = route_for(request, target) if route_for is not None and target.startswith(b"/") else None
    if found is None or not isinstance(found[0], StaticResource) or not found[0].config.internal:
        return _NOT_FOUND  # logged by hand_off with the 404
    return _InternalFile(*found, kept)


def _sent_file(request, path: bytes, kept: list):
    """The resource that serves the file at ``path``: an internal ``Static``'s, or a 500 page."""
    names = path.split(b"/")
    if not path.startswith(b"/") or b"." in names or b".." in names or not names[-1] or os.path.isdir(path):
        return _NOT_ALLOWED  # a file, named absolutely and plainly: a folder would get its index or a 301
    table_for = getattr(request.site.resource, "table_for", None)
    routes = getattr(table_for(request)[0], "routes", ()) if table_for is not None else ()
    for _, static, _ in routes:
        if isinstance(static, StaticResource) and static.config.internal:
            segments = _below(static, path)
            if segments is not None:
                return _InternalFile(static, segments, kept)
    return _NOT_ALLOWED  # logged by hand_off with the 500


def _below(static: StaticResource, path: bytes) -> list[bytes] | None:
    """The segments of ``path`` below ``static``'s root (as written or resolved), or None."""
    for root in {os.fsencode(static.root), os.fsencode(os.path.normpath(static.config.root))}:
        if path.startswith(root + b"/"):
            return path[len(root) + 1:].split(b"/")
    return None


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
