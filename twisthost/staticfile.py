"""One file's response: representation, validators, conditions, ranges, body.

:class:`FileResponse` subclasses ``twisted.web.static.File`` to keep its
pull producers (the fallback body path for TLS and HTTP/2), and fixes or
replaces what falls short:

- strong ETag (inode, mtime, size) and RFC 9110 §13.2.2 precondition order:
  If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, If-Range;
- Range requests by :mod:`twisthost.http.ranges` (``File``'s parser accepts
  ``bytes=--5`` and ``1_0``, answers 500 to a suffix longer than the file,
  and sends overlapping ranges as many times as they are asked for);
- content-coding: precompressed sidecars, else cached gzip for text;
- no Content-Encoding guessed from ``.gz`` names (a ``.tar.gz`` download is
  ``application/gzip``, not a gzip-encoded tar);
- bodies: small files in one write, big ones through ``sendfile(2)``.

:func:`render_file` is the entry point, called by :mod:`twisthost.static`
after it has resolved the path safely (nothing here looks at the URL).  The
common request, a whole small file in identity coding, is answered from
:class:`FileFacts` cached per file version: headers formatted and bytes read
once, validated per request by the ``stat`` the path walk already made.
Anything else (ranges, content-coding, big files) gets a ``FileResponse``.
"""

from __future__ import annotations

import fnmatch
import io
import mimetypes
import os
import re
import stat
import time
from dataclasses import dataclass, field

from twisted.web import server, static
# Bound at import: each attribute lookup on the ``twisted.web.http`` module
# object goes through its deprecation proxy (about 3 µs).
from twisted.web.http import datetimeToString, stringToDatetime

from .compression import SIDECAR_SUFFIX, GzipCache, choose_coding, is_compressible
from .http.ranges import if_range_matches, multipart, select, unsatisfied_range
from .pages import write_error
from .request import FastHeaders
from .sendfile import SendfileProducer, can_sendfile

SMALL = 64 * 1024  # bodies up to this size are read and written in one go (and may be cached)

_TYPES = {
    **static.File.contentTypes,
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".webmanifest": "application/manifest+json",
    ".md": "text/markdown",
    ".gz": "application/gzip",
    ".br": "application/x-brotli",
    ".zst": "application/zstd",
    ".tgz": "application/gzip",
}
_ETAG = re.compile(rb'\s*(W/)?("[^"]*")\s*(?:,|$)')


@dataclass
class FileOptions:
    """What a ``Static`` mount decides for every file it serves."""

    types: dict
    cache: tuple  # ((glob, cache-control), ...)
    max_age: int | None
    precompressed: tuple
    gzip: GzipCache | None
    gzip_min_size: int
    sendfile_min_size: int | None
    facts: "FactsCache" = field(default_factory=lambda: FactsCache())

    @classmethod
    def from_config(cls, config) -> "FileOptions":
        return cls(
            types={**_TYPES, **dict(config.types or ())},
            cache=config.cache or (),
            max_age=config.max_age,
            precompressed=config.precompressed,
            gzip=GzipCache() if config.gzip else None,
            gzip_min_size=config.gzip_min_size,
            sendfile_min_size=config.sendfile_min_size,
        )

    def content_type(self, name: str) -> str:
        ext = os.path.splitext(name)[1].lower()
        kind = self.types.get(ext) or mimetypes.types_map.get(ext) or "application/octet-stream"
        if kind.startswith("text/") and "charset" not in kind:
            kind += "; charset=utf-8"
        return kind

    def cache_control(self, relpath: str) -> str | None:
        name = relpath.rpartition("/")[2]
        for pattern, value in self.cache:
            if fnmatch.fnmatchcase(relpath if "/" in pattern else name, pattern):
                return value
        return f"max-age={self.max_age}" if self.max_age is not None else None


def make_etag(st: os.stat_result) -> bytes:
    return b'"%x-%x-%x"' % (st.st_ino, st.st_mtime_ns, st.st_size)


def version(st: os.stat_result) -> tuple:
    """What changes when a file's bytes or access do: a write (mtime, size), a
    replacement (inode), a chmod/chown/rename (ctime)."""
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size


