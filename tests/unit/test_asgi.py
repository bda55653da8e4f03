"""``twisthost.asgi`` and ``asgi_ws`` in process: config errors, the scope, event order, limits,
back-pressure and WebSocket framing.

A real site is built from a site.py (``prepare``) and its apps run on their real event-loop
threads; only the socket (``StringTransport``) and the reactor are replaced: a ``Clock`` whose
``callFromThread`` queues calls that :meth:`Reactor.pump` runs in the test's thread, which
stands for the reactor thread.  The apps are small raw ASGI apps written for these tests.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest
from conftest import config_error, write_site
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from twisthost.asgi import CHUNK, HIGH_WATER
from twisthost.cli import routing_table
from twisthost.service import HostService, prepare

PEER = IPv4Address("TCP", "127.0.0.1", 50000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

APPS = r'''
import asyncio, json, threading

SEEN = {}
RELEASE = {}

async def scope_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    events = []
    while True:
        message = await receive()
        events.append([message["type"], len(message.get("body", b"")), message.get("more_body")])
        if not message.get("more_body"):
            break
    SEEN["scope"] = scope
    SEEN["events"] = events
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"yes")]})
    await send({"type": "http.response.body", "body": b"created"})
    SEEN["after"] = await receive()

async def body_first(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.body", "body": b"no start"})

async def no_response(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    return

async def fail_late(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise ValueError("late")

async def fail_between(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ValueError("after start, before body")

async def wait_app(scope, receive, send):
    """Holds its request until RELEASE[path] is set (from the test's thread)."""
    if scope["type"] != "http":
        return
    event = RELEASE.setdefault(scope["path"], threading.Event())
    while not event.is_set():
        await asyncio.sleep(0.01)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"released"})

async def disconnect_app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await receive()  # the body
    SEEN["waiting"] = True
    SEEN["disconnect"] = await receive()

async def hang(scope, receive, send):
    if scope["type"] == "http":
        SEEN["hanging"] = True
        await asyncio.sleep(3600)

async def streamer(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    SEEN["sent"] = 0
    await send({"type": "http.response.start", "status": 200, "headers": []})
    block = b"x" * 65536
    for _ in range(64):  # 4 MiB
        await send({"type": "http.response.body", "body": block, "more_body": True})
        SEEN["sent"] += len(block)
    await send({"type": "http.response.body", "body": b""})
    SEEN["streamed"] = True

async def ws_echo(scope, receive, send):
    if scope["type"] != "websocket":
        return
    SEEN["ws_scope"] = scope
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": "v1" if "v1" in scope["subprotocols"] else None,
                "headers": [(b"x-ws", b"1")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            SEEN["ws_disconnect"] = message["code"]
            return
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"][::-1]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"] * 2})

