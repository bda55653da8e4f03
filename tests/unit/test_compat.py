"""The contract of every private Twisted name twisthost leans on (twisthost/_compat.py).

Each test states what the name must still do; a Twisted that changed it
fails here, with a message naming the name, before anything in a request
path breaks.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints, reactor, tcp
from twisted.logger import FileLogObserver, LogPublisher, formatEvent

from twisthost import _compat

#: Private names of Twisted and CPython that twisthost has used (the surface check's list).
KNOWN_PRIVATE = """
    _poller _selectables _doReadOrWrite _busyReceiving _networkProducer _waitingForTransport
    _handlingRequest _savedTimeOut _transferDecoder _finishRequestBody
    _respondToBadRequestAndDisconnect _send100Continue _IdentityTransferDecoder
    _ChunkedTransferDecoder _dataReceived_CHUNK_LENGTH _dataReceived_TRAILER
    _MalformedChunkedDataError _rawHeaders _IEncodingResource _handleStar
    _GenericHTTPChannelProtocol _tempDataBuffer _writeDisconnected _protocolUpgradeForWebsockets
    _setNonBlocking _fromListeningDescriptor _trySpawnInsteadOfFork _resetSignalDisposition
    _execChild _run_exitfuncs _parseRangeHeader _rangeToOffsetAndSize _doMultipleRangeRequest
    _contentRange _parseServer _raiseSynchronously _sslverify reapProcessHandlers _outFile
    _observers _clear OpenSSLAcceptableCiphers _http2 _port _interface _sddaemon
""".split()
#: Modules not yet moved behind the fence (docs/design.md says why and what replaces them).
NOT_YET_FENCED = {"workers.py", "acceptshare.py"}


def test_h2_connection_is_twisteds_http2_protocol():
    from twisted.web.http import H2_ENABLED

    assert H2_ENABLED, "twisted.web._http2 needs h2 installed (twisted[http2])"
    connection = _compat.h2_connection()
    for name in ("dataReceived", "connectionLost", "makeConnection", "streams", "setTimeout"):
        assert hasattr(connection, name), f"twisted.web._http2.H2Connection has no {name!r}"
    # HostConnection sets these before makeConnection, as Twisted's own switch does.
    connection.requestFactory = connection.site = connection.factory = None
    connection.timeOut, connection.callLater = 60, reactor.callLater


def test_unsent_follows_a_tcp_transports_buffers():
    """``_tempDataBuffer`` takes writes; ``_writeDisconnected`` marks a half-close."""
    server_side, client_side = socket.socketpair()
    try:
        transport = tcp.Connection(server_side, protocol=None, reactor=reactor)
        assert not _compat.unsent(transport)
        transport.connected = True
        transport.write(b"x")  # buffered until the next write event
        assert _compat.unsent(transport), "FileDescriptor.write no longer fills _tempDataBuffer"
        transport._tempDataBuffer, transport._tempDataLen = [], 0
        assert not _compat.unsent(transport)
        assert transport._writeDisconnected is False, "FileDescriptor._writeDisconnected is gone"
        transport.stopWriting()
    finally:
        server_side.close()
        client_side.close()


@pytest.mark.parametrize("description, options", [
    ("systemd:domain=INET:index=0", {"domain": "INET", "index": "0"}),
    ("systemd:domain=UNIX:name=web", {"domain": "UNIX", "name": "web"}),
])
def test_endpoint_options_parse_without_resolving(description, options):
    assert _compat.endpoint_options(description) == options, "endpoints._parseServer changed its result"


def test_tcp_server_address_is_what_the_endpoint_was_made_with():
    assert _compat.tcp_server_address(endpoints.serverFromString(None, "tcp:8181:interface=127.0.0.2")) \
        == (8181, "127.0.0.2"), "TCP4ServerEndpoint._port/_interface changed"
    assert _compat.tcp_server_address(endpoints.serverFromString(None, "tcp6:8182")) == (8182, "::")


def test_systemd_passed_lists_inherited_sockets():
    passed = _compat.systemd_passed()
    assert isinstance(list(passed.inheritedDescriptors()), list), "_SystemdParser._sddaemon changed"
    assert isinstance(list(passed.inheritedNamedDescriptors()), list)


def test_raise_listen_errors_makes_start_service_raise():
    class Failing:
        def listen(self, factory):
            return defer.fail(OSError("address already in use"))

    service = StreamServerEndpointService(Failing(), factory=None)
    _compat.raise_listen_errors(service)
    with pytest.raises(OSError, match="address already in use"):
        service.privilegedStartService()


def test_log_observers_and_their_files(tmp_path):
    publisher = LogPublisher()
    out = open(tmp_path / "log.txt", "w")
    observer = FileLogObserver(out, lambda event: formatEvent(event) + "\n")
    publisher.addObserver(observer)
    try:
        assert _compat.log_observers(publisher) == [observer], "LogPublisher._observers changed"
        assert _compat.observer_file(observer) is out, "FileLogObserver._outFile changed"
        assert _compat.observer_file(object()) is None
    finally:
        out.close()


def test_the_fence_holds_every_private_twisted_name():
    """No module but _compat names a private attribute of Twisted known to the surface check."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for name in KNOWN_PRIVATE:
        word = re.compile(rf"\b{re.escape(name)}\b")
        for path in (root / "twisthost").rglob("*.py"):
            if path.name in ("_compat.py", *NOT_YET_FENCED):
                continue
            if word.search(path.read_text()):
                offenders.append(f"{path.relative_to(root)}: {name}")
    assert not offenders, offenders


def test_fast_headers_store_what_headers_stores():
    """FastHeaders writes Headers._rawHeaders itself: the same keys and values as the base class."""
    from twisted.web.http_headers import Headers

    plain, fast = Headers(), _compat.FastHeaders()
    for headers in (plain, fast):
        headers.setRawHeaders(b"content-type", [b"text/plain"])
        headers.addRawHeader(b"X-Two", b"a")
        headers.addRawHeader(b"x-two", b"b")
    assert isinstance(plain._rawHeaders, dict), "Headers._rawHeaders is no longer a dict"
    assert fast._rawHeaders == plain._rawHeaders
    assert list(fast.getAllRawHeaders()) == list(plain.getAllRawHeaders())


def test_answer_star_answers_options_star():
    from twisted.web.test.requesthelper import DummyChannel
    from twisted.web.server import Request

    request = Request(DummyChannel())
    request.method, request.path, request.uri, request.clientproto = b"OPTIONS", b"*", b"*", b"HTTP/1.1"
    _compat.answer_star(request)
    assert request.finished and request.code == 200, "Request._handleStar changed"


def test_is_encoding_resource_knows_twisteds_gzip_wrapper():
    from twisted.web.resource import EncodingResourceWrapper, Resource
    from twisted.web.server import GzipEncoderFactory

    assert _compat.is_encoding_resource(EncodingResourceWrapper(Resource(), [GzipEncoderFactory()]))
    assert not _compat.is_encoding_resource(Resource())
