"""Strict HTTP/1.1 request heads (RFC 9112), judged before Twisted parses them.

Request smuggling lives in the gaps where a front proxy and this server read
the same bytes as different requests.  Twisted 26.10's ``HTTPChannel``
already refuses most framing conflicts, but it accepts obs-fold lines,
control characters other than NUL/CR/LF in values, ``Transfer-Encoding:
identity``, Transfer-Encoding on HTTP/1.0 and several ``Host`` headers, it
misroutes absolute-form targets, and it never looks at chunk extensions'
syntax or at trailer lines.  Rather than fork its parser, the channel
(:mod:`twisthost.channel`) collects each head with :class:`HeadReader`,
which enforces the size limits while lines arrive and then checks the whole
head at once; only a head that passes is replayed into Twisted, so Twisted's
lenient paths are never reached.  Chunked bodies go through
:class:`StrictChunkedDecoder`.

Every rejection is a :class:`BadRequest` naming the status to answer; the
channel then closes the connection, because after a malformed head the byte
stream can no longer be trusted to be in sync.
"""

from __future__ import annotations

import re

from twisted.web import http

from .vhost import host_from_header

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_IS_TOKEN = re.compile(_TOKEN + rb"\Z")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB (RFC 9110 5.5)
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")  # visible ASCII: no spaces, no controls
_DIGITS = re.compile(rb"[0-9]+\Z")
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#]*)(.*)\Z")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"[0-9A-Fa-f]+(?:[ \t]*;[ \t]*" + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*\Z"
)
VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")


