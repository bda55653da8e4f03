"""What happens when a request finishes: its access-log line and its metrics.

Replaces Twisted's per-request legacy log call (``HTTPFactory.log``).  The
router leaves ``request.notes`` (host, route, start time, request id, the
host's access log); requests that never reached a host (400, unknown host)
go to the site's log.  Requests the connection refused (400, 408, 413, 414,
431, ...) are logged too, as nginx logs them, with what is known of them,
and counted by their host when their Host header named one.
"""

from __future__ import annotations

import time

from .forwarded import resolve_client
from .logs import access_log_for, request_id


class RequestObserver:
    """Per built config: the site's access log and the trusted-proxy policy."""

    def __init__(self, context, metrics):
        self.trusted = context.site.trusted_proxies
        self.site_log = access_log_for(context.site, context.site, context)
        self.metrics = metrics

    def refused(self, request) -> None:
        """A request the connection answered itself: routed by its Host (when known) for the log."""
        self.metrics.refused.labels(str(request.code)).inc()
        table_for = getattr(request.site.resource, "table_for", None)
        table = table_for(request)[0] if table_for is not None and request.clientproto else None
        notes = getattr(table, "notes", None)
        if notes is not None:
            request.notes = notes("-", request_id(request))
        self.finished(request)

    def finished(self, request) -> None:
        notes = getattr(request, "notes", None)
        logger = notes.logger if notes is not None else self.site_log
        if logger is not None:  # the log line's dict (and the client's address) only for a log
            logger.write(request, resolve_client(request, self.trusted).addr)
        if notes is None:
            self.metrics.finished("-", "-", request.code, 0.0, request.sentLength)
        else:
            self.metrics.finished(notes.host or "-", notes.route or "-", request.code,
                                  time.monotonic() - notes.started, request.sentLength, notes.extra)
