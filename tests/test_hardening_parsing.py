"""Hostile HTTP/1.1 input over raw sockets: one test per parsing rule (RFC 9112).

Every hostile request is followed on the same connection by a second,
well-formed request for ``/smuggled``; the echo resource would answer it with
its path.  Each case asserts the status, that exactly one response came back,
that the connection was closed, that ``/smuggled`` was never served, and that
the server still answers a normal request afterwards.
"""

from __future__ import annotations

import pytest

from conftest import PROMPT
from hardening_support import exchange, responses, start

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("parsing"), max_request_line=1024, max_header_size=4096, max_headers=20)
    yield server
    server.stop()
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Unhandled" not in log, log


def refused(server, request: bytes, status: int = 400) -> bytes:
    raw, closed = exchange(server.port, request + SMUGGLED)
    answers = responses(raw)
    assert [code for code, _, _ in answers] == [status], raw
    assert closed, "the connection must be closed after a refused request"
    assert b"/smuggled" not in raw
    code, headers, body = answers[0]
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["connection"] == "close"
    assert body.startswith(f"{status} ".encode())
    still_fine(server)
    return body


def still_fine(server) -> None:
    status, _, body = server.request(path="/ok", host="a.test")
    assert (status, body) == (200, b"GET /ok 0\n")


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST /upload " + version + b"\r\nHost: a.test\r\n" + headers + b"\r\n" + body


# -- message framing: Content-Length and Transfer-Encoding


