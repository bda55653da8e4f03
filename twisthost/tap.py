"""``twistd twisthost``: command-line options and the service maker.

The config is loaded and built while options are parsed, before twistd
daemonises, so a broken config prints its ``site.py:LINE`` message on the
terminal and twistd exits 1 instead of dying later in a log file.
"""

from __future__ import annotations

import select
import sys

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from .admin import admin_endpoint
from .config import check_endpoint
from .errors import ConfigError
from .importing import mark_site_free
from .loader import load
from .logs import use_json_error_log
from .pidfile import PidFile, take_over
from .portcheck import check_listeners
from .service import HostService, prepare
from .tls import redirects_without_tls

log = Logger()


class Options(usage.Options):
    synopsis = "[--config site.py] [--listen ENDPOINT ...]"
    longdesc = "Serve the WSGI apps, virtual hosts, proxies and files a site.py describes."
    optParameters = [
        ["config", "c", "site.py", "Path of the config file."],
        ["admin", None, None, "Admin listener endpoint instead of the config's Site(admin=...); 'none' turns it off."],
        ["log-format", None, "text", "Error log format: text (twistd's) or json (one object per line)."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        self.prepared = None

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this endpoint instead of the config's (repeatable), e.g. tcp:8081."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        use_host_reactor()  # before site.py runs: it may import the reactor
        try:
            for endpoint in self["listen"]:
                check_endpoint(endpoint, None, "--listen")
            if self["admin"] not in (None, "none"):
                check_endpoint(self["admin"], None, "--admin")
            if self["log-format"] not in ("text", "json"):
                raise ConfigError(f"--log-format must be text or json, not {self['log-format']!r}")
            if self["log-format"] == "json" and self.parent is not None:
                use_json_error_log(self.parent)
            mark_site_free()  # forked workers import what site.py imports afresh
            site = load(self["config"])
            if site.uses_master():
                from .workers import prepare_master

                self.prepared = prepare_master(self["config"], site)  # no app imported here
            else:
                self.prepared = prepare(self["config"], site=site)
            # Still in the foreground, nothing open yet: a port in use is said here, located.
            check_listeners(site, self["listen"], admin_endpoint(self["admin"], site))
        except ConfigError as error:
            sys.stderr.write(f"{error}\n")
            raise SystemExit(1) from None


def use_host_reactor() -> None:
    """Serve on :class:`twisthost.reactor.HostReactor` unless twistd was given
    ``--reactor`` (or something imported the default reactor) or there is no epoll."""
    if "twisted.internet.reactor" not in sys.modules and hasattr(select, "epoll"):
        from .reactor import install

        install()


def makeService(options: Options):
    """One serving process, or a master over worker processes (``Site(workers=N)``)."""
    listen = options["listen"] or None
    # twistd keeps its options for the life of the process: taken out of them,
    # the start-up config is freed when a reload replaces it.
    prepared, options.prepared = options.prepared, None
    if listen:
        warning = redirects_without_tls(prepared.site)
        if warning:
            log.warn("{warning}", warning=warning)
    if prepared.site.uses_master():
        from .workers import Master

        server = Master(prepared, listen=listen, admin=options["admin"])
    else:
        server = HostService(prepared, listen=listen, admin=options["admin"])
    pidfile = take_over(getattr(options, "parent", None))
    if pidfile is None:
        return server
    both = MultiService()  # the pidfile is written before the server opens anything
    PidFile(pidfile).setServiceParent(both)
    server.setServiceParent(both)
    return both
