"""Range requests (RFC 9110 section 14): which bytes of a representation to send, and how.

Pure logic, no Twisted import: :mod:`twisthost.staticfile` asks
:func:`select` what a ``Range`` header means for a file of a given size,
:func:`if_range_matches` whether ``If-Range`` lets it be honoured, and
:func:`multipart` for the framing of a ``multipart/byteranges`` body, then
writes the bytes itself.

The rules, strict where the grammar is clear and bounded where a client could
make the answer cost more than the file:

- only the ``bytes`` unit (case-insensitive, 14.1); any other unit, and any
  range-spec that breaks the grammar of 14.1.1 or 14.1.2 (``5-3``, ``--5``,
  ``1_0``, ``+1``, a blank inside a range, no range at all) makes the whole
  header ignored, so the client gets a 200 with the whole representation
  (14.2).  Optional whitespace is allowed around list commas (the ``#`` rule,
  5.6.1) and around the ``=``, which the ABNF does not allow but this
  server has always accepted (``bytes = 2-3``);
- more than :data:`MAX_RANGES` range-specs: ignored as well (200).  This is
  the bound 14.2 and 17.15 invite against many-range requests;
- overlapping ranges are coalesced into one part (15.3.7.2): the parts of a
  response are disjoint, so its body is never longer than the file plus at
  most :data:`MAX_RANGES` part headers.  ``bytes=0-,0-,0-`` is one range;
- unsatisfiable range-specs are dropped (14.1.2); when none is left the answer
  is 416 with ``Content-Range: bytes */SIZE`` (15.5.17);
- an empty representation has no byte to address and 206 no way to say so, so
  its ``Range`` is ignored (200 with the empty body).
"""

from __future__ import annotations

import calendar
import datetime
import re
import secrets
import time
from typing import NamedTuple

#: The most range-specs one request may name; one more and the header is ignored (200 with the
#: whole file).  Apache allows 200 (``MaxRanges``), nginx any number unless ``max_ranges`` is set;
#: 16 is well above what real clients send (download managers and PDF readers ask for a few)
#: and keeps the cost of one request's part headers and seeks small.
MAX_RANGES = 16

#: Stands for a position too long to be any file's (files are shorter than 2**63 bytes), so that
#: a 5,000-digit number is compared, not converted (Python refuses ``int()`` beyond 4,300 digits).
BEYOND = 1 << 64

_OWS = b" \t"  # RFC 9110 5.6.3
_RANGE_SPEC = re.compile(rb"([0-9]*)-([0-9]*)")  # int-range or suffix-range (14.1.1, 14.1.2)


class Span(NamedTuple):
    """``length`` bytes from ``offset``: one part of a 206 answer."""

    offset: int
    length: int

    def content_range(self, size: int) -> bytes:
        """The ``Content-Range`` value for this span of a ``size``-byte representation (14.4)."""
        return b"bytes %d-%d/%d" % (self.offset, self.offset + self.length - 1, size)


def unsatisfied_range(size: int) -> bytes:
    """``Content-Range`` of a 416: the current length, for the client's next try (14.4)."""
    return b"bytes */%d" % size


def _magnitude(digits: bytes) -> tuple[int, bytes]:
    """Orders decimal numbers of any length without converting them."""
    digits = digits.lstrip(b"0")
    return len(digits), digits


def _position(digits: bytes) -> int:
    length, significant = _magnitude(digits)
    return int(significant or b"0") if length <= 19 else BEYOND


def parse_range(value: bytes) -> list[tuple[int | None, int | None]] | None:
    """The range-specs of a ``Range`` value as ``(first, last)``, in the client's order.

    ``(first, None)`` is ``first-``, ``(None, n)`` the suffix ``-n``.  None
    when the header must be ignored: another unit, invalid syntax, or more than
    :data:`MAX_RANGES` ranges (RFC 9110 14.1.1, 14.2).
    """
    unit, equals, range_set = value.partition(b"=")
    if not equals or unit.strip(_OWS).lower() != b"bytes":
        return None  # "An origin server MUST ignore a Range header field that contains a range
        # unit it does not understand" (14.2); no "=" is no ranges-specifier at all
    specs: list[tuple[int | None, int | None]] = []
    for element in range_set.split(b","):
        element = element.strip(_OWS)
        if not element:
            continue  # empty list elements are allowed and ignored (5.6.1.2)
        if len(specs) == MAX_RANGES:
            return None
        match = _RANGE_SPEC.fullmatch(element)
        if match is None:
            return None
        first, last = match.groups()
        if not first:
            if not last:
                return None  # "-" is neither an int-range nor a suffix-range
            specs.append((None, _position(last)))
        elif not last:
            specs.append((_position(first), None))
        elif _magnitude(first) > _magnitude(last):
            return None  # "invalid if the last-pos value is present and less than the first-pos"
        else:
            specs.append((_position(first), _position(last)))
    return specs or None  # range-set = 1#range-spec


