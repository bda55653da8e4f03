"""Active health checks: a service that asks every upstream ``GET /healthz`` now and then.

Passive health (failures seen on real requests) lives in ``Upstream.failed``;
this module adds the active side, which is also what brings an upstream back
after it was marked down.  The checker is an ``IService`` in
``context.services``, so it runs while the config is served and stops when a
reload replaces it.
"""

from __future__ import annotations

import time

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

log = Logger()


class HealthChecker(TimerService):
    """Check all ``upstreams`` every ``config.interval`` seconds through ``agent``.

    The checks' Host is ``HealthCheck(host=)``, else ``proxy_host``, the Host the
    ``Proxy`` sends its requests with (as NGINX Plus checks with the location's
    ``proxy_set_header Host``), else the upstream's own host:port: a virtual-host
    upstream (twisthost itself, nginx) then checks the site the proxy serves, not
    whichever answers its default host.
    """

    def __init__(self, config, upstreams, agent, reactor, proxy_host: str | None = None):
        super().__init__(config.interval, self.check_all)
        self.clock = reactor
        self.config, self.upstreams, self.agent = config, upstreams, agent
        host = config.host or proxy_host
        self.host = host.encode("idna") if host else None

    def check_all(self):
        return defer.DeferredList([self.check(upstream) for upstream in self.upstreams])

    def check(self, upstream):
        host = self.host or upstream.netloc
        url = upstream.origin + self.config.path.encode("ascii")
        d = self.agent.request(b"GET", url, Headers({b"host": [host]}))
        d.addCallback(lambda response: readBody(response).addCallback(lambda _: response.code))
        d.addTimeout(self.config.timeout, self.clock)
        d.addCallbacks(
            lambda code: (code == self.config.expect_status, f"HTTP {code}"),
            lambda failure: (False, failure.getErrorMessage() or failure.type.__name__),
        )
        d.addCallback(self._record, upstream)
        return d

    def _record(self, result: tuple, upstream) -> None:
        ok, detail = result
        # With its zone: whoever reads /status may be in another one.
        upstream.last_check = f"{time.strftime('%H:%M:%S %Z')} {'ok' if ok else 'failed'}: {detail}"
        was = upstream.healthy
        upstream.checked(ok, self.config.passes, self.config.fails)
        if upstream.healthy != was:
            log.info(
                "upstream {url} is {state} (active health check)",
                url=upstream.url, state="up" if upstream.healthy else "down",
            )
