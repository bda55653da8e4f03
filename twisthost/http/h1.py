"""The HTTP/1.1 request reader, sans-IO: bytes in, events out (RFC 9112).

Request smuggling lives in the gaps where a front proxy and this server read
the same bytes as different requests, so every rule here is the strict
reading of RFC 9112, and anything else is a :class:`~.wire.BadRequest`
naming the status to answer; after one the byte stream can no longer be
trusted to be in sync, and the connection is closed.

:class:`RequestReader` knows nothing of sockets, timers or Twisted: the
connection :meth:`~RequestReader.feed`\\ s it what arrived and takes
:meth:`~RequestReader.next_event` until :data:`NEED_DATA`.  Its states are
data and its moves are one table (:data:`TRANSITIONS`), in the manner of
h11's ``_state.py``; a move the table does not have is a bug, not input.

Every number that frames a message is sized *before* waiting for the bytes
it announces: a Content-Length or chunk size beyond the body limit is 413 at
once, and one beyond what a 64-bit length can hold is 400 at once; a head
that outgrows its limits is 414/431 as soon as the excess arrives, and a bare
CR or LF is 400 as soon as it is seen.
"""

from __future__ import annotations

import re

from .wire import FIELD_LINES, IS_TOKEN, TOKEN, QUOTED, BadRequest, field_line, host_name

__all__ = ["BadRequest", "BodyReader", "Data", "EndOfMessage", "Head", "NEED_DATA", "PAUSED",
           "RequestReader", "TRANSITIONS"]

# -- states (RequestReader.state)

IDLE = "idle"  # between requests: nothing of the next one yet (RFC 9112 2.2: empty lines skipped)
HEAD = "head"  # a request line has begun; reading until the blank line
BODY = "body"  # a Content-Length body (RFC 9112 6.2)
CHUNK_SIZE = "chunk-size"  # a chunk-size line (RFC 9112 7.1)
CHUNK_DATA = "chunk-data"
CHUNK_END = "chunk-end"  # the CRLF after a chunk's data
TRAILER = "trailer"  # trailer fields after the last chunk (RFC 9112 7.1.2)
DONE = "done"  # one message read; the next waits for next_request() (pipelining)
TUNNEL = "tunnel"  # the connection left HTTP (an accepted Upgrade): bytes belong to the tunnel
ERROR = "error"  # refused: nothing more is read

#: (state, what happened) -> next state: every move the reader makes.
TRANSITIONS: dict[tuple[str, str], str] = {
    (IDLE, "request-line-begins"): HEAD,
    (HEAD, "head-without-body"): DONE,
    (HEAD, "head-with-length"): BODY,
    (HEAD, "head-chunked"): CHUNK_SIZE,
    (BODY, "body-complete"): DONE,
    (CHUNK_SIZE, "chunk"): CHUNK_DATA,
    (CHUNK_SIZE, "last-chunk"): TRAILER,
    (CHUNK_DATA, "chunk-data-complete"): CHUNK_END,
    (CHUNK_END, "chunk-crlf"): CHUNK_SIZE,
    (TRAILER, "trailer-complete"): DONE,
    (DONE, "next-request"): IDLE,
    (DONE, "upgrade"): TUNNEL,
}
#: States in which bytes of a request body are being read.
BODY_STATES = frozenset((BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER))

#: Sentinels :meth:`RequestReader.next_event` returns when it has no event.
NEED_DATA = "NEED_DATA"  # more bytes are needed
PAUSED = "PAUSED"  # a message is complete: call next_request() (or upgrade()) to go on

#: Larger lengths than a signed 64-bit integer are not represented: 400, not 413.
MAX_LENGTH = 2**63 - 1
_MAX_LENGTH_DIGITS = len(str(MAX_LENGTH))
_MAX_CHUNK_HEX = 16  # hex digits of a 64-bit size
#: A chunk-size line (size and extensions) longer than this is refused (Twisted's bound too).
MAX_CHUNK_LINE = 1024