def satisfiable(specs: list[tuple[int | None, int | None]], size: int) -> list[Span]:
    """The spans of a ``size``-byte representation the specs select, overlaps coalesced.

    A spec is dropped when it is unsatisfiable: its first-pos is at or past the
    end, or it is the suffix ``-0`` (14.1.2).  A last-pos past the end, or a
    suffix longer than the representation, is cut to what there is (14.1.2).
    Each span stays where its earliest spec was (15.3.7.2 asks for the
    client's order); one that overlaps spans already kept is merged with them
    (15.3.7.2), so the spans returned are disjoint.  Adjacent spans stay apart:
    they cost a part header, not a byte twice.
    """
    kept: list[tuple[int, int]] = []  # (start, stop), stop exclusive
    for first, last in specs:
        if first is None:
            if last == 0:
                continue
            start, stop = max(0, size - last), size
        else:
            if first >= size:
                continue
            start, stop = first, size if last is None else min(last + 1, size)
        # The union of two overlapping intervals is an interval, and kept ones are disjoint,
        # so one pass over them finds everything the new span joins.
        place = None
        merged = []
        for kept_start, kept_stop in kept:
            if kept_start < stop and start < kept_stop:
                start, stop = min(start, kept_start), max(stop, kept_stop)
                place = len(merged) if place is None else place
            else:
                merged.append((kept_start, kept_stop))
        merged.insert(len(merged) if place is None else place, (start, stop))
        kept = merged
    return [Span(start, stop - start) for start, stop in kept]


def select(value: bytes, size: int) -> list[Span] | None:
    """What a ``Range`` header asks of a ``size``-byte representation.

    None: ignore it and send the whole representation with 200.  ``[]``: 416.
    Otherwise the disjoint spans to send with 206 (one, or several as
    ``multipart/byteranges``).
    """
    specs = parse_range(value)
    if specs is None or size == 0:
        return None
    return satisfiable(specs, size)


class Multipart(NamedTuple):
    """The framing of a ``multipart/byteranges`` body (RFC 9110 14.6).

    The body is, for each ``(head, span)`` of ``parts``, ``head`` then the
    span's bytes; then ``end``.  ``length`` is the whole body's, for
    ``Content-Length``.
    """

    content_type: bytes
    parts: list[tuple[bytes, Span]]
    end: bytes
    length: int


def multipart(spans: list[Span], size: int, content_type: bytes) -> Multipart:
    """Frame ``spans`` of a ``size``-byte representation of type ``content_type``.

    The boundary is 128 random bits, fresh per response: a file cannot be made
    to contain it, which a boundary derived from the clock and the pid (as
    Twisted's) does not promise.  Each part carries the Content-Type the whole
    representation would have had, and its Content-Range (15.3.7.2).
    """
    boundary = secrets.token_hex(16).encode()
    parts = [(b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: %s\r\n\r\n"
              % (boundary, content_type, span.content_range(size)), span) for span in spans]
    end = b"\r\n--%s--\r\n" % boundary
    length = sum(len(head) + span.length for head, span in parts) + len(end)
    return Multipart(b'multipart/byteranges; boundary="%s"' % boundary, parts, end, length)


def if_range_matches(value: bytes, etag: bytes, last_modified: int) -> bool:
    """Does ``If-Range`` let ``Range`` be honoured for this representation (RFC 9110 13.1.5)?

    ``etag`` is the representation's ETag field value, ``last_modified`` its
    Last-Modified in seconds since the epoch.  An entity-tag (a DQUOTE in the
    first three characters) must match by the strong comparison, so a weak tag,
    sent or ours, never does (8.8.3.2).  A date must equal Last-Modified to the
    second, as nginx and Go compare it; 13.1.5 also wants the date to be a
    strong validator, which no server can prove for a file rewritten twice in
    one second; clients that care send the ETag, which has the nanoseconds.
    Anything else is false, and the whole representation goes out.
    """
    value = value.strip(_OWS)
    if b'"' in value[:3]:
        return not etag.startswith(b"W/") and value == etag
    return parse_http_date(value) == last_modified


_DAY = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = rb"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_MONTHS = {name.encode(): number for number, name in enumerate(calendar.month_abbr) if name}
#: The three HTTP-date forms of RFC 9110 5.6.7: (pattern, where its day, month, year and hour are).
_HTTP_DATES = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    (re.compile(_DAY + rb", ([0-9]{2}) " + _MONTH + rb" ([0-9]{4}) " + _TIME + rb" GMT"), (0, 1, 2, 3)),
    # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
    (re.compile(rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{2})-"
                + _MONTH + rb"-([0-9]{2}) " + _TIME + rb" GMT"), (0, 1, 2, 3)),
    # asctime-date: Sun Nov  6 08:49:37 1994
    (re.compile(_DAY + rb" " + _MONTH + rb" ([0-9]{2}| [0-9]) " + _TIME + rb" ([0-9]{4})"), (1, 0, 5, 2)),
)


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch of an HTTP-date in any of its three forms (RFC 9110 5.6.7), else None.

    Recipients must accept all three; nothing looser (no other zone than GMT,
    no missing seconds) is taken, since a date that does not parse only means
    the whole representation is sent.  A two-digit rfc850 year more than 50
    years ahead is the latest past year with those digits, as 5.6.7 says.
    """
    for pattern, (day_at, month_at, year_at, hour_at) in _HTTP_DATES:
        match = pattern.fullmatch(value)
        if match is None:
            continue
        fields = match.groups()
        year = int(fields[year_at])
        if len(fields[year_at]) == 2:
            now = time.gmtime().tm_year
            year += now - now % 100
            if year > now + 50:
                year -= 100
        hour, minute, second = (int(field) for field in fields[hour_at:hour_at + 3])
        if second > 60:  # 60 is a leap second (5.6.7)
            return None
        try:
            moment = datetime.datetime(year, _MONTHS[fields[month_at]], int(fields[day_at]), hour, minute)
        except ValueError:  # 31 Feb, hour 24, year 0000
            return None
        return calendar.timegm(moment.timetuple()) + second
    return None
