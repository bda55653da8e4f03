"""The sans-IO request reader: its table of moves and the rules it applies before waiting.

The corpus tier (tests/corpus) holds the request-by-request cases; these
tests pin the reader's own mechanics: which events come in which state,
what is refused before the bytes it announces arrive, and that a refusal
leaves the reader reading nothing more.
"""

from __future__ import annotations

import pytest

from twisthost.http import h1
from twisthost.http.h1 import NEED_DATA, PAUSED, BadRequest, Data, EndOfMessage, Head, RequestReader


class Limits:
    max_request_line = 64
    max_header_size = 256
    max_headers = 4


def events(reader: RequestReader, data: bytes = b"") -> list:
    """Every event the reader has for what it holds, up to NEED_DATA or PAUSED."""
    reader.feed(data)
    found = []
    while True:
        event = reader.next_event()
        found.append(event)
        if event in (NEED_DATA, PAUSED):
            return found


def test_every_move_of_the_table_leads_to_a_state_of_the_reader():
    states = {h1.IDLE, h1.HEAD, h1.BODY, h1.CHUNK_SIZE, h1.CHUNK_DATA, h1.CHUNK_END, h1.TRAILER,
              h1.DONE, h1.TUNNEL}
    assert {state for state, _ in h1.TRANSITIONS} | set(h1.TRANSITIONS.values()) == states


def test_a_move_the_table_does_not_have_is_a_bug_not_input():
    reader = RequestReader(Limits())
    with pytest.raises(RuntimeError, match="no move 'next-request' from state 'idle'"):
        reader.next_request()


def test_a_body_less_request_is_its_head_then_its_end_then_a_pause():
    reader = RequestReader(Limits())
    head, end, pause = events(reader, b"\r\n\r\nGET /a?b HTTP/1.1\r\nHost: x.test\r\n\r\n")
    assert isinstance(head, Head) and (head.method, head.target, head.host) == (b"GET", b"/a?b", b"x.test")
    assert isinstance(end, EndOfMessage) and end.trailers == []
    assert pause is PAUSED and reader.state == h1.DONE


def test_pipelined_requests_wait_for_next_request():
    reader = RequestReader(Limits())
    one = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
    assert events(reader, one + b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")[-1] is PAUSED
    assert reader.buffered == len(one)  # the second is held, unread
    reader.next_request()
    assert events(reader)[0].target == b"/2"


def test_a_content_length_body_comes_as_data_then_the_end():
    reader = RequestReader(Limits())
    found = events(reader, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
    assert [type(e) for e in found] == [Head, Data, str] and found[1].data == b"he"
    assert reader.state == h1.BODY
    found = events(reader, b"lloGET")
    assert found[0].data == b"llo" and isinstance(found[1], EndOfMessage) and found[2] is PAUSED
    assert reader.buffered == 3  # the next request's first bytes


def test_chunked_body_with_extensions_and_trailers():
    reader = RequestReader(Limits())
    found = events(reader, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3;name=\"v\"\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n")
    assert [e.data for e in found if isinstance(e, Data)] == [b"abc"]
    end = [e for e in found if isinstance(e, EndOfMessage)][0]
    assert end.trailers == [(b"X-Sum", b"1")]


def test_a_chunk_size_beyond_the_body_limit_is_413_before_its_data():
    reader = RequestReader(Limits())
    events(reader, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    reader.limit_body(1000)
    reader.feed(b"3e9")  # 1001 bytes announced, the line not even finished
    with pytest.raises(BadRequest) as refused:
        reader.next_event()
    assert refused.value.status == 413
    assert reader.state == h1.ERROR


def test_chunks_are_counted_together_against_the_limit():
    reader = RequestReader(Limits())
    events(reader, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    reader.limit_body(10)
    events(reader, b"8\r\n12345678\r\n")
    with pytest.raises(BadRequest) as refused:
        events(reader, b"3\r\n")
    assert refused.value.status == 413


def test_a_chunk_size_beyond_64_bits_is_400_at_once():
    reader = RequestReader(Limits())
    events(reader, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(BadRequest) as refused:
        events(reader, b"1" + b"0" * 16)
    assert refused.value.status == 400 and "64 bits" in refused.value.detail


def test_a_declared_length_beyond_the_limit_is_413_when_the_limit_is_set():
    reader = RequestReader(Limits())
    events(reader, b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(BadRequest) as refused:
        reader.limit_body(10)
    assert refused.value.status == 413


def test_an_unfinished_head_is_judged_as_it_grows():
    with pytest.raises(BadRequest) as refused:
        events(RequestReader(Limits()), b"GET /" + b"a" * 64)
    assert refused.value.status == 414
    with pytest.raises(BadRequest) as refused:
        events(RequestReader(Limits()), b"GET / HTTP/1.1\r\nX: " + b"a" * 300)
    assert refused.value.status == 431
    with pytest.raises(BadRequest) as refused:
        events(RequestReader(Limits()), b"GET / HTTP/1.1\nHost: x")
    assert refused.value.status == 400


def test_a_head_exactly_at_its_limits_is_taken_byte_by_byte():
    line = b"GET /" + b"a" * (64 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 64
    head = line + b"\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(3)) + b"\r\n"
    reader = RequestReader(Limits())
    found = []
    for byte in head:
        found += [e for e in events(reader, bytes([byte])) if isinstance(e, Head)]
    assert len(found) == 1 and len(found[0].headers) == 4


def test_after_a_refusal_nothing_more_is_read():
    reader = RequestReader(Limits())
    with pytest.raises(BadRequest):
        events(reader, b"GET / HTTP/1.1\r\nHost: <script>\r\n\r\n")
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.buffered == 0
    with pytest.raises(RuntimeError):
        reader.next_event()


@pytest.mark.parametrize("head, detail", [
    (b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", "fragment"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n", "More than one Content-Type"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nauthorization: b\r\n\r\n", "More than one Authorization"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", "63 bits"),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "Malformed Host"),
])
def test_head_rules(head, detail):
    with pytest.raises(BadRequest) as refused:
        events(RequestReader(Limits()), head)
    assert refused.value.status == 400 and detail in refused.value.detail


def test_upgrade_hands_over_what_followed_the_request():
    reader = RequestReader(Limits())
    events(reader, b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
    assert reader.upgrade() == b"\x81\x05hello"
    assert reader.state == h1.TUNNEL and reader.next_event() is PAUSED


def test_head_started_tells_the_header_timeout_when_a_head_has_begun():
    reader = RequestReader(Limits())
    assert not reader.head_started
    events(reader, b"\r\n")
    assert not reader.head_started  # an empty line before a request is not a head
    events(reader, b"G")
    assert reader.head_started
