"""The admin listener: /healthz, /readyz, /metrics, /status and /status.json.

``/`` is an index of those pages.  Answers carry the site's ``Server`` header
(``Site(server_header=...)``), never Twisted's version, and unknown paths get
the same plain 404 as the sites do.

It runs on its own endpoint (loopback by default, off unless configured), so
probes and scrapes never compete with, or get routed like, user traffic.
With ``admin_token`` every path but /healthz needs ``Authorization: Bearer
<token>`` (or ``?token=`` for a browser opening /status).
"""

from __future__ import annotations

import hmac
import json
import os
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.web import server
from twisted.web.resource import Resource

from . import statuspage
from ._compat import raise_listen_errors
from .build import route_labels
from .pages import ErrorPage, write_error
from .procinfo import rss_mib
from .request import DefaultHeadersRequest, SafeErrorsRequest


class AdminState:
    """What the admin pages read in a single-process host.

    ``fanin.MasterAdminState`` answers the same questions for a master from
    its workers' snapshots.
    """

    def __init__(self, metrics, current, token: str | None):
        self.metrics = metrics
        self.current = current  # callable -> service.Prepared now being served
        self.token = token
        self.started = time.time()
        self.registry = metrics.registry  # what /metrics exposes

    def routes(self) -> list:
        return self.metrics.routes(route_labels(self.current().site))

    def sources(self) -> dict:
        context = self.current().context
        return {name: rows() for name, rows in context.status_sources.items()}

    def readiness(self) -> list:
        return [check() for check in self.current().context.readiness]

    def processes(self) -> list:
        return [process_row(os.getpid(), self.started, self.metrics.total_requests())]

    def all_sources(self) -> dict:
        return {"processes": self.processes(), **self.sources()}

    def snapshot(self) -> dict:
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "uptime": time.time() - self.started,
            "config": self.current().path,
            "routes": self.routes(),
            "sources": self.all_sources(),
            "reloads": list(self.metrics.reload_log),
        }


def process_row(pid: int, started: float, requests: int) -> dict:
    rss = rss_mib(pid)
    return {"pid": str(pid), "uptime_s": round(time.time() - started), "requests": requests,
            "rss_mib": None if rss is None else round(rss, 1)}


class SourceCollector:
    """Prometheus gauges from the status sources: each numeric column of each row.

    ``pools`` rows ``{"host": "a.test", "route": "/", "name": "app", "busy": 3}`` become
    ``twisthost_pools_busy{host="a.test",route="/",name="app"} 3``.  Only identity
    columns become labels, enough of them that no two rows make the same series
    (one upstream URL behind two proxies: their host and route); free text such
    as a last health-check result stays on /status, since a label that changes
    on every check would make a new series each time.
    """

    LABELS = ("host", "route", "name", "url", "file", "pid", "role", "worker", "backup")

    def __init__(self, state: AdminState):
        self.state = state

    def collect(self):
        for source, rows in self.state.all_sources().items():
            families: dict = {}
            for row in rows:
                labels = [key for key in self.LABELS if key in row]
                for key, value in row.items():
                    if not isinstance(value, (int, float)):  # bools too: healthy=1/0
                        continue
                    family = families.get(key)
                    if family is None:
                        family = families[key] = GaugeMetricFamily(
                            f"twisthost_{source}_{key}", f"{source}: {key}", labels=labels
                        )
                    family.add_metric([str(row[label]) for label in labels], float(value))
            yield from families.values()


def admin_endpoint(override: str | None, site) -> str | None:
    """The admin listener to open: ``--admin`` (``none`` turns it off) over ``Site(admin=...)``."""
    if override is None:
        return site.admin
    return None if override == "none" else override


def tcp_address(endpoint: str) -> tuple[str, int] | None:
    """(interface, port) of a ``tcp:``/``tcp6:`` endpoint string; None for other kinds."""
    kind, _, rest = endpoint.partition(":")
    parts = rest.split(":")
    if kind not in ("tcp", "tcp6") or not parts[0].isdigit():
        return None
    options = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    return options.get("interface", "::" if kind == "tcp6" else "0.0.0.0"), int(parts[0])


def exposure_warning(site) -> str | None:
    """A warning for ``twisthost check`` when the admin listener is reachable beyond loopback unprotected."""
    if not site.admin or site.admin_token:
        return None
    address = tcp_address(site.admin)
    if address is not None and address[0] in ("127.0.0.1", "::1", "localhost"):
        return None
    return (f"warning: admin listener {site.admin!r} is reachable beyond loopback without "
            "admin_token: anyone who can connect sees /metrics and /status")