def test_content_length_and_transfer_encoding_together(server):
    body = refused(server, post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"))
    assert b"Content-Length and Transfer-Encoding" in body
    refused(server, post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"))


def test_repeated_content_length(server):
    refused(server, post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"))


def test_differing_content_lengths(server):
    refused(server, post(b"Content-Length: 5\r\nContent-Length: 0\r\n", b"hello"))


@pytest.mark.parametrize("value", [b"+5", b"-5", b"0x05", b"5 5", b"5,5", b"1_0", b"5.0", b"\xd9\xa5", b"", b"5\x0b"])
def test_content_length_must_be_plain_digits(server, value):
    refused(server, post(b"Content-Length: " + value + b"\r\n", b"hello"))


@pytest.mark.parametrize("value", [b"gzip, chunked", b"chunked, gzip", b"identity", b"chunked;q=1", b"xchunked", b"chunked, chunked"])
def test_transfer_encoding_must_be_exactly_chunked(server, value):
    refused(server, post(b"Transfer-Encoding: " + value + b"\r\n", b"0\r\n\r\n"))


def test_repeated_transfer_encoding(server):
    refused(server, post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"))


def test_transfer_encoding_on_http10(server):
    refused(server, post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", version=b"HTTP/1.0"))


# -- line endings and characters


def test_obs_fold(server):
    body = refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: one\r\n two\r\n\r\n")
    assert b"Folded" in body
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: one\r\n\ttwo\r\n\r\n")


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\nHost: a.test\n\n",  # bare LF everywhere
    b"GET / HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n",  # one bare LF inside the head
    b"GET / HTTP/1.1\r\nHost: a.test\r\n\n",  # bare LF as the blank line
    b"GET / HTTP/1.1\rHost: a.test\r\n\r\n",  # bare CR
    b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\rb\r\n\r\n",  # bare CR in a value
])
def test_bare_cr_or_lf_line_endings(server, request_bytes):
    refused(server, request_bytes)


def test_bare_lf_head_is_answered_without_waiting_for_a_timeout(server):
    # Refused at once: well before the 20 s header_timeout a waiting server would answer at.
    raw, closed = exchange(server.port, b"GET / HTTP/1.1\nHost: a.test\n\n", timeout=PROMPT)
    assert closed and raw.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x0bb", b"a\x0cb", b"a\x7fb", b"a\x1bb"])
def test_control_characters_in_values(server, value):
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Test: " + value + b"\r\n\r\n")


@pytest.mark.parametrize("line", [b"Host : a.test", b"X Test: 1", b"X\x00: 1", b": empty-name", b"no colon", b"X\tY: 1"])
def test_malformed_field_names(server, line):
    head = b"GET / HTTP/1.1\r\n" + (line if line.startswith(b"Host") else b"Host: a.test\r\n" + line) + b"\r\n\r\n"
    refused(server, head)


def test_obs_text_in_values_is_accepted(server):
    raw, _ = exchange(server.port, b"GET /t HTTP/1.1\r\nHost: a.test\r\nX: caf\xc3\xa9\r\nConnection: close\r\n\r\n")
    assert [code for code, _, _ in responses(raw)] == [200]


# -- chunked bodies


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


@pytest.mark.parametrize("size_line", [b"0x5", b"+5", b" 5", b"5 ", b"-5", b"g", b"", b"5\x00"])
def test_invalid_chunk_sizes(server, size_line):
    refused(server, chunked(size_line + b"\r\nhello\r\n0\r\n\r\n"))


@pytest.mark.parametrize("extension", [b";", b";;", b"; =x", b";a=", b';a="open', b";a=b c", b";a\x01"])
def test_invalid_chunk_extensions(server, extension):
    refused(server, chunked(b"5" + extension + b"\r\nhello\r\n0\r\n\r\n"))


def test_valid_chunk_extensions_and_trailers_are_accepted(server):
    raw, _ = exchange(server.port, chunked(b'5;a=b;c="d e"\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n'))
    assert [(code, body) for code, _, body in responses(raw)[:1]] == [(200, b"POST /upload 5\n")]


def test_chunk_longer_than_its_size(server):
    refused(server, chunked(b"3\r\nhello\r\n0\r\n\r\n"))


def test_truncated_chunked_body_does_not_hide_a_request(server):
    # The chunk promises 5 bytes but 3 arrive: the next request's bytes must
    # not be taken as the rest of the chunk and then parsed as a request.
    refused(server, chunked(b"5\r\nhel"))


def test_trailer_with_bare_lf(server):
    refused(server, chunked(b"5\r\nhello\r\n0\r\nX: a\nGET /hidden HTTP/1.1\r\n\r\n"))


# -- Host, targets, versions, request line


def test_missing_host_on_http11(server):
    refused(server, b"GET / HTTP/1.1\r\nX: y\r\n\r\n")


def test_more_than_one_host(server):
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")


def test_malformed_host(server):
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n")


def test_absolute_form_host_must_agree_with_host_header(server):
    refused(server, b"GET http://b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n")
    refused(server, b"GET http://user@a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n")


def test_absolute_form_is_served_as_origin_form(server):
    raw, _ = exchange(server.port, b"GET http://A.test:80/abs?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
                                   b"GET https://a.test HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert [body for _, _, body in responses(raw)] == [b"GET /abs?q=1 0\n", b"GET / 0\n"]


def test_authority_form_and_asterisk_outside_options(server):
    refused(server, b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n")
    refused(server, b"GET * HTTP/1.1\r\nHost: a.test\r\n\r\n")


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11"])
def test_unsupported_http_versions(server, version):
    refused(server, b"GET / " + version + b"\r\nHost: a.test\r\n\r\n")


@pytest.mark.parametrize("line", [b"GET  / HTTP/1.1", b"GET\t/ HTTP/1.1", b"GET HTTP/1.1", b"GET /" + b" HTTP/1.1 x",
                                  b"G(T / HTTP/1.1", b"GET /a\x7fb HTTP/1.1", b"GET /\xc3\xa9 HTTP/1.1"])
def test_malformed_request_lines(server, line):
    refused(server, line + b"\r\nHost: a.test\r\n\r\n")


# -- size limits (this server: request line 1024, header lines 4096 bytes, 20 fields)


def test_long_request_line_gets_414(server):
    refused(server, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a.test\r\n\r\n", 414)


def test_long_request_line_sent_in_one_piece_without_end(server):
    # No CRLF at all yet: refused as soon as the line cannot fit any more.
    raw, closed = exchange(server.port, b"GET /" + b"a" * 50000)
    assert closed and responses(raw)[0][0] == 414


def test_too_many_header_fields_gets_431(server):
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\n" + b"X-A: 1\r\n" * 21 + b"\r\n", 431)


def test_header_section_too_large_gets_431(server):
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\n" + b"X-Big: " + b"b" * 5000 + b"\r\n\r\n", 431)
    refused(server, b"GET / HTTP/1.1\r\nHost: a.test\r\n" + (b"X-A: " + b"a" * 1000 + b"\r\n") * 5 + b"\r\n", 431)


def test_limits_admit_what_fits(server):
    head = b"GET /fits HTTP/1.1\r\nHost: a.test\r\n" + b"X-A: 1\r\n" * 18 + b"Connection: close\r\n\r\n"
    raw, _ = exchange(server.port, head)
    assert [code for code, _, _ in responses(raw)] == [200]


# -- what must keep working


def test_pipelined_requests_are_answered_in_order(server):
    raw, closed = exchange(
        server.port,
        b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
        + post(b"Content-Length: 5\r\n", b"hello")
        + chunked(b"3\r\nabc\r\n0\r\n\r\n")
        + b"\r\nGET /4 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    assert closed
    assert [body for _, _, body in responses(raw)] == [
        b"GET /1 0\n", b"POST /upload 5\n", b"POST /upload 3\n", b"GET /4 0\n"]


def test_http10_without_host_is_accepted(server):
    raw, closed = exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert closed and responses(raw)[0][0] == 404  # no default host in this site