def file_headers(options: FileOptions, content_type: str, relpath: str, coding: str | None,
                 etag: bytes, mtime: int, ranges: bool) -> list[tuple[bytes, bytes]]:
    """A file response's representation headers, in the order they are set.

    Cache-Control is last on purpose: :func:`set_file_headers` skips it when
    the response has one already.
    """
    headers = [
        (b"content-type", content_type.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"etag", etag),
        (b"last-modified", datetimeToString(mtime)),
    ]
    if is_compressible(content_type):
        headers.append((b"vary", b"Accept-Encoding"))
    if coding is not None:
        headers.append((b"content-encoding", coding.encode()))
    if ranges:
        headers.append((b"accept-ranges", b"bytes"))
    cache_control = options.cache_control(relpath)
    if cache_control:
        headers.append((b"cache-control", cache_control.encode()))
    return headers


def set_file_headers(request, headers: list[tuple[bytes, bytes]]) -> None:
    set_header = request.setHeader
    for name, value in headers:
        # An application's own Cache-Control, kept through X-Accel-Redirect, is
        # more specific than the mount's.
        if name == b"cache-control" and request.responseHeaders.hasHeader(name):
            continue
        set_header(name, value)


class FileFacts:
    """One version of one file: its identity-coded headers, and its bytes if small."""

    __slots__ = ("version", "type", "compressible", "etag", "mtime", "size", "headers", "body", "_head_lines")

    def __init__(self, options: FileOptions, path: str, relpath: str, st: os.stat_result):
        self.version = version(st)
        self.type = options.content_type(os.path.basename(path))
        self.compressible = is_compressible(self.type)
        self.etag, self.mtime, self.size = make_etag(st), int(st.st_mtime), st.st_size
        self.headers = file_headers(options, self.type, relpath, None, self.etag, self.mtime, True)
        self.body = None
        self._head_lines = None

    def head_lines(self) -> bytes:
        """The header lines of a 200 with the whole file, Content-Length last, as the
        channel writes them (Twisted's name casing): formatted once per version."""
        if self._head_lines is None:
            headers = FastHeaders()
            for name, value in (*self.headers, (b"content-length", b"%d" % self.size)):
                headers.addRawHeader(name, value)
            self._head_lines = b"".join(
                name + b": " + value + b"\r\n" for name, values in headers.getAllRawHeaders() for value in values)
        return self._head_lines


class FactsCache:
    """:class:`FileFacts` per path, trusted only while the path's stat ``version`` matches.

    Bounded in entries and in cached body bytes; the oldest entry goes first
    (insertion order: no per-hit bookkeeping, which would cost more than it
    saves for the small working sets static sites have).
    """

    MAX_ENTRIES = 4096
    MAX_BODY_BYTES = 16 * 1024 * 1024
    #: Seconds a file must be left alone before its bytes are cached.  File
    #: times tick coarsely (a few ms), so a same-size rewrite right after a
    #: read can keep its version; a file that changed this recently is read
    #: per request instead (git's "racy clean" entries, same cure).
    SETTLE = 2.0

    def __init__(self):
        self.entries: dict[tuple[str, str], FileFacts] = {}
        self.body_bytes = 0

    def get(self, options: FileOptions, path: str, relpath: str, st: os.stat_result) -> FileFacts:
        key = (path, relpath)  # relpath too: Cache-Control rules match the URL's name
        facts = self.entries.get(key)
        if facts is not None and facts.version == version(st):
            return facts
        facts = FileFacts(options, path, relpath, st)
        limit = options.sendfile_min_size
        if st.st_size <= SMALL and (limit is None or st.st_size < limit):
            if time.time() - max(st.st_mtime, st.st_ctime) < self.SETTLE:
                return facts  # not cached yet, body and all: see SETTLE
            facts.body = _read_version(path, facts.version)
        self._put(key, facts)
        return facts

    def _put(self, key: tuple[str, str], facts: FileFacts) -> None:
        old = self.entries.pop(key, None)
        if old is not None and old.body is not None:
            self.body_bytes -= len(old.body)
        while self.entries and (len(self.entries) >= self.MAX_ENTRIES or self.body_bytes > self.MAX_BODY_BYTES):
            evicted = self.entries.pop(next(iter(self.entries)))
            if evicted.body is not None:
                self.body_bytes -= len(evicted.body)
        self.entries[key] = facts
        if facts.body is not None:
            self.body_bytes += len(facts.body)


def _open_version(path: str, expected: tuple):
    """The file opened if it is still the ``expected`` version once open, else None."""
    try:
        file = io.FileIO(path)  # unbuffered: nothing here reads through a buffer, and it opens faster
    except OSError:
        return None  # unreadable: FileResponse answers 403/404
    try:
        if version(os.fstat(file.fileno())) == expected:
            return file
    except OSError:
        pass
    file.close()
    return None


def _read_version(path: str, expected: tuple) -> bytes | None:
    """The file's bytes if it is still the ``expected`` version once open, else None."""
    file = _open_version(path, expected)
    if file is None:
        return None
    with file:
        try:
            return file.read()
        except OSError:
            return None


