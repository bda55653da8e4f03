"""Assemble a running host from a config file: listeners, tree, reload, stop.

``prepare`` does load + validate + build (what ``twisthost check`` runs);
``HostService`` is one serving process: it opens the listeners, swaps the
tree on SIGHUP, stops gracefully on SIGTERM and reopens log files on SIGUSR1.
With ``Site(workers=N)`` each worker process runs one of these on sockets its
master bound (see ``twisthost.workers``).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from dataclasses import dataclass

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer, endpoints
from twisted.logger import Logger, globalLogPublisher
from twisted.python.logfile import BaseLogFile

from . import fanin, gcfreeze, graceful, sdnotify, tls
from ._compat import log_observers, observer_file, raise_listen_errors
from .build import BuildContext, build_root
from .config import TLS, Site
from .errors import ConfigError, collecting, raise_collected
from .hooks import run_hook
from .loader import load
from .admin import AdminState, admin_endpoint, admin_service
from .metrics import Metrics
from .observer import RequestObserver
from .server import HostSite

log = Logger()

#: Exit status of a single process that stopped because a WSGI pool was stuck
#: (EX_TEMPFAIL): non-zero, so systemd's ``Restart=on-failure`` starts it again.
EXIT_STUCK = 75


@dataclass
class Prepared:
    """A loaded, validated and built config: everything but the sockets."""

    path: str
    site: Site
    context: BuildContext
    root: object


def prepare(path: str, reactor=None, site: Site | None = None) -> Prepared:
    """Load (unless ``site`` is already loaded from ``path``), validate and build.

    Mistakes are collected across both steps and raised together, so one
    run of ``twisthost check`` lists them all.  The build still runs when
    only parts of the site failed (it skips those, to find import and file
    errors in the rest); not when the ``Site(...)`` itself did.
    """
    with collecting():
        site = load(path) if site is None else site
        if site.failed:
            raise_collected()
        context = BuildContext(site, reactor)
        root = build_root(site, context)
    return Prepared(path, site, context, root)


# ----------------------------------------------------------------- reopening log files

_reopeners: list = []


def on_reopen(callback):
    """Call ``callback()`` on SIGUSR1 (after logrotate moved files); returns an unregister function.

    Whoever opens a log file (access logs, ...) registers a callback that
    closes and reopens it by name, so rotated files are released.
    """
    _reopeners.append(callback)
    return lambda: _reopeners.remove(callback) if callback in _reopeners else None


def reopen_log_files() -> None:
    """Reopen twistd's ``--logfile`` and every registered file."""
    for observer in log_observers(globalLogPublisher):
        out = observer_file(observer)
        if isinstance(out, BaseLogFile):  # twistd's --logfile; its own USR1 renames instead
            out.reopen()
    for callback in list(_reopeners):
        try:
            callback()
        except Exception:
            log.failure("reopening a log file failed")
    log.info("reopened log files")


def on_signals(reactor, handlers: dict, at_once=None) -> None:
    """Run ``handlers[signum]()`` in the reactor thread when the signal arrives.

    Installed at once, so a HUP right after the sockets open is not lost, and
    again when the reactor runs: its startup puts in SIGINT/SIGTERM handlers
    that make twistd re-kill itself with the signal (exit 143), whereas a
    requested stop that completes is a success (exit 0).  ``at_once(signum)``
    runs in the signal handler itself, for what must not wait for the reactor.
    """

    def handle(signum, _frame):
        if at_once is not None:
            at_once(signum)
        reactor.callFromThread(handlers[signum])

    def install():
        for signum in handlers:
            signal.signal(signum, handle)

    install()
    reactor.callWhenRunning(install)


_exit_status: int | None = None


def exit_status_at_end(status: int) -> None:
    """Have this process exit with ``status`` once twistd has finished, instead of 0.

    twistd returns normally after the reactor stopped (removing its pidfile,
    stopping its logger) and the process exits 0; its only other outcome is
    re-killing itself with a stop signal.  So the status is applied by an exit
    function, :func:`_exit_with_status`, after the others have run.
    """
    global _exit_status
    _exit_status = status


@atexit.register  # at import, before site.py and its apps: exit functions run last-in first-out
def _exit_with_status() -> None:
    if _exit_status is None:
        return
    logging.shutdown()  # the exit function registered before this one (Twisted imports logging)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(_exit_status)


# ----------------------------------------------------------------- the serving process


def socket_description(item) -> str:
    """The endpoint string whose socket a listen item uses (a ``TLS(...)`` wraps one)."""
    return item.endpoint if isinstance(item, TLS) else item


def listener_key(item) -> tuple[str, bool]:
    """What makes two listen items the same listener on reload: socket and TLS or not.

    Not the whole item: a ``TLS(...)`` whose certificate changed keeps its
    port open, since each new connection asks for the current certificates.
    """
    return socket_description(item), isinstance(item, TLS)


