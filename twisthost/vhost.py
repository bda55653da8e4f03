"""Host header -> virtual host -> longest path prefix -> service resource.

Twisted's ``NameVirtualHost`` knows exact names only and its resources route
one path segment at a time, while ``WSGIResource`` is a leaf that swallows
everything below it.  So routing happens here, above the services, in one
step: the whole path is matched against each host's prefixes (on segment
boundaries) and the matched segments are moved to ``request.prepath``, which
is what services see as SCRIPT_NAME.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import unquote

from .http.wire import host_name
from .logs import RequestNotes, request_id
from .pages import ErrorPage

T = TypeVar("T")

_BAD_HOST = ErrorPage(400, "Bad or missing Host header.")
_NO_HOST = ErrorPage(404, "No site is configured for this host name.")
_NO_ROUTE = ErrorPage(404, "Not found.")


class HostTable(Generic[T]):
    """Match host names: exact beats wildcard, the longest wildcard suffix wins."""

    def __init__(self, default: T | None = None):
        self.exact: dict[str, T] = {}
        self.wildcards: dict[str, T] = {}  # ".example.com" -> value
        self.default = default

    def add(self, name: str, value: T) -> None:
        if name.startswith("*."):
            self.wildcards[name[1:]] = value
        else:
            self.exact[name] = value

    def lookup(self, name: str) -> T | None:
        found = self.exact.get(name)
        if found is not None:
            return found
        dot = name.find(".")
        while dot != -1:
            found = self.wildcards.get(name[dot:])
            if found is not None and dot > 0:
                return found
            dot = name.find(".", dot + 1)
        return self.default


def host_from_header(value: bytes | None) -> str | None:
    """The normalised name in a Host header, or None when it is absent or malformed
    (:func:`twisthost.http.wire.host_name`, which remembers the few values a server sees)."""
    return None if value is None else host_name(value)


class RouteTable:
    """Path prefixes of one host, matched on whole segments, longest first.

    ``guard(request, host_name)``, when given, runs first and may answer
    instead (the https redirect and HSTS of ``tls.host_guard``).
    """

    def __init__(self, routes: dict[str, Resource], guard=None, label: str = "", access_log=None):
        self.guard = guard
        self.label = label  # the host's name in logs and metrics
        self.access_log = access_log
        self.routes = sorted(
            ((_segments(prefix), resource, "/" + prefix.strip("/")) for prefix, resource in routes.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        #: Prefixes of the mounts that have a lane (:mod:`twisthost.lane`), as sent: a
        #: target starting with none of them is not worth decoding and matching.
        self.lane_prefixes = tuple(
            label.encode("utf-8") for _, resource, label in self.routes if hasattr(resource, "lane"))

    def notes(self, route: str, request_id: str) -> RequestNotes:
        """The notes of a request routed here to ``route`` (its label), starting now."""
        return RequestNotes(self.label, route, time.monotonic(), request_id, self.access_log)

    def match_route(self, segments: list[bytes]) -> tuple[Resource, int, str] | None:
        """``(resource, segments its prefix took, route label)`` for a request path, or None."""
        for prefix, resource, label in self.routes:
            size = len(prefix)
            if segments[:size] == prefix:
                return resource, size, label
        return None


def _without_trailing_slash(segments: list[bytes]) -> list[bytes]:
    """``/app/`` matches the ``/app`` route like ``/app`` does."""
    return segments[:-1] if len(segments) > 1 and segments[-1] == b"" else segments


def _target_segments(target: bytes) -> list[bytes]:
    """A request target's decoded path segments, as Twisted makes ``postpath``."""
    return [unquote(part) for part in target.partition(b"?")[0][1:].split(b"/")]


def _segments(prefix: str) -> list[bytes]:
    return [] if prefix == "/" else prefix.strip("/").encode("utf-8").split(b"/")


