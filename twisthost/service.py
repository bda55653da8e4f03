"""Assemble a running host from a config file: listeners, tree, reload.

``prepare`` does load + validate + build (what ``twisthost check`` runs);
``HostService`` adds the listening side and swaps the tree on SIGHUP.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.logger import Logger

from . import tls
from .build import BuildContext, build_root
from .config import TLS, Site
from .errors import ConfigError
from .loader import load
from .server import HostSite

log = Logger()


@dataclass
class Prepared:
    """A loaded, validated and built config: everything but the sockets."""

    path: str
    site: Site
    context: BuildContext
    root: object


def prepare(path: str, reactor=None) -> Prepared:
    site = load(path)
    context = BuildContext(site, reactor)
    return Prepared(path, site, context, build_root(site, context))


class HostService(MultiService):
    """One process serving one config; ``reload()`` re-reads it."""

    def __init__(self, prepared: Prepared, listen=None, reactor=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.current = prepared
        self.factory = HostSite(prepared.root, prepared.site)
        for item in listen or prepared.site.listen:
            self.listener(item).setServiceParent(self)

    def listener(self, item) -> StreamServerEndpointService:
        if isinstance(item, TLS):
            # Each new connection asks for the current certificates: a reload
            # swaps them without touching established connections.
            endpoint = tls.TLSEndpoint(
                endpoints.serverFromString(self.reactor, item.endpoint),
                lambda: self.current.context.shared["tls"][item.endpoint],
                self.reactor,
            )
        else:
            endpoint = endpoints.serverFromString(self.reactor, item)
        service = StreamServerEndpointService(endpoint, self.factory)
        service._raiseSynchronously = True  # a port in use must stop twistd, not log and go on
        return service

    def startService(self) -> None:
        self.current.context.services.startService()
        super().startService()
        # twistd starts services before the reactor installs its own signal
        # handlers, so ours go in once it runs.
        self.reactor.callWhenRunning(self._install_signal_handlers)

    def _install_signal_handlers(self) -> None:
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)
        # Twisted's own SIGTERM handler makes twistd re-kill itself with the
        # signal after shutdown (exit status 143); a requested stop that
        # completes is a success, so exit 0 like gunicorn and nginx.
        signal.signal(signal.SIGTERM, self._on_term)

    def stopService(self):
        stopped = super().stopService()
        stopped.addBoth(lambda _: self.current.context.services.stopService())
        return stopped

    def _on_term(self, signum, frame) -> None:
        log.info("SIGTERM: stopping")
        self.reactor.callFromThread(self.reactor.stop)

    def _on_hup(self, signum, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """Re-run load + build; on success swap the tree, else keep serving the old one."""
        try:
            new = prepare(self.current.path, self.reactor)
        except ConfigError as error:
            log.error("reload failed, keeping the running config: {error}", error=str(error))
            return False
        new.context.services.startService()
        old, self.current = self.current, new
        self.factory.swap_root(new.root, new.site)
        old.context.services.stopService()
        log.info("reloaded {path}", path=new.path)
        return True