def render_file(request, path: str, relpath: str, st: os.stat_result | None, options: FileOptions):
    """Answer ``request`` with the file at ``path``; ``st`` is its stat made for this request.

    A whole-file answer of a known version is made from its cached
    :class:`FileFacts`: the bytes of a small file, or ``sendfile`` of a big one
    on plain TCP.  Ranges, content codings, changed files and the rest go
    through :class:`FileResponse`.
    """
    found = None
    if st is not None and stat.S_ISREG(st.st_mode) and request.getHeader(b"range") is None:
        found = whole_file(options, path, relpath, st, bool(request.getHeader(b"accept-encoding")),
                           lambda: can_sendfile(request))
    if found is None:
        return FileResponse(path, relpath, options).render(request)  # also its 403/404
    facts, file = found
    set_file_headers(request, facts.headers)
    status = precondition(request, facts.etag, facts.mtime)
    if file is not None and (status is not None or request.method == b"HEAD"):
        file.close()
        file = None
    if status is not None:
        return answer_precondition(request, status)
    request.setHeader(b"content-length", b"%d" % facts.size)
    if file is not None:
        SendfileProducer(request, file, 0, facts.size).start()
        return server.NOT_DONE_YET
    return b"" if request.method == b"HEAD" else facts.body


def whole_file(options: FileOptions, path: str, relpath: str, st: os.stat_result, codings: bool,
               can_sendfile) -> "tuple[FileFacts, object] | None":
    """``(facts, open file or None)`` when the whole regular file, in identity coding, can
    be sent from its cached facts: its cached bytes, or ``sendfile`` of the opened file
    when ``can_sendfile()`` says the connection allows it.

    None when :class:`FileResponse` must answer: a compressible type the client
    may want coded (``codings``: it sent Accept-Encoding), a small file not
    cached yet, a big one without ``sendfile``, or a file that changed.
    """
    facts = options.facts.get(options, path, relpath, st)
    if facts.compressible and codings:
        return None
    if facts.body is not None:
        return facts, None
    limit = options.sendfile_min_size
    if limit is not None and facts.size >= limit and can_sendfile():
        file = _open_version(path, facts.version)
        if file is not None:
            return facts, file
    return None