class HostService(MultiService):
    """One process serving one config; ``reload()`` re-reads it, ``stopService`` drains."""

    #: False in workers: their master reloads by replacing them and runs the
    #: server hooks (on_starting, when_ready, on_exit).
    standalone = True

    def __init__(self, prepared: Prepared, listen=None, reactor=None, admin=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.current = prepared
        self.fixed_listen = tuple(listen) if listen else None
        self.factory = HostSite(prepared.root, prepared.site)
        self.factory.connections.request_observers.append(self._request_hooks)
        self.metrics = Metrics()  # lives across reloads; the observer is per config
        self.observer = RequestObserver(prepared.context, self.metrics)
        self.metrics.watch(self.factory.connections)
        self.factory.finish_observers.append(lambda request: self.observer.finished(request))
        self.factory.refusal_observers.append(lambda request: self.observer.refused(request))
        self.listeners: dict = {}  # listener_key(item) -> its StreamServerEndpointService
        self.fast_stop = False
        self.last_resort = None  # graceful.LastResort, once the signal handlers are in
        self.replacing = False  # a stuck pool asked for this process to be replaced
        prepared.context.pool_stuck = self.pool_stuck
        for item in self.listen_items(prepared.site):
            self.add_listener(item)
        # After the listeners: children start in order, so a listener that fails leaves
        # no admin listener answering /healthz for a server that is not serving.
        state = AdminState(self.metrics, lambda: self.current, prepared.site.admin_token)
        endpoint = admin_endpoint(admin, prepared.site)
        if self.standalone and endpoint:
            admin_service(endpoint, state, self.reactor).setServiceParent(self)
        elif not self.standalone and fanin.active_directory():
            # A worker: the master's admin listener reads what this writes.
            fanin.SnapshotWriter(fanin.active_directory(), state, self.reactor).setServiceParent(self)

    def listen_items(self, site: Site) -> tuple:
        """What to listen on: ``--listen`` from the command line wins over the config."""
        return self.fixed_listen or site.listen

    def endpoint(self, description: str):
        """The server endpoint for an endpoint string (workers use the master's sockets)."""
        return endpoints.serverFromString(self.reactor, description)

    def listener(self, item) -> StreamServerEndpointService:
        if isinstance(item, TLS):
            # Each new connection asks for the current certificates: a reload
            # swaps them without touching established connections.
            endpoint = tls.TLSEndpoint(
                self.endpoint(item.endpoint),
                lambda: self.current.context.shared["tls"][item.endpoint],
                self.reactor,
            )
        else:
            endpoint = self.endpoint(item)
        service = StreamServerEndpointService(endpoint, self.factory)
        raise_listen_errors(service)  # a port in use must stop twistd, not log and go on
        return service

    def add_listener(self, item) -> None:
        service = self.listener(item)
        try:
            service.setServiceParent(self)  # listens now when already running
        except Exception:
            service.disownServiceParent()
            raise
        self.listeners[listener_key(item)] = service

    # -- start

    def server_hook(self, name: str) -> None:
        if self.standalone:
            run_hook(self.current.site, name, self.current.site)

    def privilegedStartService(self) -> None:
        self.server_hook("on_starting")
        # Before the sockets open: a HUP sent as soon as the port answers must
        # not meet the default action (terminate).  Handlers run once the reactor does.
        self.install_signals()
        super().privilegedStartService()

    def startService(self) -> None:
        self.current.context.services.startService()
        super().startService()
        run_hook(self.current.site, "post_worker_init", self.current.site)
        self.reactor.callWhenRunning(self.running_now)

    def install_signals(self) -> None:
        handlers = {
            signal.SIGTERM: self.reactor.stop,
            signal.SIGINT: self.stop_fast,
            signal.SIGQUIT: self.stop_fast,
            signal.SIGUSR1: reopen_log_files,
        }
        if self.standalone:
            handlers[signal.SIGHUP] = self.reload
        # Whatever happens after a stop signal, this process ends soon after graceful_timeout.
        self.last_resort = last_resort = graceful.LastResort()
        on_signals(self.reactor, handlers,
                   at_once=lambda signum: last_resort.on_signal(signum, self.current.site.graceful_timeout))

    def running_now(self) -> None:
        """The reactor runs: everything is loaded (freeze it), tell systemd we are ready."""
        gcfreeze.freeze()
        if self.standalone:
            sdnotify.notify("READY=1", f"MAINPID={os.getpid()}")
        self.server_hook("when_ready")

    # -- stop

    def stop_fast(self) -> None:
        """INT/QUIT: close connections now instead of waiting for requests."""
        self.fast_stop = True
        self.reactor.stop()

    def pool_stuck(self, pool, why: str) -> None:
        """Every thread of ``pool`` stayed past its deadline for graceful_timeout: replace this process.

        A single process cannot start its own replacement: it stops as on
        SIGTERM (listeners close, in-flight requests elsewhere finish within
        graceful_timeout) and exits with ``EXIT_STUCK`` for its supervisor
        (systemd ``Restart=on-failure``) to start a fresh one.
        """
        if self.replacing or not self.running:
            return
        self.replacing = True
        timeout = self.current.site.graceful_timeout
        log.error(
            "{why}: every thread has been past its deadline for {timeout:g}s; stopping gracefully"
            " and exiting with status {status} so that the supervisor starts a fresh process",
            why=why, timeout=timeout, status=EXIT_STUCK,
        )
        self.set_exit_status(EXIT_STUCK)
        if self.last_resort is not None:
            self.last_resort.on_signal(signal.SIGTERM, timeout)  # the same bound as a TERM
        self.reactor.stop()

    def set_exit_status(self, status: int) -> None:
        """The status this process exits with after it stopped (see ``exit_status_at_end``)."""
        exit_status_at_end(status)

    def stopService(self) -> defer.Deferred:
        """Stop accepting, let requests finish, stop pools: all within graceful_timeout."""
        if self.standalone:
            sdnotify.notify("STOPPING=1")
        timeout = 0.0 if self.fast_stop else self.current.site.graceful_timeout
        deadline = self.reactor.seconds() + timeout
        log.info("stopping: {how}", how="now" if self.fast_stop else f"letting requests finish (up to {timeout:g}s)")
        stopped = defer.maybeDeferred(super().stopService)
        stopped.addBoth(lambda _: self.factory.connections.drain(timeout))
        stopped.addBoth(lambda _: graceful.stop_by(self.current.context.services, deadline, self.reactor))
        stopped.addBoth(lambda _: self.server_hook("on_exit"))
        return stopped

    # -- reload

    def reload(self) -> bool:
        """Re-run load + build; on success swap the tree, else keep serving the old one."""
        sdnotify.reloading()
        try:
            new = prepare(self.current.path, self.reactor)
        except ConfigError as error:
            log.error("reload failed, keeping the running config: {error}", error=str(error))
            self.metrics.reloaded(False, str(error))
            sdnotify.notify("READY=1")
            return False
        try:
            new.context.services.startService()  # an ASGI app's lifespan startup runs here
        except Exception as error:
            log.error("reload failed, keeping the running config: {error}", error=str(error))
            new.context.services.stopService()
            self.metrics.reloaded(False, str(error))
            sdnotify.notify("READY=1")
            return False
        self._update_listeners(new.site)
        new.context.pool_stuck = self.pool_stuck
        old, self.current = self.current, new
        self.observer = RequestObserver(new.context, self.metrics)
        self.factory.swap_root(new.root, new.site)
        # The old tree's pools stop once the requests it routed are done. Its
        # objects were frozen (gcfreeze) and may hold cycles: refreeze on a later
        # turn, when nothing here (this frame, when settled at once) holds it any more.
        self.factory.connections.settle(old.site.graceful_timeout).addBoth(
            lambda _: old.context.services.stopService()).addBoth(
            lambda _: self.reactor.callLater(0, gcfreeze.refreeze))
        self.metrics.reloaded(True, new.path)
        log.info("reloaded {path}", path=new.path)
        sdnotify.notify("READY=1")
        run_hook(new.site, "on_reload", new.site)
        return True

    def _update_listeners(self, site: Site) -> None:
        """Close listeners the new config dropped, then open the ones it added.

        The new ones open once the closed ones are gone, so a socket that
        switches between plain and TLS can be bound again.
        """
        wanted = {listener_key(item): item for item in self.listen_items(site)}
        closing = []
        for key in [key for key in self.listeners if key not in wanted]:
            closing.append(defer.maybeDeferred(self.listeners.pop(key).disownServiceParent))
            log.info("reload: closed listener {key}", key=_describe(key))
        added = [item for key, item in wanted.items() if key not in self.listeners]
        defer.DeferredList(closing).addCallback(lambda _: self._add_listeners(added))

    def _add_listeners(self, items) -> None:
        for item in items:
            try:
                self.add_listener(item)
                log.info("reload: listening on {key}", key=_describe(listener_key(item)))
            except Exception as error:
                log.error("reload: cannot listen on {key}: {error}", key=_describe(listener_key(item)), error=str(error))

    def _request_hooks(self, request) -> None:
        site = self.current.site
        if not site.hooks:
            return
        run_hook(site, "pre_request", request)
        if "post_request" in site.hooks:
            request.notifyFinish().addBoth(lambda _: run_hook(site, "post_request", request))


def _describe(key: tuple[str, bool]) -> str:
    description, is_tls = key
    return f"TLS({description})" if is_tls else description