async def ws_refuse(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await receive()
    await send({"type": "websocket.close", "code": 1008})

def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    return [b""]

def plain_function(scope):
    return None

not_callable = 42

class Wrapper:
    """Middleware written as a plain __call__ returning the wrapped app's coroutine."""
    def __init__(self, app):
        self.app = app
    def __call__(self, scope, receive, send):
        return self.app(scope, receive, send)

wrapped = Wrapper(scope_app)
'''

SITE = """
from twisthost import ASGI, Host, Site
P = ["."]
site = Site(hosts=[Host("a.test", routes={
    "/mnt": ASGI("asgi_unit_apps:scope_app", pythonpath=P),
    "/bodyfirst": ASGI("asgi_unit_apps:body_first", pythonpath=P),
    "/none": ASGI("asgi_unit_apps:no_response", pythonpath=P),
    "/late": ASGI("asgi_unit_apps:fail_late", pythonpath=P),
    "/between": ASGI("asgi_unit_apps:fail_between", pythonpath=P),
    "/one": ASGI("asgi_unit_apps:wait_app", pythonpath=P, max_concurrency=1),
    "/small": ASGI("asgi_unit_apps:scope_app", pythonpath=P, max_body=100),
    "/disconnect": ASGI("asgi_unit_apps:disconnect_app", pythonpath=P),
    "/hang": ASGI("asgi_unit_apps:hang", pythonpath=P, request_timeout=5),
    "/stream": ASGI("asgi_unit_apps:streamer", pythonpath=P),
    "/ws": ASGI("asgi_unit_apps:ws_echo", pythonpath=P, max_message=1000),
    "/refuse": ASGI("asgi_unit_apps:ws_refuse", pythonpath=P),
    "/ping": ASGI("asgi_unit_apps:ws_echo", pythonpath=P, ping_interval=10, ping_timeout=5),
    "/wrapped": ASGI("asgi_unit_apps:wrapped", pythonpath=P),
})])
"""


class Reactor(Clock):
    """A Clock whose ``callFromThread`` queues for :meth:`pump`, run in the test's thread."""

    def __init__(self):
        super().__init__()
        self.posted: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self.posted.put((f, args, kwargs))

    def pump(self, until, timeout: float = 10.0, what: str = "the condition"):
        deadline = time.monotonic() + timeout
        while True:
            self.advance(0)  # what the reactor scheduled for its next turn (AppLoop.post's wake-up)
            value = until()
            if value:
                return value
            try:
                f, args, kwargs = self.posted.get(timeout=0.02)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {what}") from None
                continue
            f(*args, **kwargs)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asgi-unit")
    (folder / "asgi_unit_apps.py").write_text(APPS)
    reactor = Reactor()
    prepared = prepare(str(write_site(folder, SITE)), reactor=reactor)
    service = HostService(prepared, reactor=reactor)
    prepared.context.services.startService()
    import asgi_unit_apps

    yield service, reactor, asgi_unit_apps, prepared
    stopped = prepared.context.services.stopService()
    reactor.pump(lambda: stopped.called, what="the services to stop")


class Client:
    def __init__(self, site):
        self.service, self.reactor, self.apps, self.prepared = site
        self.protocol = self.service.factory.buildProtocol(PEER)
        self.protocol.channel.callLater = self.reactor.callLater
        self.transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def wait(self, predicate, what="the answer"):
        return self.reactor.pump(predicate, what=what)

    def wait_for_head(self) -> tuple[int, dict]:
        self.wait(lambda: b"\r\n\r\n" in self.transport.value(), "a response head")
        head = self.transport.value().partition(b"\r\n\r\n")[0].split(b"\r\n")
        fields: dict = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            fields.setdefault(name.strip().lower(), []).append(value.strip())
        return int(head[0].split(b" ")[1]), fields

    def body(self) -> bytes:
        return self.transport.value().partition(b"\r\n\r\n")[2]

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def http(target: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: a.test", *headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def text_of(events) -> str:
    from twisted.logger import formatEvent

    out = []
    for event in events:
        out.append(formatEvent(event))
        if event.get("log_failure") is not None:
            out.append(event["log_failure"].getTraceback())
    return "\n".join(out)


# ------------------------------------------------------------------ config


def site_with(tmp_path, target: str) -> str:
    (tmp_path / "asgi_unit_check.py").write_text(APPS)
    return f"""
        from twisthost import ASGI, Host, Site
        site = Site(hosts=[
            Host("a.test",
                 ASGI({target!r}, pythonpath=["."])),
        ])
    """


@pytest.mark.parametrize("target, words, hint", [
    ("asgi_unit_check:not_callable", "is a int, not an ASGI application", "async def app(scope, receive, send)"),
    ("asgi_unit_check:wsgi_app", "a WSGI app, not an ASGI one", "mount it with WSGI('asgi_unit_check:wsgi_app')"),
    ("asgi_unit_check:plain_function", "is a synchronous callable, not an ASGI 3 application", "ASGI 2"),
    ("asgi_unit_check:missing", "module 'asgi_unit_check' has no attribute 'missing'", ""),
])
def test_what_is_not_an_asgi_app_fails_check_at_its_line(tmp_path, target, words, hint):
    message = config_error(tmp_path, site_with(tmp_path, target), build=True)
    first = message.split("\n", 1)[0]
    assert first.startswith(f"{tmp_path / 'site.py'}:4: error: "), message
    assert words in first, message
    assert hint in message


@pytest.mark.parametrize("option, words", [
    ("lifespan='sometimes'", "ASGI(lifespan=...) must be 'auto', 'on' or 'off'"),
    ("max_concurrency=0", "ASGI(max_concurrency=...) must be in 1..inf"),
    ("request_timeout='soon'", "ASGI(request_timeout=...) expects a number"),
    ("max_mesage=10", "did you mean max_message=?"),
])
def test_bad_options_are_located_errors(tmp_path, option, words):
    message = config_error(tmp_path, f"""
        from twisthost import ASGI, Host, Site
        site = Site(hosts=[Host("a.test", ASGI("m:app", {option}))])
    """)
    assert f"{tmp_path / 'site.py'}:2: error: " in message and words in message, message


def test_check_lists_the_asgi_mount(site):
    lines = routing_table(site[3].site)
    assert any("/mnt" in line and "ASGI('asgi_unit_apps:scope_app'" in line for line in lines), lines


# ------------------------------------------------------------------ the scope and the events


def test_the_http_scope_and_the_body_in_chunks(site):
    client = Client(site)
    body = bytes(range(256)) * 600  # 153,600 bytes: three http.request events
    client.send(http("/mnt/a%20b/%E2%9C%93?x=1&y=%20", "X-Custom: Value", method="POST", body=body))
    status, headers = client.wait_for_head()
    assert status == 201 and headers[b"x-app"] == [b"yes"]
    client.wait(lambda: client.body().endswith(b"0\r\n\r\n") or b"created" in client.body())
    seen = client.apps.SEEN
    scope = seen["scope"]
    assert scope["type"] == "http" and scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1" and scope["method"] == "POST" and scope["scheme"] == "http"
    assert scope["path"] == "/mnt/a b/\u2713"
    assert scope["raw_path"] == b"/mnt/a%20b/%E2%9C%93"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == "/mnt"
    assert (b"x-custom", b"Value") in scope["headers"] and (b"host", b"a.test") in scope["headers"]
    assert all(name == name.lower() and isinstance(name, bytes) for name, _ in scope["headers"])
    assert scope["client"] == ["127.0.0.1", 50000] and scope["server"] == ["127.0.0.1", 8080]
    assert scope["state"] == {"db": "connected"}  # from the lifespan startup
    assert seen["events"] == [["http.request", CHUNK, True], ["http.request", CHUNK, True],
                              ["http.request", len(body) - 2 * CHUNK, False]]
    # After the response is complete, receive says the exchange is over.
    client.wait(lambda: "after" in seen, "the app's last receive")
    assert seen["after"] == {"type": "http.disconnect"}
    client.close()


def test_an_empty_body_is_one_event_without_more_body(site):
    client = Client(site)
    client.send(http("/mnt/"))
    assert client.wait_for_head()[0] == 201
    assert client.apps.SEEN["events"] == [["http.request", 0, False]]
    assert client.apps.SEEN["scope"]["root_path"] == "/mnt"
    client.close()


@pytest.mark.parametrize("path, words", [
    ("/bodyfirst", "http.response.body before http.response.start"),
    ("/none", "the app returned without a response"),
])
def test_a_broken_sequence_before_the_start_is_a_500(site, logged, path, words):
    client = Client(site)
    client.send(http(path))
    status, headers = client.wait_for_head()
    assert status == 500 and client.body().startswith(b"500 Internal Server Error")
    client.wait(lambda: words in text_of(logged), "the log line")
    assert "asgi_unit_apps:" in text_of(logged)  # named by the app
    client.close()


@pytest.mark.parametrize("path", ["/late", "/between"])
def test_an_error_after_the_start_aborts_the_connection(site, logged, path):
    client = Client(site)
    client.send(http(path))
    client.wait(lambda: client.transport.disconnecting, "the connection to close")
    assert b"500" not in client.transport.value().split(b"\r\n")[0]
    assert not client.body().endswith(b"0\r\n\r\n")  # no last chunk: the client sees a cut body
    assert "application error after the response started" in text_of(logged)
    client.close()


def test_the_app_hears_http_disconnect_when_the_client_leaves(site):
    client = Client(site)
    client.apps.SEEN.pop("disconnect", None)
    client.send(http("/disconnect"))
    client.wait(lambda: client.apps.SEEN.get("waiting"), "the app to wait in receive")
    assert "disconnect" not in client.apps.SEEN
    client.close()
    client.wait(lambda: "disconnect" in client.apps.SEEN, "the app to hear the disconnect")
    assert client.apps.SEEN["disconnect"] == {"type": "http.disconnect"}


# ------------------------------------------------------------------ limits


def test_max_concurrency_answers_503_with_retry_after(site):
    first, second = Client(site), Client(site)
    first.send(http("/one/a"))
    first.wait(lambda: "/one/a" in first.apps.RELEASE, "the first request to run")
    second.send(http("/one/b"))
    status, headers = second.wait_for_head()
    assert status == 503 and headers[b"retry-after"] == [b"1"]
    first.apps.RELEASE["/one/a"].set()
    assert first.wait_for_head()[0] == 200
    first.wait(lambda: b"released" in first.body())
    # The slot is free again once the task ended.
    third = Client(site)
    third.send(http("/one/c"))
    third.wait(lambda: "/one/c" in third.apps.RELEASE, "the third request to run")
    third.apps.RELEASE["/one/c"].set()
    assert third.wait_for_head()[0] == 200
    for client in (first, second, third):
        client.close()


def test_max_body_is_413_before_the_body(site):
    client = Client(site)
    client.send(b"POST /small HTTP/1.1\r\nHost: a.test\r\nContent-Length: 101\r\n\r\n")
    assert client.wait_for_head()[0] == 413
    client.close()


def test_request_timeout_is_504_with_the_tasks_stack_and_cancels_it(site, logged):
    client = Client(site)
    client.send(http("/hang"))
    reactor = client.reactor
    apploop = [s for s in site[3].context.services if getattr(s, "label", "") == "asgi_unit_apps:hang"][0]
    client.wait(lambda: client.apps.SEEN.get("hanging"), "the task to start")
    time.sleep(0.1)  # let the task reach its sleep
    reactor.advance(5.1)
    status, _ = client.wait_for_head()
    assert status == 504
    text = text_of(logged)
    assert "passed its 5s request_timeout" in text and "in hang" in text and "asyncio.sleep(3600)" in text
    client.wait(lambda: apploop.stats.active == 0, "the cancelled task to end")
    assert apploop.stats.timeouts == 1
    client.close()


def test_a_paused_transport_stops_the_apps_send(site):
    client = Client(site)
    apps = client.apps
    client.send(http("/stream"))
    client.wait_for_head()
    client.protocol.channel.pauseProducing()  # the client's socket is full
    sent = apps.SEEN["sent"]
    deadline = time.monotonic() + 0.5  # the loop keeps running meanwhile; the app's send must wait
    client.reactor.pump(lambda: time.monotonic() > deadline, timeout=2)
    assert apps.SEEN["sent"] <= sent + HIGH_WATER + 2 * 65536, (sent, apps.SEEN["sent"])
    assert "streamed" not in apps.SEEN
    client.protocol.channel.resumeProducing()
    client.wait(lambda: apps.SEEN.get("streamed"), "the stream to finish")
    client.wait(lambda: client.body().endswith(b"0\r\n\r\n"))
    assert len(client.body()) > 4 * 1024 * 1024
    client.close()


# ------------------------------------------------------------------ WebSocket


def ws_handshake(path="/ws", *extra) -> bytes:
    return http(path, "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY.decode()}",
                *extra)


def open_ws(site, *extra, path="/ws"):
    client = Client(site)
    client.send(ws_handshake(path, "Sec-WebSocket-Version: 13", *extra))
    status, headers = client.wait_for_head()
    assert status == 101, client.transport.value()
    peer = Connection(ConnectionType.CLIENT)
    rest = client.body()
    client.transport.clear()
    if rest:
        peer.receive_data(rest)
    return client, headers, peer


def ws_events(client, peer, want):
    def got():
        data = client.transport.value()
        if data:
            client.transport.clear()
            peer.receive_data(data)
            got.events += list(peer.events())
        return len(got.events) >= want
    got.events = []
    client.wait(got, "WebSocket frames")
    return got.events


def test_websocket_accept_with_subprotocol_and_headers_then_text_and_binary(site):
    client, headers, peer = open_ws(site, "Sec-WebSocket-Protocol: v0, v1")
    assert headers[b"sec-websocket-accept"] == [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]  # RFC 6455's example
    assert headers[b"sec-websocket-protocol"] == [b"v1"] and headers[b"x-ws"] == [b"1"]
    scope = client.apps.SEEN["ws_scope"]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws" and scope["subprotocols"] == ["v0", "v1"]
    assert scope["path"] == "/ws" and scope["root_path"] == "/ws"
    client.send(peer.send(TextMessage(data="hello")))
    client.send(peer.send(BytesMessage(data=b"ab")))
    events = ws_events(client, peer, 2)
    assert events[0].data == "olleh" and bytes(events[1].data) == b"abab"
    client.send(peer.send(TextMessage(data="bye")))
    (close,) = ws_events(client, peer, 1)
    assert isinstance(close, CloseConnection) and close.code == 4000 and close.reason == "bye"
    client.send(peer.send(close.response()))
    client.wait(lambda: client.transport.disconnecting, "the socket to close")
    client.close()


def test_websocket_client_close_code_reaches_the_app(site):
    client, _, peer = open_ws(site)
    client.apps.SEEN.pop("ws_disconnect", None)
    client.send(peer.send(CloseConnection(code=4321)))
    (close,) = ws_events(client, peer, 1)
    assert close.code == 4321  # the close handshake echoes it
    client.wait(lambda: client.apps.SEEN.get("ws_disconnect") == 4321, "the app's websocket.disconnect")
    client.close()


def test_an_oversize_message_closes_1009(site, logged):
    client, _, peer = open_ws(site)
    client.send(peer.send(BytesMessage(data=b"x" * 600, message_finished=False)))
    client.send(peer.send(BytesMessage(data=b"x" * 600)))  # 1200 > max_message=1000 in two fragments
    (close,) = ws_events(client, peer, 1)
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert "over max_message=1000" in text_of(logged)
    client.close()


def test_an_unmasked_client_frame_closes_1002_and_the_next_connection_is_fine(site):
    client, _, peer = open_ws(site)
    client.send(b"\x81\x05hello")  # FIN + text, no mask bit: a client must mask (RFC 6455 5.1)
    (close,) = ws_events(client, peer, 1)
    assert isinstance(close, CloseConnection) and close.code == 1002
    client.close()
    other, _, peer2 = open_ws(site)
    other.send(peer2.send(TextMessage(data="ok")))
    assert ws_events(other, peer2, 1)[0].data == "ko"
    other.close()


def test_a_malformed_frame_closes_1002(site):
    client, _, peer = open_ws(site)
    client.send(b"\x8f\x80\x00\x00\x00\x00")  # opcode 0xF is reserved
    (close,) = ws_events(client, peer, 1)
    assert close.code == 1002
    client.close()


@pytest.mark.parametrize("extra, status", [
    (("Sec-WebSocket-Version: 8",), 426),
    ((), 426),  # no version at all
])
def test_a_wrong_version_is_426_naming_13(site, extra, status):
    client = Client(site)
    client.send(ws_handshake("/ws", *extra))
    got, headers = client.wait_for_head()
    assert got == status and headers[b"sec-websocket-version"] == [b"13"]
    client.close()


def test_a_missing_or_bad_key_is_400(site):
    for key_line in ((), ("Sec-WebSocket-Key: c2hvcnQ=",)):
        client = Client(site)
        client.send(http("/ws", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                         *key_line))
        assert client.wait_for_head()[0] == 400
        client.close()


def test_close_before_accept_is_403(site):
    client = Client(site)
    client.send(ws_handshake("/refuse", "Sec-WebSocket-Version: 13"))
    status, _ = client.wait_for_head()
    assert status == 403 and b"refused the WebSocket" in client.body()
    client.close()


def test_status_rows_count_the_apps_work(site):
    rows = site[3].context.status_sources["asgi"]()
    row = [r for r in rows if r["name"] == "asgi_unit_apps:scope_app"][0]
    assert row["host"] == "a.test" and row["route"] == "/mnt" and row["max_concurrency"] == 1000
    assert row["completed"] >= 2 and row["active"] == 0
    assert ("asgi apps", True, "") in [check() for check in site[3].context.readiness]


def test_lifespan_state_is_copied_per_request(site):
    client = Client(site)
    client.send(http("/mnt/"))
    client.wait_for_head()
    scope = client.apps.SEEN["scope"]
    scope["state"]["db"] = "changed by a request"
    client.close()
    again = Client(site)
    again.send(http("/mnt/"))
    again.wait_for_head()
    assert again.apps.SEEN["scope"]["state"] == {"db": "connected"}
    again.close()


def test_concurrent_requests_interleave_on_one_loop(site):
    """Two requests held at once by the same app: its loop runs both (no thread per request)."""
    a, b = Client(site), Client(site)
    a.send(http("/mnt/x"))
    a.wait_for_head()
    threads_before = threading.active_count()
    b.send(http("/mnt/y"))
    b.wait_for_head()
    assert threading.active_count() == threads_before
    a.close()
    b.close()


def test_json_roundtrip_of_the_scope_is_possible(site):
    """What an app logs or returns of its scope is plain data (no Twisted objects leak in)."""
    client = Client(site)
    client.send(http("/mnt/q?z=1"))
    client.wait_for_head()
    scope = dict(client.apps.SEEN["scope"])
    scope["headers"] = [[n.decode(), v.decode()] for n, v in scope["headers"]]
    scope["raw_path"], scope["query_string"] = scope["raw_path"].decode(), scope["query_string"].decode()
    json.dumps(scope)
    client.close()


LIFESPAN_APPS = '''
async def no_lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        raise ValueError("only http here")  # before asking for the startup event: like Django's
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
'''


@pytest.mark.parametrize("mode, fails", [("auto", False), ("on", True), ("off", False)])
def test_an_app_without_lifespan_starts_unless_lifespan_is_on(tmp_path, mode, fails):
    from twisthost.asgi import LifespanFailed

    (tmp_path / f"asgi_unit_life_{mode}.py").write_text(LIFESPAN_APPS)
    path = write_site(tmp_path, f"""
        from twisthost import ASGI, Host, Site
        site = Site(hosts=[Host("a.test",
            ASGI("asgi_unit_life_{mode}:no_lifespan", pythonpath=["."], lifespan={mode!r}))])
    """)
    reactor = Reactor()
    prepared = prepare(str(path), reactor=reactor)
    services = prepared.context.services
    if fails:
        with pytest.raises(LifespanFailed) as failed:
            services.startService()
        assert str(failed.value).startswith(f"{path}:3: error: ASGI('asgi_unit_life_on:no_lifespan'): "
                                            "lifespan startup failed: the app raised ValueError: only http here")
        return
    services.startService()
    try:
        (apploop,) = [s for s in services if hasattr(s, "lifespan")]
        assert apploop.ready and (mode == "off") == (apploop.lifespan is None)
    finally:
        stopped = services.stopService()
        reactor.pump(lambda: stopped.called, what="the services to stop")


def test_keepalive_pings_and_a_missing_pong_closes_1011(site, logged):
    from wsproto.events import Ping

    client, _, peer = open_ws(site, path="/ping")
    client.reactor.advance(10)
    (ping,) = ws_events(client, peer, 1)
    assert isinstance(ping, Ping)
    client.send(peer.send(ping.response()))  # answered: the next ping goes out, no close
    client.reactor.advance(10)
    (ping,) = ws_events(client, peer, 1)
    assert isinstance(ping, Ping)
    client.reactor.advance(10)  # unanswered for 10 s > ping_timeout=5
    (close,) = ws_events(client, peer, 1)
    assert isinstance(close, CloseConnection) and close.code == 1011
    assert "no pong" in text_of(logged)
    client.close()


def test_client_pings_are_answered(site):
    from wsproto.events import Ping, Pong

    client, _, peer = open_ws(site)
    client.send(peer.send(Ping(payload=b"are you there")))
    (pong,) = ws_events(client, peer, 1)
    assert isinstance(pong, Pong) and bytes(pong.payload) == b"are you there"
    client.close()


def test_a_trusted_proxy_sets_client_and_scheme(tmp_path):
    (tmp_path / "asgi_unit_proxied.py").write_text(APPS)
    path = write_site(tmp_path, """
        from twisthost import ASGI, Host, Site
        site = Site(trusted_proxies=["127.0.0.1"],
                    hosts=[Host("a.test", ASGI("asgi_unit_proxied:scope_app", pythonpath=["."]))])
    """)
    reactor = Reactor()
    prepared = prepare(str(path), reactor=reactor)
    prepared.context.services.startService()
    import asgi_unit_proxied

    try:
        client = Client((HostService(prepared, reactor=reactor), reactor, asgi_unit_proxied, prepared))
        client.send(http("/", "X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https"))
        assert client.wait_for_head()[0] == 201
        scope = asgi_unit_proxied.SEEN["scope"]
        assert scope["client"] == ["203.0.113.9", 0] and scope["scheme"] == "https"
        client.close()
    finally:
        stopped = prepared.context.services.stopService()
        reactor.pump(lambda: stopped.called, what="the services to stop")


def test_a_sync_callable_returning_the_coroutine_is_accepted(site):
    """(scope, receive, send) without async: middleware that returns the inner app's coroutine."""
    client = Client(site)
    client.send(http("/wrapped/x"))
    assert client.wait_for_head()[0] == 201
    assert client.apps.SEEN["scope"]["root_path"] == "/wrapped"
    client.close()