def _all(request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    return b",".join(values) if values else None


def _date(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return stringToDatetime(value.strip())
    except (ValueError, IndexError, KeyError):
        return None


def etag_matches(header: bytes, etag: bytes, strong: bool) -> bool:
    """Does an If-Match/If-None-Match list match ``etag`` (weak or strong comparison)?"""
    if header.strip() == b"*":
        return True
    ours_weak = etag.startswith(b"W/")
    ours = etag[2:] if ours_weak else etag
    for match in _ETAG.finditer(header):
        weak, tag = match.group(1), match.group(2)
        if tag == ours and (not strong or not (weak or ours_weak)):
            return True
    return False


def precondition(request, etag: bytes, mtime: int) -> int | None:
    """412 or 304 when the request's preconditions say so, in RFC 9110 order."""
    if_match = _all(request, b"if-match")
    if if_match is not None:
        if not etag_matches(if_match, etag, strong=True):
            return 412
    else:
        since = _date(request.getHeader(b"if-unmodified-since"))
        if since is not None and mtime > since:
            return 412
    if_none_match = _all(request, b"if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, strong=False):
            return 304
    else:
        since = _date(request.getHeader(b"if-modified-since"))
        if since is not None and mtime <= since:
            return 304
    return None


#: Representation metadata a 304 does not repeat (RFC 9110 15.4.5: the cache has it from
#: the 200 it validates; ETag, Last-Modified, Vary and Cache-Control stay to update it).
NOT_REPEATED_ON_304 = (b"content-type", b"content-encoding")


def answer_precondition(request, status: int):
    if status == 304:  # finished here: Request.render would add Content-Length: 0
        request.setResponseCode(304)
        for name in NOT_REPEATED_ON_304:
            request.responseHeaders.removeHeader(name)
        request.finish()
        return server.NOT_DONE_YET
    return write_error(request, 412, "Precondition failed.")


def if_range_allows(request, etag: bytes, mtime: int) -> bool:
    """If-Range: honour Range only for the same representation (RFC 9110 13.1.5)."""
    value = request.getHeader(b"if-range")
    return value is None or if_range_matches(value, etag, mtime)


class FileResponse(static.File):
    """Serve one regular file (already found safe) with its validators and ranges."""

    def __init__(self, path: str, relpath: str, options: FileOptions):
        super().__init__(path)
        self.relpath = relpath
        self.options = options
        self.type = options.content_type(os.path.basename(path))
        self.encoding = None
        self.size = 0

    # -- rendering -------------------------------------------------------------------

    def render_GET(self, request):
        coding, path = self._representation(request)
        try:
            file = open(path, "rb")
        except PermissionError:
            return write_error(request, 403, "Forbidden.")
        except FileNotFoundError:
            return write_error(request, 404, "Not found.")
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode):
            file.close()
            return write_error(request, 404, "Not found.")
        self.size = st.st_size
        etag, mtime = make_etag(st), int(st.st_mtime)
        body = None
        if coding is None and self._gzip_on_the_fly(request):
            body = self.options.gzip.get(path, etag, file.read)
            coding, etag, self.size = "gzip", b"W/" + etag[:-1] + b'-gz"', len(body)
        self._set_headers(request, coding, etag, mtime, ranges=body is None)

        status = precondition(request, etag, mtime)
        if status is not None:
            file.close()
            return answer_precondition(request, status)
        if request.method == b"HEAD" or body is not None:
            file.close()
            request.setHeader(b"content-length", b"%d" % self.size)
            return b"" if request.method == b"HEAD" else body
        return self._send_ranges(request, file, etag, mtime)

    render_HEAD = render_GET

    def _representation(self, request) -> tuple[str | None, str]:
        """(content-coding, path): a precompressed sidecar the client accepts, else the file.

        Only compressible types are looked up: a ``.png.gz`` saves nothing, and
        this keeps ``Vary`` a function of the type alone.
        """
        accept = request.getHeader(b"accept-encoding")
        if not accept or not is_compressible(self.type):
            return None, self.path
        offered = [c for c in self.options.precompressed if self._sidecar_exists(c)]
        coding = choose_coding(accept, offered)
        if coding is None:
            return None, self.path
        return coding, self.path + SIDECAR_SUFFIX[coding]

    def _sidecar_exists(self, coding: str) -> bool:
        try:
            st = os.lstat(self.path + SIDECAR_SUFFIX[coding])  # a symlinked sidecar is ignored
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)

    def _gzip_on_the_fly(self, request) -> bool:
        options = self.options
        return (
            options.gzip is not None
            and is_compressible(self.type)
            and options.gzip_min_size <= self.size <= options.gzip.MAX_FILE
            and request.getHeader(b"range") is None
            and choose_coding(request.getHeader(b"accept-encoding"), ("gzip",)) == "gzip"
        )

    def _set_headers(self, request, coding, etag: bytes, mtime: int, ranges: bool) -> None:
        set_file_headers(request, file_headers(self.options, self.type, self.relpath, coding,
                                               etag, mtime, ranges))

    def _send_ranges(self, request, file, etag: bytes, mtime: int):
        """200, 206 (one range or multipart/byteranges) or 416, with the body.

        A GET only: HEAD has returned before, since Range is defined for GET
        alone (RFC 9110 14.2); what the header selects is
        :func:`twisthost.http.ranges.select`'s decision.
        """
        header = request.getHeader(b"range")
        spans = None
        if header is not None and if_range_allows(request, etag, mtime):
            spans = select(header, self.size)
        if spans is None:
            return self._send(request, file, 0, self.size)
        if not spans:
            file.close()
            request.setHeader(b"content-range", unsatisfied_range(self.size))
            return write_error(request, 416, "Range not satisfiable.")
        request.setResponseCode(206)
        if len(spans) == 1:
            request.setHeader(b"content-range", spans[0].content_range(self.size))
            return self._send(request, file, *spans[0])
        body = multipart(spans, self.size, self.type.encode())
        request.setHeader(b"content-type", body.content_type)
        request.setHeader(b"content-length", b"%d" % body.length)
        parts = [(head, span.offset, span.length) for head, span in body.parts]
        static.MultipleRangeStaticProducer(request, file, [*parts, (body.end, 0, 0)]).start()
        return server.NOT_DONE_YET

    def _send(self, request, file, offset: int, count: int):
        request.setHeader(b"content-length", b"%d" % count)
        threshold = self.options.sendfile_min_size
        if threshold is not None and count >= threshold and can_sendfile(request):
            SendfileProducer(request, file, offset, count).start()
            return server.NOT_DONE_YET
        if count <= SMALL:
            with file:
                file.seek(offset)
                return file.read(count)
        static.SingleRangeStaticProducer(request, file, offset, count).start()
        return server.NOT_DONE_YET
