"""``twisthost.http.ranges``: Range, If-Range and multipart/byteranges (RFC 9110 section 14), no sockets.

The socket-level answers (status, headers, sendfile) are pinned by
tests/test_static.py; these pin the decisions: what a header selects, what is
ignored, the bound on what a request can make us send, and framing that a
MIME parser reads back.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twisthost.http import ranges
from twisthost.http.ranges import MAX_RANGES, Span, if_range_matches, multipart, parse_http_date, parse_range, select

SIZE = 10
DATA = b"0123456789"


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("value, specs", [
    (b"bytes=0-499", [(0, 499)]),
    (b"bytes=500-", [(500, None)]),
    (b"bytes=-500", [(None, 500)]),
    (b"bytes=0-0,-1", [(0, 0), (None, 1)]),
    (b"bytes=500-600,601-999", [(500, 600), (601, 999)]),
    (b"BYTES=0-1", [(0, 1)]),                      # range units are case-insensitive (14.1)
    (b"Bytes=0-1", [(0, 1)]),
    (b"bytes=0-1 , 3-4", [(0, 1), (3, 4)]),        # OWS around list commas (5.6.1)
    (b"bytes=\t0-1,\t3-4\t", [(0, 1), (3, 4)]),
    (b"bytes=0-1,,3-4,", [(0, 1), (3, 4)]),        # empty list elements are ignored (5.6.1.2)
    (b"bytes=,0-1", [(0, 1)]),
    (b"bytes = 2-3", [(2, 3)]),                    # tolerated around "=", as always
    (b"bytes=5-5", [(5, 5)]),
    (b"bytes=007-0009", [(7, 9)]),                 # leading zeros are still decimal
    (b"bytes=0-1,0-1", [(0, 1), (0, 1)]),          # duplicates parse; satisfiable() coalesces
])
def test_good_range_headers(value, specs):
    assert parse_range(value) == specs


@pytest.mark.parametrize("value", [
    b"", b"garbage", b"bytes", b"bytes 0-1", b"=0-1", b"bytes:0-1",
    b"items=0-1", b"none=0-1", b"bytesx=0-1", b"b ytes=0-1",       # another unit: MUST ignore (14.2)
    b"bytes=", b"bytes=,", b"bytes= , ,", b"bytes=-", b"bytes=--5", b"bytes=-5-",
    b"bytes=abc", b"bytes=x-y", b"bytes=5-3", b"bytes=10-9", b"bytes=1_0-2", b"bytes=+1-2",
    b"bytes=-+1", b"bytes=0x1-2", b"bytes=1e3-", b"bytes=1.5-2", b"bytes=0-1-2", b"bytes=-1-2",
    b"bytes=0 - 1", b"bytes=0- 1", b"bytes=0 -1",                    # no blank inside a range-spec
    b"bytes=0-1;q=1", b"bytes=0-1\x00", b"bytes=0-1\x0b", b"bytes=\xd9\xa3-4",  # U+0663, an Arabic 3
    b"bytes=0-1,garbage", b"bytes=0-1,5-3",                          # one bad spec spoils the set
    b"bytes==0-1", b"bytes=0-1=2",
])
def test_invalid_range_headers_are_ignored(value):
    assert parse_range(value) is None
    assert select(value, SIZE) is None  # 200 with the whole representation (14.2)


def test_at_most_max_ranges():
    assert len(parse_range(b"bytes=" + b",".join([b"0-0"] * MAX_RANGES))) == MAX_RANGES
    assert parse_range(b"bytes=" + b",".join([b"0-0"] * (MAX_RANGES + 1))) is None
    # empty elements do not count, however many
    assert len(parse_range(b"bytes=" + b",".join([b"0-0", b""] * MAX_RANGES))) == MAX_RANGES


def test_thousands_of_ranges_are_ignored_quickly():
    value = b"bytes=" + b",".join([b"0-"] * 4000)
    start = time.perf_counter()
    for _ in range(100):
        assert select(value, 1 << 30) is None
    assert time.perf_counter() - start < 1.0  # the 17th spec ends the parse, not the 4000th


def test_huge_numbers_are_compared_not_converted():
    huge = b"9" * 5000  # int() refuses strings this long
    assert select(b"bytes=" + huge + b"-", SIZE) == []                       # past the end: 416
    assert select(b"bytes=2-" + huge, SIZE) == [Span(2, 8)]                  # cut to the end
    assert select(b"bytes=-" + huge, SIZE) == [Span(0, SIZE)]                # longer than the file
    assert select(b"bytes=" + huge + b"-" + huge[:-1], SIZE) is None         # reversed, both huge
    assert select(b"bytes=" + huge[:-1] + b"-" + huge, SIZE) == []           # in order, unsatisfiable
    assert select(b"bytes=" + b"0" * 5000 + b"3-" + b"0" * 5000 + b"4", SIZE) == [Span(3, 2)]
    assert select(b"bytes=%d-" % (2**63 - 1), 2**63 - 2) == []
    assert select(b"bytes=%d-" % (2**63 - 2), 2**63 - 1) == [Span(2**63 - 2, 1)]


# --------------------------------------------------------------------------- satisfiability


@pytest.mark.parametrize("value, spans", [
    (b"bytes=0-3", [Span(0, 4)]),
    (b"bytes=-3", [Span(7, 3)]),
    (b"bytes=-100", [Span(0, 10)]),                # a suffix longer than the file: all of it (14.1.2)
    (b"bytes=7-", [Span(7, 3)]),
    (b"bytes=5-100", [Span(5, 5)]),                # a last-pos past the end is cut
    (b"bytes=9-9", [Span(9, 1)]),
    (b"bytes=0-1,20-30", [Span(0, 2)]),            # unsatisfiable specs are dropped
    (b"bytes=0-1,4-5,-2", [Span(0, 2), Span(4, 2), Span(8, 2)]),
    (b"bytes=-2,0-1", [Span(8, 2), Span(0, 2)]),   # the client's order (15.3.7.2)
    (b"bytes=0-4,5-9", [Span(0, 5), Span(5, 5)]),  # adjacent: two parts, no byte twice
    # overlaps are coalesced (15.3.7.2), where the earliest of them was
    (b"bytes=0-,0-,0-", [Span(0, 10)]),
    (b"bytes=0-4,2-6", [Span(0, 7)]),
    (b"bytes=8-9,0-1,1-5", [Span(8, 2), Span(0, 6)]),
    (b"bytes=0-1,4-5,1-4", [Span(0, 6)]),          # one range joining two kept ones
    (b"bytes=6-7,0-1,3-3,1-6", [Span(0, 8)]),
    (b"bytes=-1,9-", [Span(9, 1)]),
    (b"bytes=0-0,0-0,1-1", [Span(0, 1), Span(1, 1)]),
])
def test_selected_spans(value, spans):
    assert select(value, SIZE) == spans


@pytest.mark.parametrize("value", [b"bytes=10-", b"bytes=-0", b"bytes=20-30,40-", b"bytes=-0,10-10"])
def test_unsatisfiable_is_an_empty_list(value):
    assert select(value, SIZE) == []  # 416 (15.5.17)
    assert ranges.unsatisfied_range(SIZE) == b"bytes */10"


def test_an_empty_representation_ignores_range():
    assert select(b"bytes=0-1", 0) is None
    assert select(b"bytes=-5", 0) is None


def test_content_range():
    assert Span(0, 4).content_range(10) == b"bytes 0-3/10"
    assert Span(9, 1).content_range(10) == b"bytes 9-9/10"


specs = st.lists(st.one_of(
    st.tuples(st.integers(0, 40), st.none()),
    st.tuples(st.none(), st.integers(0, 40)),
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(sorted).map(tuple),
), min_size=1, max_size=MAX_RANGES)


@settings(max_examples=300, deadline=None)
@given(specs, st.integers(1, 30))
def test_spans_are_disjoint_and_cover_exactly_what_was_asked(specs, size):
    """The bound: whatever the ranges, each byte goes out at most once."""
    value = b"bytes=" + b",".join(b"%s-%s" % (b"" if a is None else b"%d" % a, b"" if b is None else b"%d" % b)
                                  for a, b in specs)
    spans = select(value, size)
    asked = set()
    for first, last in specs:
        if first is None:
            asked.update(range(max(0, size - last), size))
        else:
            asked.update(range(first, size if last is None else min(last + 1, size)))
    got = [offset for span in spans for offset in range(span.offset, span.offset + span.length)]
    assert len(got) == len(set(got)) <= size
    assert set(got) == asked
    assert all(span.length > 0 for span in spans)


# --------------------------------------------------------------------------- multipart/byteranges


def body_of(framing: ranges.Multipart, data: bytes) -> bytes:
    """The body a server writes for ``framing`` of ``data``."""
    return b"".join(head + data[span.offset:span.offset + span.length] for head, span in framing.parts) + framing.end


def read_multipart(content_type: bytes, body: bytes) -> list[tuple[dict, bytes]]:
    """A small strict reader (RFC 2046 5.1.1): the parts' header fields and exact bytes."""
    boundary = re.fullmatch(rb'multipart/byteranges; boundary="([0-9a-f]+)"', content_type).group(1)
    delimiter = b"\r\n--" + boundary
    assert body.endswith(delimiter + b"--\r\n")
    chunks = body[:-len(delimiter + b"--\r\n")].split(delimiter)
    assert chunks[0] == b""  # no preamble
    parts = []
    for chunk in chunks[1:]:
        assert chunk.startswith(b"\r\n")
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        parts.append(({name.lower(): value for name, value in fields.items()}, data))
    return parts