_TARGET = re.compile(rb"[\x21-\x7e]+\Z")  # visible ASCII: no spaces, no controls (RFC 9112 3.2)
_DIGITS = re.compile(rb"[0-9]+\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]*")
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#]*)(.*)\Z")
_CHUNK_LINE = re.compile(  # RFC 9112 7.1.1: chunk-size [ chunk-ext ]
    rb"[0-9A-Fa-f]+(?:[ \t]*;[ \t]*" + TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:" + TOKEN + rb"|" + QUOTED + rb"))?)*\Z"
)
_METHODS = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))
VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")
#: Fields that frame the message or name its host: judged here, not by the services.
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding"))
#: RFC 9110 5.3: a field not defined as a list must not be sent twice.  These are the
#: request fields whose repetition changes meaning; a second one is 400, not a join.
SINGLETONS = frozenset((
    b"authorization", b"content-location", b"content-range", b"content-type", b"date",
    b"from", b"if-modified-since", b"if-range", b"if-unmodified-since", b"max-forwards",
    b"proxy-authorization", b"range", b"referer", b"user-agent",
))
_JUDGED = _FRAMING | SINGLETONS


class Head:
    """A judged request head, in origin form.

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

    def __repr__(self):
        return f"<Head {self.method!r} {self.target!r} {self.version!r}>"


class Data:
    """A piece of a request body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class EndOfMessage:
    """The body is complete; ``trailers`` are the trailer fields of a chunked body."""

    __slots__ = ("trailers",)

    def __init__(self, trailers=()):
        self.trailers: list[tuple[bytes, bytes]] = list(trailers)


_END = EndOfMessage()
_NOTHING_JUDGED = (0, 0, 0)