class BadRequest(Exception):
    """A request to refuse: the ``status`` to answer and a one-line ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class HeadReader:
    """One request head, fed line by line, with the size limits enforced as it grows.

    ``limits`` is the ``Site`` config (``max_request_line``,
    ``max_header_size``, ``max_headers``).  :meth:`feed` takes each line the
    ``LineReceiver`` split off at CRLF and returns ``None`` until the blank
    line ends the head, then the head's lines as Twisted should see them.
    """

    def __init__(self, limits):
        self.limits = limits
        self.lines: list[bytes] = []
        self.header_bytes = 0

    @property
    def started(self) -> bool:
        return bool(self.lines)

    def max_line(self) -> int:
        """The longest next line that can still fit the limits (``MAX_LENGTH``)."""
        if not self.lines:
            return self.limits.max_request_line
        return max(self.limits.max_header_size - self.header_bytes, 0)

    def too_long(self) -> BadRequest:
        """The answer to a line longer than :meth:`max_line`."""
        if not self.lines:
            return BadRequest(414, "The request line is too long.")
        return BadRequest(431, "The request header fields are too large.")

    def feed(self, line: bytes) -> list[bytes] | None:
        if b"\r" in line or b"\n" in line:
            raise BadRequest(400, "Lines must end with CRLF.")
        if not self.lines:
            if line:  # RFC 9112 2.2: empty lines before a request line are ignored
                if len(line) > self.limits.max_request_line:
                    raise self.too_long()
                self.lines.append(line)
            return None
        if not line:
            return check_head(self.lines)
        self.header_bytes += len(line) + 2
        if self.header_bytes > self.limits.max_header_size:
            raise self.too_long()
        if len(self.lines) > self.limits.max_headers:
            raise BadRequest(431, "Too many request header fields.")
        self.lines.append(line)
        return None


def check_head(lines: list[bytes]) -> list[bytes]:
    """Judge a complete head; return it as Twisted should parse it, or raise BadRequest.

    The result differs from ``lines`` only for an absolute-form target, which
    becomes origin-form (Twisted would route ``http://host/x`` as a path).
    """
    method, target, version = request_line(lines[0])
    fields: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, value = header_field(line)
        fields.setdefault(name.lower(), []).append(value)
    _check_framing(fields, version)
    host = _check_host(fields, version)
    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequest(400, "The target * is only for OPTIONS.")
    elif not target.startswith(b"/"):
        path, authority = _origin_form(target, host)
        lines = [b" ".join((method, path, version))] + lines[1:]
        if host is None:  # HTTP/1.0 without Host: the target names the host
            lines.append(b"Host: " + authority)
    return lines


def request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "Malformed request line.")
    method, target, version = parts
    if not _IS_TOKEN.match(method):
        raise BadRequest(400, "Malformed request method.")
    if not _TARGET.match(target):
        raise BadRequest(400, "Malformed request target.")
    if version not in VERSIONS:
        raise BadRequest(400, "Only HTTP/1.0 and HTTP/1.1 are supported.")
    return method, target, version


def header_field(line: bytes) -> tuple[bytes, bytes]:
    """``name: value`` with a token name and no control characters in the value."""
    if line[:1] in (b" ", b"\t"):
        raise BadRequest(400, "Folded header lines are not accepted.")
    name, colon, value = line.partition(b":")
    if not colon or not _IS_TOKEN.match(name):
        raise BadRequest(400, "Malformed header field name.")
    value = value.strip(b" \t")
    if _CONTROL.search(value):
        raise BadRequest(400, "Control characters in a header field value.")
    return name, value


def _check_framing(fields: dict, version: bytes) -> None:
    """One unambiguous body length: RFC 9112 6.1 and 6.3, without the lenient options."""
    lengths = fields.get(b"content-length", ())
    codings = fields.get(b"transfer-encoding", ())
    if len(lengths) > 1:
        raise BadRequest(400, "More than one Content-Length.")
    if lengths and not _DIGITS.match(lengths[0]):
        raise BadRequest(400, "Content-Length must be a decimal number.")
    if codings:
        if version != b"HTTP/1.1":
            raise BadRequest(400, "Transfer-Encoding needs HTTP/1.1.")
        if lengths:
            raise BadRequest(400, "Content-Length and Transfer-Encoding together.")
        if len(codings) > 1 or codings[0].lower() != b"chunked":
            raise BadRequest(400, "Only 'Transfer-Encoding: chunked' is accepted.")


def _check_host(fields: dict, version: bytes) -> str | None:
    hosts = fields.get(b"host", ())
    if len(hosts) > 1:
        raise BadRequest(400, "More than one Host header.")
    if not hosts:
        if version == b"HTTP/1.1":
            raise BadRequest(400, "HTTP/1.1 requests need a Host header.")
        return None
    name = host_from_header(hosts[0])
    if name is None:
        raise BadRequest(400, "Malformed Host header.")
    return name


def _origin_form(target: bytes, host: str | None) -> tuple[bytes, bytes]:
    """``http://authority/path?q`` -> (``/path?q``, ``authority``), agreeing with Host."""
    match = _ABSOLUTE.match(target)
    if match is None:
        raise BadRequest(400, "The request target must be a path, an http(s) URL, or * for OPTIONS.")
    authority, rest = match.groups()
    if rest[:1] not in (b"", b"/", b"?") or b"@" in authority:
        raise BadRequest(400, "Malformed request target.")
    name = host_from_header(authority)
    if name is None or (host is not None and name != host):
        raise BadRequest(400, "The request target's host disagrees with the Host header.")
    return (rest if rest.startswith(b"/") else b"/" + rest), authority


class StrictChunkedDecoder(http._ChunkedTransferDecoder):
    """Twisted's chunked decoder, also checking extension syntax and trailer fields.

    Twisted refuses bad chunk sizes and stray bytes in extensions, but takes
    any extension text and drops trailer lines unread; a bare LF hidden in a
    trailer is what a lenient front proxy may read as the end of the message.
    Each check runs on a complete line, just before Twisted's own state
    handler consumes it.
    """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        end = self._buffer.find(b"\r\n", self._start)
        if 0 <= end < http.maxChunkSizeLineLength and not _CHUNK_LINE.match(self._buffer[:end]):
            raise http._MalformedChunkedDataError("Malformed chunk size line.")
        return super()._dataReceived_CHUNK_LENGTH()

    def _dataReceived_TRAILER(self) -> bool:
        end = self._buffer.find(b"\r\n", self._start)
        if end > 0:
            try:
                header_field(bytes(self._buffer[:end]))
            except BadRequest as error:
                raise http._MalformedChunkedDataError(error.detail) from None
        return super()._dataReceived_TRAILER()