def test_multipart_parses_back_with_the_email_parser():
    text = b"".join(b"line %03d of the file\n" % n for n in range(100))
    spans = select(b"bytes=0-9,100-149,-22", len(text))
    framing = multipart(spans, len(text), b"text/plain; charset=utf-8")
    body = body_of(framing, text)
    assert len(body) == framing.length
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + framing.content_type + b"\r\n\r\n" + body)
    assert message.get_content_type() == "multipart/byteranges"
    parts = list(message.iter_parts())
    assert [part["Content-Range"] for part in parts] == [
        "bytes 0-9/2100", "bytes 100-149/2100", "bytes 2078-2099/2100"]
    assert all((part.get_content_type(), part.get_param("charset")) == ("text/plain", "utf-8") for part in parts)
    assert [part.get_payload(decode=True) for part in parts] == [text[0:10], text[100:150], text[-22:]]


def test_multipart_carries_any_bytes_exactly():
    data = bytes(range(256)) * 4 + b"\r\n--\r\n\r\n--"
    spans = select(b"bytes=0-255,300-700,-6", len(data))
    framing = multipart(spans, len(data), b"application/octet-stream")
    body = body_of(framing, data)
    assert len(body) == framing.length
    parts = read_multipart(framing.content_type, body)
    assert [(fields[b"content-range"], fields[b"content-type"], got) for fields, got in parts] == [
        (span.content_range(len(data)), b"application/octet-stream", data[span.offset:span.offset + span.length])
        for span in spans]