class RequestReader:
    """Requests on one connection, read from the bytes fed in.

    ``limits`` has ``max_request_line``, ``max_header_size`` and
    ``max_headers`` (the ``Site`` config); it is read at each new head, so a
    reload applies from the next request on.  The body limit of a request
    is known only once it is routed: :meth:`limit_body` sets it.
    """

    def __init__(self, limits):
        self.limits = limits
        self.state = IDLE
        self._buffer = b""
        self._remaining = 0  # bytes left of a Content-Length body or of a chunk
        self._received = 0  # body bytes of this request so far
        self._body_limit: int | None = None
        self._trailers: list | None = None
        self._trailer_bytes = 0  # bytes of this message's trailer lines so far, CRLFs included
        self._end_pending = False  # the message is read; its EndOfMessage is not yet returned
        self._scan = _NOTHING_JUDGED  # an unfinished head: (offset, header bytes, lines) judged so far
        #: The request line of the head being read, once it is complete and within its limit:
        #: what a refused request's access-log line can show.
        self.request_line: bytes | None = None
        #: The one well-formed Host value of a head refused for another reason, if it had one.
        self.request_host: bytes | None = None

    # -- the table

    def _move(self, event: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise RuntimeError(f"no move {event!r} from state {self.state!r}") from None

    def _refuse(self, status: int, detail: str):
        self.state = ERROR
        self._buffer = b""
        return BadRequest(status, detail)

    # -- what the connection calls

    def feed(self, data: bytes) -> None:
        """Add bytes that arrived; read them with :meth:`next_event`."""
        if self.state != ERROR:
            self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read into events (pipelined requests, when PAUSED)."""
        return len(self._buffer)

    @property
    def head_started(self) -> bool:
        """Has any byte of the next head arrived (the header timeout's clock is running)?"""
        return self.state == HEAD or (self.state == IDLE and bool(self._buffer.lstrip(b"\r\n")))

    def next_event(self):
        """The next :class:`Head`, :class:`Data` or :class:`EndOfMessage`, or NEED_DATA / PAUSED.

        Raises :class:`BadRequest` for input to refuse; the reader is then in
        the ``error`` state and ignores what follows.
        """
        if self._end_pending:
            return self._end()
        state = self.state
        if state is IDLE or state is HEAD:
            return self._read_head()
        if state == BODY:
            return self._read_body()
        if state in (CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER):
            return self._read_chunked()
        if state in (DONE, TUNNEL):
            return PAUSED
        raise RuntimeError("the reader refused its input; nothing more is read")

    def next_request(self) -> None:
        """The answer to the last request is complete: read the next one (pipelined or not)."""
        if self.state is not DONE:
            self._move("next-request")  # raises: the table has this move from DONE only
        self.state = TRANSITIONS[DONE, "next-request"]
        self._received, self._body_limit = 0, None
        self.request_line = self.request_host = None

    def upgrade(self) -> bytes:
        """The connection leaves HTTP (RFC 9110 7.8): return what the client sent past the request."""
        self._move("upgrade")
        rest, self._buffer = self._buffer, b""
        return rest

    def limit_body(self, limit: int | None) -> None:
        """The routed service takes at most ``limit`` body bytes: 413 at once if declared more."""
        self._body_limit = limit
        if limit is not None and self.state == BODY and self._remaining > limit:
            raise self._refuse(413, f"The request body is larger than {limit} bytes.")

    # -- heads

    def _read_head(self):
        buffer = self._buffer
        if self.state is IDLE:
            if buffer[:2] == b"\r\n":  # RFC 9112 2.2: empty lines before a request are skipped
                start = 2
                while buffer.startswith(b"\r\n", start):
                    start += 2
                self._buffer = buffer = buffer[start:]
            if not buffer or buffer == b"\r":
                return NEED_DATA
            self.state = TRANSITIONS[IDLE, "request-line-begins"]
            self._scan = _NOTHING_JUDGED
            end = buffer.find(b"\r\n\r\n")
        else:  # the blank line can only follow the CRLF of the last line judged (_check_partial)
            end = buffer.find(b"\r\n\r\n", max(self._scan[0] - 2, 0))
        if end == -1:
            self._check_partial(buffer)
            return NEED_DATA
        block, self._buffer = buffer[:end], buffer[end + 4:]
        head = self._judge_block(block)
        if head.chunked:
            self._move("head-chunked")
        elif head.length:
            self._remaining = head.length
            self._move("head-with-length")
        else:
            self.state = TRANSITIONS[HEAD, "head-without-body"]
            self._end_pending = True
        return head

    def _judge_block(self, block: bytes) -> Head:
        """A whole head (``block`` is everything before its blank line), with its limits."""
        limits = self.limits
        first_end = block.find(b"\r\n")
        first = block if first_end == -1 else block[:first_end]
        crlf = block.count(b"\r\n")
        if (
            len(first) > limits.max_request_line
            or len(block) - len(first) > limits.max_header_size
            or crlf > limits.max_headers
            or crlf != block.count(b"\r") or crlf != block.count(b"\n")
        ):
            self._walk_lines(block.split(b"\r\n"))
            raise self._refuse(400, "Malformed request head.")  # _walk_lines has raised already
        lines = block.split(b"\r\n")
        self.request_line = first
        # One match judges every field line; a head it refuses gets its precise
        # answer from the check of each line.
        try:
            return judge_head(lines, FIELD_LINES.match(block, len(first)) is not None)
        except BadRequest as error:
            self.request_host = _one_host(lines[1:])
            raise self._refuse(error.status, error.detail) from None

    def _check_partial(self, buffer: bytes) -> None:
        """Refuse an unfinished head now if it already breaks a rule, rather than at its timeout.

        Only the bytes that arrived since the last call are looked at (the
        complete lines judged so far are remembered in ``_scan``), so a head
        trickled in byte by byte costs linear time, not quadratic.
        """
        offset, header_bytes, number = self._scan
        while True:
            end = buffer.find(b"\r\n", offset)
            if end == -1:
                break
            header_bytes = self._judge_line(buffer[offset:end], number, header_bytes)
            number, offset = number + 1, end + 2
        self._scan = (offset, header_bytes, number)
        tail = buffer[offset:]
        if tail.endswith(b"\r"):  # maybe the first half of a CRLF
            tail = tail[:-1]
        if b"\r" in tail or b"\n" in tail:
            raise self._refuse(400, "Lines must end with CRLF.")
        if tail:  # the line it begins counts as soon as it is sure to exceed a limit
            self._judge_line(tail, number, header_bytes)

    def _walk_lines(self, lines: list[bytes]) -> None:
        """The line-by-line judgement of the limits and line ends, in the order the lines came."""
        header_bytes = 0
        for number, line in enumerate(lines):
            header_bytes = self._judge_line(line, number, header_bytes)

    def _judge_line(self, line: bytes, number: int, header_bytes: int) -> int:
        """Line ``number`` of a head (0: the request line): its end, then the limits it reaches.

        Returns the header bytes counted with it (CRLFs included).
        """
        limits = self.limits
        if b"\r" in line or b"\n" in line:
            raise self._refuse(400, "Lines must end with CRLF.")
        if number == 0:
            if len(line) > limits.max_request_line:
                raise self._refuse(414, "The request line is too long.")
            self.request_line = line
            return 0
        header_bytes += len(line) + 2
        if header_bytes > limits.max_header_size:
            raise self._refuse(431, "The request header fields are too large.")
        if number > limits.max_headers:
            raise self._refuse(431, "Too many request header fields.")
        return header_bytes

    # -- bodies

    def _take(self, complete: str):
        """Up to ``_remaining`` buffered bytes as Data, making the move ``complete`` once none remain."""
        buffer = self._buffer
        if not buffer:
            return NEED_DATA
        remaining = self._remaining
        if len(buffer) <= remaining:
            data, self._buffer = buffer, b""
        else:
            data, self._buffer = buffer[:remaining], buffer[remaining:]
        self._remaining = remaining - len(data)
        if self._remaining == 0:
            self._move(complete)
        return Data(data)

    def _read_body(self):
        event = self._take("body-complete")
        if self.state == DONE:
            self._end_pending = True  # the data first, the end on the next call
        return event

    def _read_chunked(self):
        while True:
            state = self.state
            if state == CHUNK_SIZE:
                if not self._read_chunk_size():
                    return NEED_DATA
            elif state == CHUNK_DATA:
                return self._take("chunk-data-complete")
            elif state == CHUNK_END:
                buffer = self._buffer
                if len(buffer) < 2:
                    if buffer and buffer != b"\r":
                        raise self._refuse(400, "A chunk must end with CRLF.")
                    return NEED_DATA
                if not buffer.startswith(b"\r\n"):
                    raise self._refuse(400, "A chunk must end with CRLF.")
                self._buffer = buffer[2:]
                self._move("chunk-crlf")
            else:  # TRAILER
                if not self._read_trailer():
                    return NEED_DATA
                self._move("trailer-complete")
                return self._end()

    def _end(self) -> EndOfMessage:
        self._end_pending = False
        trailers, self._trailers = self._trailers, None
        return EndOfMessage(trailers) if trailers else _END

    def _read_chunk_size(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        line = buffer if end == -1 else buffer[:end]
        digits = _HEX.match(line).end()
        # Judge the size as soon as its digits are in, before its line or data arrive.
        # Leading zeros are still 1*HEXDIG (RFC 9112 7.1): only the others count.
        if len(line[:digits].lstrip(b"0")) > _MAX_CHUNK_HEX:
            raise self._refuse(400, "A chunk size beyond 64 bits.")
        if digits:
            self._check_body_size(int(line[:digits], 16))
        if end == -1:
            # A CR at the end may be the first half of the line's own CRLF.
            if len(buffer) - buffer.endswith(b"\r") > MAX_CHUNK_LINE:
                raise self._refuse(400, "The chunk size line is too long.")
            if b"\n" in buffer or b"\r" in buffer[:-1]:
                raise self._refuse(400, "Malformed chunk size line.")
            return False
        if end > MAX_CHUNK_LINE:
            raise self._refuse(400, "The chunk size line is too long.")
        if not _CHUNK_LINE.match(line):
            raise self._refuse(400, "Malformed chunk size line.")
        self._buffer = buffer[end + 2:]
        size = int(line[:digits], 16)
        if size == 0:
            self._trailers, self._trailer_bytes = [], 0
            self._move("last-chunk")
        else:
            self._remaining = size
            self._received += size
            self._move("chunk")
        return True

    def _check_body_size(self, size: int) -> None:
        limit = self._body_limit
        if limit is not None and self._received + size > limit:
            raise self._refuse(413, f"The request body is larger than {limit} bytes.")

    def _read_trailer(self) -> bool:
        """Trailer field lines until the blank line (RFC 9112 7.1.2), within the head limits.

        The lines are counted as a head's are, as sent (CRLFs included), so
        the answer does not depend on where the bytes were cut.
        """
        limits = self.limits
        while True:
            buffer = self._buffer
            end = buffer.find(b"\r\n")
            if end == -1:
                tail = buffer[:-1] if buffer.endswith(b"\r") else buffer
                if b"\r" in tail or b"\n" in tail:
                    raise self._refuse(400, "Lines must end with CRLF.")
                if tail and self._trailer_bytes + len(tail) + 2 > limits.max_header_size:
                    raise self._refuse(431, "The trailer fields are too large.")
                return False
            line, self._buffer = buffer[:end], buffer[end + 2:]
            if not line:
                return True
            if b"\r" in line or b"\n" in line:
                raise self._refuse(400, "Lines must end with CRLF.")
            self._trailer_bytes += end + 2
            if self._trailer_bytes > limits.max_header_size:
                raise self._refuse(431, "The trailer fields are too large.")
            try:
                field = field_line(line)
            except BadRequest as error:
                raise self._refuse(error.status, error.detail) from None
            trailers = self._trailers
            trailers.append(field)
            if len(trailers) > limits.max_headers:
                raise self._refuse(431, "The trailer fields are too large.")


class BodyReader(RequestReader):
    """One message body alone, framed by Content-Length or chunked coding (RFC 9112 6.3, 7.1).

    An upstream's response body is read with the same rules (and the same
    early refusals) as a request's: a :class:`RequestReader` started in its
    body state, ending in ``done`` with :meth:`rest` holding what followed.
    """

    def __init__(self, limits, length: int | None = None, chunked: bool = False):
        super().__init__(limits)
        if chunked:
            self.state = CHUNK_SIZE
        elif length:
            self.state, self._remaining = BODY, length
        else:
            self.state, self._end_pending = DONE, True

    def rest(self) -> bytes:
        """The bytes after the body (an out-of-step upstream, once the body is done)."""
        return self._buffer


def _one_host(field_lines: list[bytes]) -> bytes | None:
    """The value of the only Host field among ``field_lines`` when it is valid, else None."""
    values = [line.partition(b":")[2].strip(b" \t") for line in field_lines
              if line[:5].lower() == b"host:"]
    return values[0] if len(values) == 1 and host_name(values[0]) is not None else None


def judge_head(lines: list[bytes], fields_judged: bool = False) -> Head:
    """Judge a complete head (request line, then field lines); raise BadRequest if it fails.

    ``fields_judged``: the field lines are known to be well formed
    (``FIELD_LINES``) and only need splitting.  An absolute-form target
    becomes origin-form (RFC 9112 3.2.2).
    """
    method, target, version = request_line(lines[0])
    if fields_judged:
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip(b" \t")))
    else:
        headers = [field_line(line) for line in lines[1:]]
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        name = name.lower()
        if name in _JUDGED:
            values = fields.get(name)
            if values is None:
                fields[name] = [value]
            elif name in SINGLETONS:
                raise BadRequest(400, f"More than one {name.decode('ascii').title()} header.")
            else:
                values.append(value)
    chunked = _check_framing(fields, version)
    host = _check_host(fields, version)
    if target == b"*":
        if method != b"OPTIONS":  # RFC 9112 3.2.4
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
    """``method SP request-target SP HTTP-version`` (RFC 9112 3), single spaces only."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "Malformed request line.")
    method, target, version = parts
    if method not in _METHODS and not IS_TOKEN.match(method):
        raise BadRequest(400, "Malformed request method.")
    if not _TARGET.match(target):
        raise BadRequest(400, "Malformed request target.")
    if b"#" in target:  # RFC 9112 3.2: a request-target carries no fragment
        raise BadRequest(400, "A fragment (#) in the request target.")
    if version not in VERSIONS:
        raise BadRequest(400, "Only HTTP/1.0 and HTTP/1.1 are supported.")
    return method, target, version


def _check_framing(fields: dict, version: bytes) -> bool:
    """One unambiguous body length: RFC 9112 6.1 and 6.3, without the lenient options.

    True when the body is chunked.
    """
    lengths = fields.get(b"content-length", ())
    codings = fields.get(b"transfer-encoding", ())
    if len(lengths) > 1:
        raise BadRequest(400, "More than one Content-Length.")
    if lengths:
        if not _DIGITS.match(lengths[0]):
            raise BadRequest(400, "Content-Length must be a decimal number.")
        if len(lengths[0].lstrip(b"0")) > _MAX_LENGTH_DIGITS or int(lengths[0]) > MAX_LENGTH:
            raise BadRequest(400, "Content-Length beyond 63 bits.")
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
    """RFC 9112 3.2: exactly one Host on HTTP/1.1, in RFC 3986 host syntax."""
    hosts = fields.get(b"host", ())
    if len(hosts) > 1:
        raise BadRequest(400, "More than one Host header.")
    if not hosts:
        if version == b"HTTP/1.1":
            raise BadRequest(400, "HTTP/1.1 requests need a Host header.")
        return None
    name = host_name(hosts[0])
    if name is None:
        raise BadRequest(400, "Malformed Host header.")
    return name


def _origin_form(target: bytes, host: str | None) -> tuple[bytes, bytes]:
    """``http://authority/path?q`` -> (``/path?q``, ``authority``), agreeing with Host (RFC 9112 3.2.2)."""
    match = _ABSOLUTE.match(target)
    if match is None:
        raise BadRequest(400, "The request target must be a path, an http(s) URL, or * for OPTIONS.")
    authority, rest = match.groups()
    if rest[:1] not in (b"", b"/", b"?") or b"@" in authority:
        raise BadRequest(400, "Malformed request target.")
    name = host_name(authority)
    if name is None or (host is not None and name != host):
        raise BadRequest(400, "The request target's host disagrees with the Host header.")
    return (rest if rest.startswith(b"/") else b"/" + rest), authority
