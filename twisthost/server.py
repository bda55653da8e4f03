"""The HTTP factory every listener shares.

A thin ``twisted.web.server.Site`` subclass: tracebacks are never shown to
clients, form bodies are not parsed into memory (WSGI apps read the raw body
themselves), and the root resource can be swapped on reload while requests
already routed finish on the old tree.
"""

from __future__ import annotations

from twisted.web import server


class HostSite(server.Site):
    """The ``HTTPFactory`` for all listeners of one twisthost process."""

    displayTracebacks = False

    def __init__(self, root, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(root, **kwargs)

    def swap_root(self, root) -> None:
        """Serve new requests from ``root``; routed requests keep the old one."""
        self.resource = root