class VirtualHosts(Resource):
    """The root resource: picks a host's route table, then descends into it."""

    def __init__(self, hosts: HostTable[RouteTable]):
        super().__init__()
        self.hosts = hosts

    def getChildWithDefault(self, path, request):
        # Twisted has already moved the first segment to prepath; take it back
        # so the whole path is matched and mounted services see the true prepath.
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self.route(request)

    def render(self, request):  # only reached for a request with an empty path
        return getChildForRequest(self.route(request), request).render(request)

    def table_for(self, request):
        """``(route table, host name)`` for the request's Host header, or ``(error page, None)``."""
        return self.table_for_host(request.requestHeaders.getRawHeaders(b"host"), request.clientproto)

    def table_for_host(self, header: list[bytes] | None, version: bytes):
        """``(route table, host name)`` for the values of a Host header, or ``(error page, None)``."""
        if header is None:
            if version != b"HTTP/1.0":
                return _BAD_HOST, None
            name = ""
        elif len(header) != 1:
            return _BAD_HOST, None
        else:
            name = host_from_header(header[0])
            if name is None:
                return _BAD_HOST, None
        table = self.hosts.lookup(name)
        return (_NO_HOST, None) if table is None else (table, name)

    def locate(self, header: list[bytes] | None, version: bytes, segments: list[bytes]):
        """The one routing step: ``(route table or error page, host name, match)``.

        ``match`` is ``(resource, prefix size, route label)`` from
        :meth:`RouteTable.match_route`, or None.  Every entry point (Twisted
        traversal, body limits, X-Accel-Redirect, the lanes) routes here.
        """
        table, name = self.table_for_host(header, version)
        if not isinstance(table, RouteTable):
            return table, None, None
        return table, name, table.match_route(_without_trailing_slash(segments))

    def service_for(self, request, target: bytes):
        """The service a request for ``target`` will reach, known as soon as its headers are in.

        Lets the server apply that service's limits (``max_body``) before
        reading the body; routing proper happens after the body is read.
        """
        found = self.route_for(request, target)
        return found[0] if found else None

    def route_for(self, request, target: bytes):
        """``(service, decoded path segments below its prefix)`` for ``target`` on the request's host.

        None when the host or no route matches.  Also finds the internal
        ``Static`` an ``X-Accel-Redirect`` answer hands over to.
        """
        segments = _target_segments(target)
        _, _, found = self.locate(request.requestHeaders.getRawHeaders(b"host"), request.clientproto, segments)
        return (found[0], segments[found[1]:]) if found else None

    def lane_target(self, host: bytes, target: bytes):
        """``(route table, route label, resource, prefix segments, segments below)`` for :mod:`twisthost.lane`.

        ``host`` is the request's one Host header.  None when the request
        would not simply reach a service: an unknown host or path, or a
        host with a guard (https redirect, HSTS) that may answer first.
        """
        table, _ = self.table_for_host([host], b"HTTP/1.1")
        if (not isinstance(table, RouteTable) or table.guard is not None
                or not target.startswith(table.lane_prefixes)):
            return None
        segments = _target_segments(target)
        found = table.match_route(_without_trailing_slash(segments))
        if found is None:
            return None
        resource, size, label = found
        return table, label, resource, segments[:size], segments[size:]

    def route(self, request):
        table, name, found = self.locate(
            request.requestHeaders.getRawHeaders(b"host"), request.clientproto, request.postpath)
        if not isinstance(table, RouteTable):
            return table
        if table.guard is not None:
            answer = table.guard(request, name)
            if answer is not None:
                # The host answered for the route (the https redirect): logged, counted
                # and identified as that route's requests are.
                request.notes = table.notes(found[2] if found else "", request_id(request))
                return answer
        if found is None:
            return _NO_ROUTE
        resource, size, route = found
        request.notes = table.notes(route, request_id(request))
        request.prepath.extend(request.postpath[:size])
        del request.postpath[:size]
        return getChildForRequest(resource, request)
