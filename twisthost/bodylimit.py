"""Per-service request body limits, enforced while the body arrives.

Twisted reads the whole request body before routing, so a service cannot
refuse an upload itself until it has all been received.  This request class
asks the root, as soon as the headers are in, which service the request is
for (``VirtualHosts.service_for``) and takes two optional attributes of it:

- ``max_body``: a declared Content-Length above it is answered 413 at once,
  before a byte of body is read; a chunked body that grows past it is
  answered 413 when it crosses, and the connection is closed.
- ``body_spool``: bodies up to this size stay in memory, bigger ones go to a
  temporary file (Twisted's fixed threshold is 100,000 bytes).

The 413 goes out through the channel's own refusal (``HostChannel.reject``:
the uniform error page, then a half-close while the rest of the upload is
discarded), so the client reads the 413 instead of a connection reset.
"""

from __future__ import annotations

import io
import tempfile

from twisted.web import server

from .channel import HostChannel


class BodyLimitRequest(server.Request):
    """A ``twisted.web`` request that applies its service's body limits."""

    max_body = None
    _received = 0
    _refused = False

    def gotLength(self, length):
        if length == 0:  # nothing to limit or spool: skip the route lookup
            super().gotLength(length)
            return
        service = self._service()
        self.max_body = getattr(service, "max_body", None)
        spool = getattr(service, "body_spool", None)
        if self.max_body is not None and length is not None and length > self.max_body:
            self.content = io.BytesIO()
            self._refuse()
        elif spool is None:
            super().gotLength(length)
        elif length is None:
            self.content = tempfile.SpooledTemporaryFile(max_size=spool)
        elif length <= spool:
            self.content = io.BytesIO()
        else:
            self.content = tempfile.TemporaryFile()

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self.max_body is not None and self._received > self.max_body:
            self._refuse()
            return
        self.content.write(data)

    def requestReceived(self, command, path, version):
        if not self._refused:  # a refused request was answered already
            super().requestReceived(command, path, version)

    def _service(self):
        channel = self.channel
        # HTTP/1.1 channels know the head before the body; HTTP/2 streams the target as ``path``.
        head = getattr(channel, "head", None)
        target = head.target if head is not None else getattr(channel, "path", None)
        find = getattr(channel.site.resource, "service_for", None)
        if target is None or find is None:
            return None
        if not self.clientproto and head is not None:  # routing treats HTTP/1.0 without Host differently
            self.clientproto = head.version
        return find(self, target)

    def _refuse(self) -> None:
        self._refused = True
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" for a body we refuse
        channel = self.channel
        if not isinstance(channel, HostChannel):
            channel.loseConnection()  # HTTP/2: reset the stream, nothing to answer on
            return
        channel.reject(413, f"The request body is larger than {self.max_body} bytes.")
