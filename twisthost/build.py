"""Turn a validated ``Site`` into a resource tree, without listening.

Each service type has one builder ``build(config, context) -> IResource`` in
its capability module; this module only dispatches and assembles the host
tables.  Long-lived helpers a builder creates (thread pools, upstream health
checks) are added to ``context.services`` so that whoever serves the tree
starts them, and stops them when the tree is replaced on reload.
"""

from __future__ import annotations

import importlib

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.web.resource import IResource

from . import config as c
from . import sources
from .errors import ConfigError, noted
from .importing import resolve
from .logs import access_log_for
from .tls import build_tls, host_guard
from .vhost import HostTable, RouteTable, VirtualHosts

log = Logger()

BUILDERS = {
    c.Redirect: "twisthost.redirect:build_redirect",
    c.Resource: "twisthost.build:build_resource",
    c.WSGI: "twisthost.wsgi:build_wsgi",
    c.ASGI: "twisthost.asgi:build_asgi",
    c.Static: "twisthost.static:build_static",
    c.Proxy: "twisthost.proxy:build_proxy",
    c.Scripts: "twisthost.scripts:build_scripts",
    c.CGI: "twisthost.cgi:build_cgi",
}


class BuildContext:
    """What builders share: the site config, the reactor, services to run."""

    def __init__(self, site: c.Site, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.site = site
        self.reactor = reactor
        self.services = MultiService()
        self.shared: dict = {}  # named resources several services use, e.g. pools
        # For the admin listener: name -> callable returning a list of row dicts
        # (pools, upstreams...) and callables returning (name, ok, detail).
        self.status_sources: dict = {}
        self.readiness: list = []
        # (host, route, resource) of every mount built, named as in logs and metrics:
        # the status page tells pools (and upstreams) apart by the routes that use them.
        self.mounts: list = []

    def pool_stuck(self, pool, why: str) -> None:
        """A WSGI pool has every thread stuck past its deadline (``WorkerPool.on_stuck``).

        The serving process replaces this with ``HostService.pool_stuck``;
        a tree that no process serves only logs it.
        """
        log.warn("{why}: no serving process to replace", why=why)


def build_root(site: c.Site, context: BuildContext) -> VirtualHosts:
    """The root resource for ``site``: host table over per-host route tables.

    The TLS contexts are built here too (``context.shared["tls"]``, by
    endpoint) so that check and reload validate certificates with the rest.
    In a collecting run (``twisthost check``) each host and service is built
    on its own, so one run reports every import or file that fails; the tree
    is then incomplete, and ``prepare`` raises instead of returning it.
    """
    with noted():
        context.shared["tls"] = build_tls(site)
    table: HostTable[RouteTable] = HostTable()
    for host in site.hosts:
        with noted():
            routes = build_routes(host, context)
            for name in host.names():
                table.add(name, routes)
    if site.default is not None:
        with noted():
            table.default = build_routes(site.default, context)
    sources.register(context)
    return VirtualHosts(table)


def build_routes(host: c.Host, context: BuildContext) -> RouteTable:
    resources = {}
    for prefix, service in host.routes.items():
        with noted():
            resources[prefix] = build_service(service, context)
            context.mounts.append((host_label(host), prefix, resources[prefix]))
    return RouteTable(
        resources,
        guard=host_guard(host, context.site),
        label=host_label(host),
        access_log=access_log_for(host, context.site, context),
    )


def host_label(host: c.Host) -> str:
    """The host's name in logs, metrics and the status page."""
    return host.name or "(default)"


def route_labels(site: c.Site) -> list[tuple[str, str]]:
    """(host, route) of every configured route, as metrics label them (a prefix is
    its own label: ``Host`` normalised it), so /status lists routes no request reached."""
    return [(host_label(host), prefix) for host, prefix, _ in site.services()]


def build_service(service: c.Service, context: BuildContext) -> IResource:
    module_name, _, function = BUILDERS[type(service)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ConfigError(
            f"{type(service).__name__} is not available yet in this version of twisthost",
            service.where,
        ) from None
    try:
        return getattr(module, function)(service, context)
    except ConfigError as error:
        raise error.located(service.where) from None


def build_resource(config: c.Resource, context: BuildContext) -> IResource:
    """``Resource("pkg.mod:factory()")``: any twisted.web resource, built by user code."""
    resource = resolve(config, config.target, config.pythonpath)
    if not IResource.providedBy(resource):
        raise ConfigError(
            f"Resource({config.target!r}) gave {type(resource).__name__}, not a twisted.web resource",
            config.where,
            "return an instance of twisted.web.resource.Resource (or anything providing IResource)",
        )
    return resource