class AdminPage(Resource):
    isLeaf = True

    def __init__(self, state: AdminState, needs_token: bool = True):
        super().__init__()
        self.state = state
        self.needs_token = needs_token

    def render(self, request):
        if request.postpath:  # a leaf: /status/x is not /status
            return write_error(request, 404, "Not found.")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return write_error(request, 405)
        if self.needs_token and not self.authorized(request):
            request.setHeader(b"www-authenticate", b'Bearer realm="twisthost admin"')
            return write_error(request, 401, "An admin token is required.")
        content_type, body = self.answer(request)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-store")
        return body

    def authorized(self, request) -> bool:
        token = self.state.token
        if token is None:
            return True
        header = request.getHeader(b"authorization") or b""
        given = header[7:] if header[:7].lower() == b"bearer " else (request.args.get(b"token") or [b""])[0]
        return hmac.compare_digest(given, token.encode())

    def answer(self, request) -> tuple[bytes, bytes]:
        raise NotImplementedError


class Health(AdminPage):
    def answer(self, request):
        return b"text/plain; charset=utf-8", b"ok\n"


class Ready(AdminPage):
    def answer(self, request):
        checks = self.state.readiness()
        failed = [f"{name}: {detail}" for name, ok, detail in checks if not ok]
        if failed:
            request.setResponseCode(503)
            return b"text/plain; charset=utf-8", ("not ready\n" + "\n".join(failed) + "\n").encode()
        return b"text/plain; charset=utf-8", b"ready\n"


class MetricsPage(AdminPage):
    def answer(self, request):
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self.state.registry)


class StatusJSON(AdminPage):
    def answer(self, request):
        return b"application/json", json.dumps(self.state.snapshot()).encode()


class StatusPage(AdminPage):
    def answer(self, request):
        return b"text/html; charset=utf-8", statuspage.render(self.state.snapshot()).encode()


#: (path, what it answers) of the pages :class:`Index` lists, in its order.
PAGES = (
    ("status", "the status page: requests, pools, upstreams, certificates"),
    ("status.json", "the data behind the status page"),
    ("metrics", "Prometheus metrics"),
    ("readyz", "readiness: 200, or 503 naming what is not ready"),
    ("healthz", "liveness: 200 while the process runs"),
)
_INDEX = ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>twisthost admin</title></head>\n"
          "<body><h1>twisthost admin</h1>\n<ul>\n" + "".join(
              f'<li><a href="/{path}">/{path}</a>: {what}</li>\n' for path, what in PAGES)
          + "</ul>\n</body></html>\n").encode("utf-8")


class Index(AdminPage):
    """``/``: links to the admin pages (no data of its own, so no token needed)."""

    def __init__(self, state: AdminState):
        super().__init__(state, needs_token=False)

    def answer(self, request):
        return b"text/html; charset=utf-8", _INDEX


class AdminRoot(Resource):
    """The admin pages by name; ``/`` is the :class:`Index`, anything else a plain 404."""

    def __init__(self, state: AdminState):
        super().__init__()
        self.index = Index(state)

    def getChild(self, path, request):
        if path == b"" and not request.postpath:
            return self.index
        return _NOT_FOUND


_NOT_FOUND = ErrorPage(404, "Not found.")


class AdminRequest(SafeErrorsRequest, DefaultHeadersRequest):
    """The sites' request behaviour: plain error pages, ``Server`` from the config."""


class AdminSite(server.Site):
    """Admin requests are not access-logged: scrapes every few seconds are noise."""

    displayTracebacks = False
    requestFactory = AdminRequest

    def __init__(self, root, state: AdminState):
        super().__init__(root)
        self.state = state

    @property
    def server_header(self) -> bytes | None:
        """The ``Server`` value of the config in force (``DefaultHeadersRequest`` sets it)."""
        value = self.state.current().site.server_header
        return value.encode("ascii") if value else None

    def log(self, request):
        pass


def admin_service(endpoint: str, state: AdminState, reactor) -> StreamServerEndpointService:
    state.registry.register(SourceCollector(state))
    root = AdminRoot(state)
    root.putChild(b"healthz", Health(state, needs_token=False))
    root.putChild(b"readyz", Ready(state))
    root.putChild(b"metrics", MetricsPage(state))
    root.putChild(b"status", StatusPage(state))
    root.putChild(b"status.json", StatusJSON(state))
    service = StreamServerEndpointService(
        endpoints.serverFromString(reactor, endpoint), AdminSite(root, state)
    )
    raise_listen_errors(service)
    return service
