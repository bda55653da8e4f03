"""HostChannel, the HTTP/1.1 connection, on StringTransport and a Clock: phases, timers, bounds.

A real ``HostSite`` with a small ``Resource`` tree answers; only the socket
and the clock are replaced, so these tests see the bytes and the moments a
client would.
"""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server

from twisthost.channel import LINGER, PIPELINE_INPUT, HostChannel
from twisthost.config import Site
from twisthost.server import HostSite

PEER = IPv4Address("TCP", "127.0.0.1", 50000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
GET = b"GET /hello HTTP/1.1\r\nHost: a.test\r\n\r\n"


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hi " + request.path


class Later(resource.Resource):
    """Answers only when the test says so: a request under way."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.waiting = []

    def render_GET(self, request):
        self.waiting.append(request)
        return server.NOT_DONE_YET

    render_POST = render_GET


class Echo(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        return request.content.read()


def aborted(transport) -> bool:
    return getattr(transport, "disconnected", False)  # what StringTransport.abortConnection sets


@pytest.fixture
def clock():
    return Clock()


def connect(root, clock, **limits):
    site = HostSite(root, Site(**limits), reactor=clock)
    protocol = site.buildProtocol(PEER)
    transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    protocol.makeConnection(transport)
    assert isinstance(protocol.channel, HostChannel)
    return protocol, transport


def test_pipelined_requests_are_answered_in_order_from_one_read(clock):
    protocol, transport = connect(Hello(), clock)
    protocol.dataReceived(GET.replace(b"/hello", b"/one") + GET.replace(b"/hello", b"/two"))
    out = transport.value()
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"hi /one") < out.index(b"hi /two")
    assert not transport.disconnecting


def test_the_first_head_has_header_timeout_from_the_accept(clock):
    protocol, transport = connect(Hello(), clock, header_timeout=5)
    clock.advance(4)
    protocol.dataReceived(b"GET / HTTP/1.1\r\n")  # trickling in does not extend it
    clock.advance(1.5)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert transport.disconnecting


def test_a_silent_new_connection_is_closed_without_an_answer(clock):
    protocol, transport = connect(Hello(), clock, header_timeout=5)
    clock.advance(5.5)
    assert transport.value() == b"" and transport.disconnecting


def test_idle_keepalive_then_close(clock):
    protocol, transport = connect(Hello(), clock, keepalive_timeout=3, header_timeout=20)
    protocol.dataReceived(GET)
    assert b"200 OK" in transport.value()
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    clock.advance(LINGER + 0.1)  # a client that never closes its side is aborted
    assert aborted(transport)


def test_the_next_head_gets_header_timeout_from_its_first_byte(clock):
    protocol, transport = connect(Hello(), clock, keepalive_timeout=30, header_timeout=5)
    protocol.dataReceived(GET)
    clock.advance(20)
    protocol.dataReceived(b"GET /")
    clock.advance(4.9)
    assert transport.value().count(b"HTTP/1.1") == 1
    clock.advance(0.2)
    assert transport.value().endswith(b"The request did not arrive in time.\n")


def test_body_timeout_runs_between_reads_of_a_body(clock):
    protocol, transport = connect(Echo(), clock, body_timeout=3)
    protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    clock.advance(2.5)
    protocol.dataReceived(b"c")  # a fresh period
    clock.advance(2.5)
    assert transport.value() == b""
    clock.advance(1)
    assert b" 408 " in transport.value()


def test_a_body_arriving_in_pieces_is_handed_over_whole(clock):
    protocol, transport = connect(Echo(), clock)
    protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    protocol.dataReceived(b"c\r\n2\r\nde\r\n0\r\n\r\n")
    assert transport.value().endswith(b"\r\n\r\nabcde")


def test_100_continue_is_sent_before_the_body(clock):
    protocol, transport = connect(Echo(), clock)
    protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert transport.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    protocol.dataReceived(b"ok")
    assert transport.value().endswith(b"ok")


def test_a_refusal_answers_once_then_drops_what_follows(clock):
    protocol, transport = connect(Hello(), clock)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n" + GET)
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in out and transport.disconnecting
    protocol.dataReceived(GET * 10)  # lingering: read and dropped
    assert transport.value() == out


def test_connection_close_ends_the_connection_after_the_answer(clock):
    protocol, transport = connect(Hello(), clock)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n" + GET)
    out = transport.value()
    assert out.count(b"HTTP/1.1 200") == 1 and b"connection: close" in out.lower()
    assert transport.disconnecting


def test_http_1_0_is_not_kept_alive(clock):
    protocol, transport = connect(Hello(), clock)
    protocol.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
    assert b"200 OK" in transport.value() and transport.disconnecting


def test_pipelined_input_is_bounded_while_a_request_is_answered(clock):
    later = Later()
    protocol, transport = connect(later, clock)
    protocol.dataReceived(GET)
    assert len(later.waiting) == 1 and transport.producerState == "producing"
    protocol.dataReceived(GET * (PIPELINE_INPUT // len(GET) + 1))
    assert transport.producerState == "paused"  # the client is read no further
    assert len(later.waiting) == 1  # one request at a time
    request = later.waiting.pop()
    request.write(b"done")
    request.finish()
    assert transport.producerState == "producing"
    assert len(later.waiting) == 1  # the next pipelined one, now


def test_a_client_that_stops_reading_meets_write_timeout(clock):
    later = Later()
    protocol, transport = connect(later, clock, write_timeout=7, keepalive_timeout=100)
    protocol.dataReceived(GET)
    protocol.channel.pauseProducing()  # what the transport says when its buffer is full
    clock.advance(6.9)
    assert not aborted(transport)
    clock.advance(0.2)
    assert aborted(transport)


def test_a_full_transport_pauses_the_responses_producer(clock):
    later = Later()
    protocol, transport = connect(later, clock)
    protocol.dataReceived(GET)

    class Producer:
        state = "producing"

        def pauseProducing(self):
            self.state = "paused"

        def resumeProducing(self):
            self.state = "producing"

        def stopProducing(self):
            self.state = "stopped"

    producer = Producer()
    later.waiting[0].registerProducer(producer, True)
    protocol.channel.pauseProducing()
    assert producer.state == "paused"
    protocol.channel.resumeProducing()
    assert producer.state == "producing"
    protocol.connectionLost(Failure(ConnectionDone()))
    assert producer.state == "stopped" or later.waiting[0]._disconnected


def test_upgrade_hands_the_bytes_that_followed_to_the_new_protocol(clock):
    later = Later()
    protocol, transport = connect(later, clock)
    protocol.dataReceived(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly")

    class Tunnel:
        def __init__(self):
            self.got, self.lost = [], None

        def makeConnection(self, transport):
            self.transport = transport

        def dataReceived(self, data):
            self.got.append(data)

        def connectionLost(self, reason):
            self.lost = reason

    tunnel = Tunnel()
    assert protocol.channel.upgrade(tunnel) == b"early"
    protocol.dataReceived(b"more")
    assert tunnel.got == [b"more"] and tunnel.transport is transport
    clock.advance(3600)  # no HTTP timer runs on a tunnel
    assert not transport.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))
    assert tunnel.lost is not None


def test_a_request_sits_on_the_channel_as_on_twisteds(clock):
    """What twisted.web's Request asks of its channel: addresses, TLS, the site, the queue."""
    later = Later()
    protocol, transport = connect(later, clock)
    protocol.dataReceived(GET)
    request = later.waiting[0]
    assert request.getClientAddress() == PEER and request.getHost() == HOST
    assert not request.isSecure() and request.site is protocol.channel.site
    assert protocol.channel.requests == [request]
    request.finish()
    assert protocol.channel.requests == []


class Refusals:
    def __init__(self):
        self.seen = []

    def __call__(self, request):
        self.seen.append((request.code, request.method, request.uri, request.clientproto, request.sentLength,
                          request.requestHeaders.getRawHeaders(b"host")))


def test_a_refused_head_is_reported_with_its_request_line(clock):
    protocol, transport = connect(Hello(), clock)
    refusals = Refusals()
    protocol.channel.site.refusal_observers.append(refusals)
    protocol.dataReceived(b"GET /a%20b HTTP/1.1\r\nHost: <script>\r\n\r\n")
    ((code, method, uri, version, sent, host),) = refusals.seen
    assert (code, method, uri, version, host) == (400, b"GET", b"/a%20b", b"HTTP/1.1", None)
    assert sent == len(transport.value().partition(b"\r\n\r\n")[2])  # the error body, as for any answer


def test_a_refused_body_is_reported_with_its_head(clock):
    protocol, transport = connect(Echo(), clock, body_timeout=3)
    refusals = Refusals()
    protocol.channel.site.refusal_observers.append(refusals)
    protocol.dataReceived(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 9\r\n\r\nabc")
    clock.advance(4)
    assert [seen[:4] + seen[5:] for seen in refusals.seen] == [(408, b"POST", b"/up", b"HTTP/1.1", [b"a.test"])]


def test_a_refusal_before_any_request_line_is_reported_as_unknown(clock):
    protocol, transport = connect(Hello(), clock)
    refusals = Refusals()
    protocol.channel.site.refusal_observers.append(refusals)
    protocol.dataReceived(b"GET /" + b"a" * 9000)  # past max_request_line, no line end yet
    assert [seen[:4] for seen in refusals.seen] == [(414, b"", b"", b"")]
