"""Strict HTTP/1.1 request heads (RFC 9112), judged before Twisted parses them.

Request smuggling lives in the gaps where a front proxy and this server read
the same bytes as different requests.  Twisted 26.10's ``HTTPChannel``
already refuses most framing conflicts, but it accepts obs-fold lines,
control characters other than NUL/CR/LF in values, ``Transfer-Encoding:
identity``, Transfer-Encoding on HTTP/1.0 and several ``Host`` headers, it
misroutes absolute-form targets, and it never looks at chunk extensions'
syntax or at trailer lines.  So the channel (:mod:`twisthost.channel`)
collects each head with :class:`HeadReader`, which enforces the size limits
while lines arrive (or all at once when the whole head came in one read,
:meth:`HeadReader.read_block`) and then judges the whole head
(:func:`check_head`); only a head that passes becomes a Twisted request, as
a :class:`Head` the channel hands over directly, so Twisted's lenient paths
are never reached.  Chunked bodies go through :class:`StrictChunkedDecoder`.

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
#: Field lines after the request line, each with CRLF before it, all well formed:
#: a token name, a colon, a value without controls but HTAB.
_FIELD_LINES = re.compile(rb"(?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*\Z")
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))
_FRAMING = (b"host", b"content-length", b"transfer-encoding")  # the fields check_head judges
VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")


class BadRequest(Exception):
    """A request to refuse: the ``status`` to answer and a one-line ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Head:
    """A judged request head: what Twisted's request needs, in origin form.

    ``length`` is the body's Content-Length, ``None`` for a chunked body
    (``chunked`` is then true) and 0 when the head declares no body.
    ``host`` is the one Host header's value as sent, None without one.
    """

    __slots__ = ("method", "target", "version", "headers", "length", "chunked", "host")

    def __init__(self, method, target, version, headers, length, chunked, host):
        self.method, self.target, self.version = method, target, version
        self.headers: list[tuple[bytes, bytes]] = headers
        self.length: int | None = length
        self.chunked: bool = chunked
        self.host: bytes | None = host


class HeadReader:
    """One request head, fed line by line, with the size limits enforced as it grows.

    ``limits`` is the ``Site`` config (``max_request_line``,
    ``max_header_size``, ``max_headers``).  :meth:`feed` takes each line the
    ``LineReceiver`` split off at CRLF and returns ``None`` until the blank
    line ends the head, then the judged :class:`Head`.
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

    def read_block(self, block: bytes) -> Head | None:
        """The whole head at once: ``block`` is everything before its blank line.

        The common case (a head that arrived in one read and is within the
        limits) costs a few whole-block checks instead of a call per line.
        ``None`` means "feed it line by line": a head that breaks a limit,
        has a bare CR or LF or starts with empty lines takes the line-wise
        path, which gives the same answer as always; either way the head is
        judged by :func:`check_head`.
        """
        if self.lines:
            return None
        limits = self.limits
        first_end = block.find(b"\r\n")
        first = block if first_end == -1 else block[:first_end]
        crlf = block.count(b"\r\n")
        if (
            not first
            or len(first) > limits.max_request_line
            or len(block) - len(first) > limits.max_header_size
            or crlf > limits.max_headers
            or crlf != block.count(b"\r") or crlf != block.count(b"\n")
        ):
            return None
        lines = block.split(b"\r\n")
        self.lines = lines
        self.header_bytes = len(block) - len(first)
        # One match judges every field line; a head it refuses gets its
        # precise answer from the line-by-line check.
        return check_head(lines, _FIELD_LINES.match(block, len(first)) is not None)

    def feed(self, line: bytes) -> Head | None:
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


def check_head(lines: list[bytes], fields_judged: bool = False) -> Head:
    """Judge a complete head (request line, then field lines); raise BadRequest if it fails.

    ``fields_judged``: the field lines are known to be well formed
    (``_FIELD_LINES``) and only need splitting.  An absolute-form target
    becomes origin-form (Twisted would route ``http://host/x`` as a path).
    """
    method, target, version = request_line(lines[0])
    if fields_judged:
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip(b" \t")))
    else:
        headers = [header_field(line) for line in lines[1:]]
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        name = name.lower()
        if name in _FRAMING:
            fields.setdefault(name, []).append(value)
    chunked = _check_framing(fields, version)
    host = _check_host(fields, version)
    if target == b"*":
        if method != b"OPTIONS":
            raise BadRequest(400, "The target * is only for OPTIONS.")
    elif not target.startswith(b"/"):
        target, authority = _origin_form(target, host)
        if host is None:  # HTTP/1.0 without Host: the target names the host
            headers.append((b"Host", authority))
    lengths = fields.get(b"content-length")
    length = None if chunked else int(lengths[0]) if lengths else 0
    hosts = fields.get(b"host")
    return Head(method, target, version, headers, length, chunked, hosts[0] if hosts else None)


def request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "Malformed request line.")
    method, target, version = parts
    if method not in _METHODS and not _IS_TOKEN.match(method):
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


def _check_framing(fields: dict, version: bytes) -> bool:
    """One unambiguous body length: RFC 9112 6.1 and 6.3, without the lenient options.

    True when the body is chunked.
    """
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
        return True
    return False


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