def test_the_boundary_is_random_per_response():
    boundaries = {multipart([Span(0, 1), Span(2, 1)], 3, b"text/plain").content_type for _ in range(50)}
    assert len(boundaries) == 50
    boundary = re.search(rb'boundary="(.*)"', boundaries.pop()).group(1)
    assert re.fullmatch(rb"[0-9a-f]{32}", boundary)  # 128 bits, a token (RFC 2046 5.1.1: 1-70 chars)


def test_multipart_length_is_bounded_by_the_file_and_the_part_heads():
    """bytes=0-,0-,... asks for the file 16 times; the answer holds it once."""
    size = 1 << 30
    spans = select(b"bytes=" + b",".join([b"0-"] * MAX_RANGES), size)
    assert spans == [Span(0, size)]
    spans = select(b"bytes=" + b",".join(b"%d-%d" % (n, n + 1000) for n in range(0, MAX_RANGES * 10, 10)), size)
    assert len(spans) == 1 and spans[0].length < 1200
    spans = select(b"bytes=" + b",".join(b"%d-%d" % (n, n) for n in range(0, MAX_RANGES * 2, 2)), size)
    framing = multipart(spans, size, b"application/octet-stream")
    assert framing.length <= sum(span.length for span in spans) + MAX_RANGES * 200


