"""Connection admission: ``max_connections`` per process and per client IP.

A connection over a cap is accepted and answered at once with a small error
(503 when the process is full, 429 when one client holds too many) instead of
being left in the listen backlog: the client learns why, the slot count never
exceeds the cap, and new connections are served again as soon as others
close.  Counting happens at accept time, before any byte is parsed, so a
flood of idle sockets cannot starve the process of file descriptors.
"""

from __future__ import annotations

import resource
from collections import Counter

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from .channel import error_response, linger_close

log = Logger()


class ConnectionSlots:
    """Open connections of one process, in total and per peer IP."""

    def __init__(self):
        self.open = 0
        self.per_ip: Counter = Counter()

    def admit(self, addr, limits) -> protocol.Protocol | None:
        """Take a slot for a connection from ``addr``, or return the protocol that refuses it."""
        ip = getattr(addr, "host", None)  # None for UNIX sockets: no per-IP cap there
        if limits.max_connections and self.open >= limits.max_connections:
            return Refusal(503, "Too many connections; try again shortly.", limits.server_header)
        cap = limits.max_connections_per_ip
        if cap and ip is not None and self.per_ip[ip] >= cap:
            return Refusal(429, "Too many connections from your address.", limits.server_header)
        self.open += 1
        if ip is not None:
            self.per_ip[ip] += 1
        return None

    def release(self, addr) -> None:
        self.open -= 1
        ip = getattr(addr, "host", None)
        if ip is not None:
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]


class Refusal(protocol.Protocol, TimeoutMixin):
    """Answer one error response on a connection over a cap, then close it."""

    def __init__(self, status: int, detail: str, server_header: str | None):
        self.response = error_response(status, detail, server_header)

    def connectionMade(self):
        log.info("refusing a connection from {peer}", peer=str(self.transport.getPeer()))
        self.transport.write(self.response)
        linger_close(self.transport, self.setTimeout)

    def dataReceived(self, data):
        """Read and drop the request: closing with unread data would reset the answer away."""

    def timeoutConnection(self):
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.setTimeout(None)


def fit_open_files(max_connections: int) -> None:
    """Raise the soft limit on open files so ``max_connections`` can be reached.

    Without it a default soft limit of 1024 makes ``accept()`` fail with
    EMFILE before the cap is hit; like nginx's ``worker_rlimit_nofile``, but
    automatic and never above the hard limit.
    """
    wanted = max_connections + 256  # listeners, log files, upstream and pool sockets
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warn(
                "open-file limit {hard} is below max_connections={max}; raise it (ulimit -n, LimitNOFILE=)",
                hard=hard, max=max_connections,
            )