# --------------------------------------------------------------------------- If-Range

ETAG = b'"1a-2b-3c"'
LAST_MODIFIED = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize("value, allowed", [
    (ETAG, True),
    (b" " + ETAG + b"\t", True),
    (b'"1a-2b-3d"', False),
    (b"W/" + ETAG, False),                          # a weak tag never matches strongly (13.1.5)
    (b'"1a-2b-3c", "other"', False),                # one entity-tag, not a list
    (b"*", False),
    (b"", False),
    (b"Sun, 06 Nov 1994 08:49:37 GMT", True),       # IMF-fixdate
    (b"Sunday, 06-Nov-94 08:49:37 GMT", True),      # rfc850-date
    (b"Sun Nov  6 08:49:37 1994", True),            # asctime-date
    (b"Sun, 06 Nov 1994 08:49:38 GMT", False),      # another second
    (b"Sun, 06 Nov 1994 08:49:36 GMT", False),
    (b"Sun, 06 Nov 1994 08:49:37 +0000", False),    # only GMT
    (b"Sun, 06 Nov 1994 08:49 GMT", False),
    (b"sun, 06 nov 1994 08:49:37 gmt", False),      # the names are case-sensitive (5.6.7)
    (b"784111777", False),
    (b"garbage", False),
])
def test_if_range(value, allowed):
    assert if_range_matches(value, ETAG, LAST_MODIFIED) is allowed


def test_if_range_with_a_weak_etag_of_ours_never_matches():
    assert not if_range_matches(b'W/"1a-gz"', b'W/"1a-gz"', LAST_MODIFIED)


@pytest.mark.parametrize("value, seconds", [
    (b"Sun, 06 Nov 1994 08:49:37 GMT", 784111777),
    (b"Sunday, 06-Nov-94 08:49:37 GMT", 784111777),
    (b"Sun Nov  6 08:49:37 1994", 784111777),
    (b"Sun Nov 16 08:49:37 1994", 784111777 + 10 * 86400),
    (b"Thu, 01 Jan 1970 00:00:00 GMT", 0),
    (b"Wed, 31 Dec 2008 23:59:60 GMT", 1230767999 + 1),  # a leap second
    (b"Mon, 29 Feb 2016 12:00:00 GMT", 1456747200),
])
def test_http_dates(value, seconds):
    assert parse_http_date(value) == seconds


@pytest.mark.parametrize("value", [
    b"Sun, 31 Feb 1994 08:49:37 GMT", b"Sun, 06 Nov 1994 24:00:00 GMT", b"Sun, 06 Nov 1994 08:60:00 GMT",
    b"Sun, 06 Nov 1994 08:49:61 GMT", b"Sun, 06 Foo 1994 08:49:37 GMT", b"Sun, 6 Nov 1994 08:49:37 GMT",
    b"Sun, 06 Nov 0000 08:49:37 GMT", b"Sun Nov 6 08:49:37 1994", b"Sun, 06 Nov 1994 08:49:37 GMT ",
    b"Sunday, 06-Nov-1994 08:49:37 GMT", b"Sun, 06-Nov-94 08:49:37 GMT", b"",
])
def test_bad_http_dates(value):
    assert parse_http_date(value) is None


def test_rfc850_two_digit_years_are_at_most_50_years_ahead():
    """RFC 9110 5.6.7: a year more than 50 years in the future is the latest past one with its digits."""
    now = time.gmtime().tm_year
    for ahead in (0, 1, 49, 50, 51, 99):
        year = now + ahead
        value = b"Monday, 01-Jan-%02d 00:00:00 GMT" % (year % 100)
        expected = year if ahead <= 50 else year - 100
        assert time.gmtime(parse_http_date(value)).tm_year == expected, ahead
