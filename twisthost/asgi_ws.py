"""WebSocket (RFC 6455) over HTTP/1.1 for ASGI apps, framed by ``wsproto``.

The handshake is judged by the reactor before the app hears of it (a bad
version is 426, a missing or malformed ``Sec-WebSocket-Key`` 400).  The app
then gets ``websocket.connect``; its ``websocket.accept`` makes the reactor
answer ``101 Switching Protocols`` and take the connection over with
``HostChannel.upgrade`` (HTTP/1.1 only: HTTP/2's extended CONNECT, RFC 8441,
is not supported yet); a ``websocket.close`` before that is a 403.

From the upgrade on, a :class:`WebSocketSession` is the connection's
protocol: ``wsproto.Connection`` turns bytes into events.  Messages go to the
app's loop through ``AppLoop.post`` (``call_soon_threadsafe``); reading stops while more than
``INPUT_HIGH`` bytes wait for the app's ``receive`` (TCP then pushes back on
the client).  A message bigger than ``max_message`` closes with 1009, a
malformed or unmasked frame with 1002 (wsproto's verdict); neither touches
anything but that connection.  The app's ``send`` waits while the transport
is paused or ``HIGH_WATER`` bytes are posted but unwritten, as for HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token
from zope.interface import implementer

from .asgi import HIGH_WATER, ClientDisconnected
from .pages import write_error
from .request import http_date

log = Logger()

#: Bytes of received messages waiting for the app's ``receive`` beyond which reading stops.
INPUT_HIGH = 1 << 20
#: Seconds the client has to answer our close frame before the socket is closed anyway.
CLOSE_GRACE = 5.0


def can_upgrade(request) -> bool:
    """Only an HTTP/1.1 connection can leave HTTP (not an HTTP/2 stream)."""
    return request.clientproto == b"HTTP/1.1" and hasattr(request.channel, "upgrade")


def handshake_problem(request) -> tuple[int, str] | None:
    """What is wrong with a WebSocket opening handshake (RFC 6455 4.2.1), if anything."""
    if request.method != b"GET":
        return 400, "A WebSocket handshake must be a GET."
    versions = request.requestHeaders.getRawHeaders(b"sec-websocket-version") or []
    if versions != [b"13"]:
        return 426, "Only WebSocket version 13 is supported."
    keys = request.requestHeaders.getRawHeaders(b"sec-websocket-key") or []
    if len(keys) != 1:
        return 400, "The WebSocket handshake needs one Sec-WebSocket-Key."
    try:
        if len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        return 400, "Sec-WebSocket-Key must be 16 bytes in base64."
    return None


def start_websocket(resource, request):
    """``render`` of a WebSocket request: judge the handshake, then start the app's task."""
    if not can_upgrade(request):
        # HTTP/1.0, or an HTTP/2 stream: the request goes to the app as plain HTTP.
        from .asgi import HTTPCycle

        stats = resource.apploop.stats
        stats.accepted += 1
        stats.active += 1
        HTTPCycle(resource, request, resource.scope(request, "http")).start()
        return NOT_DONE_YET
    problem = handshake_problem(request)
    if problem is not None:
        status, detail = problem
        log.info("ASGI({target!r}): refused WebSocket handshake from {peer}: {detail}",
                 target=resource.config.target, peer=str(request.getClientAddress()), detail=detail)
        if status == 426:
            request.setHeader(b"sec-websocket-version", b"13")
        return write_error(request, status, detail)
    stats = resource.apploop.stats
    stats.accepted += 1
    stats.active += 1
    WebSocketCycle(resource, request, resource.scope(request, "websocket")).start()
    return NOT_DONE_YET


@implementer(IPushProducer)
class WebSocketCycle(Protocol):
    """One WebSocket: the ASGI side (in the loop) and, after the upgrade, the connection's protocol.

    Loop side: ``accepted``, ``app_closed``, ``posted``, ``waiting``, the
    ``incoming`` deque (appended to only by the loop, from ``_deliver``).
    Reactor side: ``upgraded``, ``written``, ``paused``, ``gone_code``,
    ``finished``.
    """

    task = None
    changed: asyncio.Event | None = None
    connection: Connection | None = None
    close_timer = None
    ping_call = None

    def __init__(self, resource, request, scope: dict):
        self.resource = resource
        self.config = resource.config
        self.apploop = resource.apploop
        self.mailbox = resource.apploop.mailbox
        self.request = request
        self.scope = scope
        # loop side
        self.connect_sent = False
        self.accepted = False
        self.app_closed = False
        self.incoming: collections.deque = collections.deque()
        self.posted = 0
        self.waiting = False
        # reactor side
        self.upgraded = False
        self.written = 0
        self.paused = False
        self.gone_code: int | None = None  # set once the client is gone: the close code the app hears
        self.gone_reason = ""
        self.finished = False
        self.unread = 0  # bytes delivered to the loop the app has not received yet
        self.reading_paused = False
        self.fragments: list = []
        self.fragment_size = 0
        self.awaiting_pong = None  # reactor seconds when the unanswered ping went out

    # -- reactor: before the upgrade

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._left_before_upgrade)
        self.apploop.submit(self._create_task)

    def _left_before_upgrade(self, _failure) -> None:
        if not self.upgraded:
            self._gone(1006, "")

    def _accept(self, subprotocol, headers) -> None:
        """The app accepted: answer 101 and take the connection over."""
        request = self.request
        if self.finished or self.gone_code is not None or request._disconnected:
            return
        channel = request.channel
        key = request.requestHeaders.getRawHeaders(b"sec-websocket-key")[0]
        lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                 b"Sec-WebSocket-Accept: " + generate_accept_token(key)]
        if subprotocol:
            lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1"))
        server = channel.site.config.server_header if hasattr(channel, "site") else None
        if server:
            lines.append(b"Server: " + server.encode("latin-1"))
        lines.append(b"Date: " + http_date())
        for name, value in headers:
            if name.lower() not in (b"upgrade", b"connection", b"sec-websocket-accept",
                                    b"sec-websocket-protocol", b"server", b"date"):
                lines.append(bytes(name) + b": " + bytes(value))
        self.upgraded = True
        self.connection = Connection(ConnectionType.SERVER)
        request.code = 101
        self.apploop.stats.websockets += 1
        self.apploop.websockets.add(self)
        early = channel.upgrade(self)  # calls makeConnection: self.transport is the client's
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        channel.registerProducer(self, True)  # the channel stays the transport's producer
        interval = self.config.ping_interval
        if interval:
            from twisted.internet.task import LoopingCall

            self.ping_call = LoopingCall(self._ping)
            self.ping_call.clock = self.resource.reactor
            self.ping_call.start(interval, now=False)
        if early:
            self.dataReceived(early)

    def _reject(self) -> None:
        """``websocket.close`` before accept: 403 (``websocket.http.response`` is not supported yet)."""
        if self.finished or self.upgraded:
            return
        self.finished = True
        request = self.request
        if not request._disconnected:
            body = write_error(request, 403, "The application refused the WebSocket.")
            if body:
                request.write(body)
            request.finish()

    def _not_accepted(self, failure) -> None:
        """The app raised, or returned, before accept or close: 500 (as uvicorn)."""
        if self.finished or self.upgraded:
            return
        if failure is not None:
            self._log(failure, "application error before the WebSocket was accepted")
        else:
            log.error("ASGI({target!r}): the app returned without accepting or closing the WebSocket ({path})",
                      target=self.config.target, path=self.scope["path"])
        self.finished = True
        request = self.request
        if not request._disconnected:
            body = write_error(request, 500, "")
            if body:
                request.write(body)
            request.finish()

    # -- reactor: the WebSocket connection (a Protocol after the upgrade)

    def dataReceived(self, data: bytes) -> None:
        if self.finished:
            return
        connection = self.connection
        try:
            connection.receive_data(data)
        except LocalProtocolError:
            return  # closed already
        for event in connection.events():
            if self.finished:
                return
            if isinstance(event, (TextMessage, BytesMessage)):
                self._fragment(event)
            elif isinstance(event, Ping):
                self._send_frame(event.response())
            elif isinstance(event, Pong):
                self.awaiting_pong = None
            elif isinstance(event, CloseConnection):
                self._closed_by_peer(event)

    def _fragment(self, event) -> None:
        self.fragment_size += len(event.data) if isinstance(event, BytesMessage) else len(event.data.encode("utf-8"))
        if self.fragment_size > self.config.max_message:
            log.info("ASGI({target!r}): WebSocket message over max_message={limit} bytes from {peer}; closing 1009",
                     target=self.config.target, limit=self.config.max_message, peer=str(self.transport.getPeer()))
            self.fragments, self.fragment_size = [], 0
            self._close(1009, "message too big")
            return
        self.fragments.append(event.data)
        if not event.message_finished:
            return
        parts, size = self.fragments, self.fragment_size
        self.fragments, self.fragment_size = [], 0
        if isinstance(event, TextMessage):
            message = {"type": "websocket.receive", "text": "".join(parts)}
        else:
            message = {"type": "websocket.receive", "bytes": b"".join(parts)}
        self.unread += size
        if self.unread > INPUT_HIGH and not self.reading_paused:
            self.reading_paused = True
            self.transport.pauseProducing()
        self._to_loop(self._deliver, message, size)

    def _consumed(self, size: int) -> None:
        self.unread -= size
        if self.reading_paused and self.unread <= INPUT_HIGH // 2 and not self.finished:
            self.reading_paused = False
            self.transport.resumeProducing()

    def _closed_by_peer(self, event: CloseConnection) -> None:
        connection = self.connection
        if connection.state is ConnectionState.REMOTE_CLOSING:
            self._send_frame(event.response())  # the close handshake: echo the code
            self._end(event.code, event.reason or "")
        elif connection.state is ConnectionState.CLOSED:  # the answer to our close
            self._end(event.code, event.reason or "")
        else:
            # wsproto could not parse what the client sent (ParseFailed): 1002, 1007...
            log.info("ASGI({target!r}): WebSocket protocol error from {peer}: {reason}; closing {code}",
                     target=self.config.target, peer=str(self.transport.getPeer()),
                     reason=event.reason, code=event.code)
            self._close(event.code, "protocol error")

    def _close(self, code: int, reason: str) -> None:
        """Send our close frame; the socket closes when the client answers or after CLOSE_GRACE."""
        if self.connection.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            self._send_frame(CloseConnection(code=code, reason=reason or None))
        if self.gone_code is None:
            self._gone(code, reason)
        if self.close_timer is None and self.transport is not None:
            self.close_timer = self.resource.reactor.callLater(CLOSE_GRACE, self._end, code, reason)
        if self.connection.state is ConnectionState.CLOSED:
            self._end(code, reason)

    def _end(self, code: int, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._gone(code, reason)
        if self.close_timer is not None and self.close_timer.active():
            self.close_timer.cancel()
        if self.transport is not None:
            self.transport.loseConnection()

    def _send_frame(self, event) -> None:
        try:
            data = self.connection.send(event)
        except LocalProtocolError:
            return
        if data and self.transport is not None:
            self.transport.write(data)

    def _send_message(self, data) -> None:
        if self.finished:
            return
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self._send_frame(event)
        self.written += len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        if self.waiting:
            self._poke()

    def _app_close(self, code: int, reason: str) -> None:
        if not self.upgraded:
            self._reject()
        elif not self.finished:
            self._close(code, reason)

    def _app_done(self, failure) -> None:
        """The app's task ended: free its slot; close a WebSocket it left open."""
        stats = self.apploop.stats
        stats.active -= 1
        stats.completed += 1
        if not self.upgraded:
            if not self.finished and not self.app_closed:
                self._not_accepted(failure)
            return
        if failure is not None:
            self._log(failure, "application error on an open WebSocket; closing 1011")
            if not self.finished:
                self._close(1011, "internal error")
        elif not self.finished:
            self._close(1000, "")

    def _ping(self) -> None:
        if self.finished:
            return
        now = self.resource.reactor.seconds()
        if self.awaiting_pong is not None and now - self.awaiting_pong > self.config.ping_timeout:
            log.info("ASGI({target!r}): no pong from {peer} within {timeout}s; closing 1011",
                     target=self.config.target, peer=str(self.transport.getPeer()), timeout=self.config.ping_timeout)
            self._close(1011, "keepalive ping timeout")
            return
        if self.awaiting_pong is None:
            self.awaiting_pong = now
        self._send_frame(Ping(payload=b"twisthost"))

    def going_away(self) -> None:
        if not self.finished:
            self._close(1001, "server shutting down")

    def connectionLost(self, reason=None) -> None:
        self.apploop.websockets.discard(self)
        if self.ping_call is not None and self.ping_call.running:
            self.ping_call.stop()
        if self.close_timer is not None and self.close_timer.active():
            self.close_timer.cancel()
        if self.upgraded and self.apploop.stats.websockets > 0:
            self.apploop.stats.websockets -= 1
            request = self.request
            request.sentLength = self.written
            try:
                request.site.log(request)  # a 101 in the access log once the WebSocket is over
            except Exception:
                log.failure("logging a WebSocket request failed")
        self.finished = True
        self._gone(1006 if self.gone_code is None else self.gone_code, self.gone_reason)
        self.transport = None

    def _gone(self, code: int, reason: str) -> None:
        """The app hears ``websocket.disconnect`` (once) with ``code``."""
        if self.gone_code is not None:
            return
        self.gone_code, self.gone_reason = code, reason or ""
        self._poke()

    def _log(self, failure, what: str) -> None:
        log.failure("ASGI({target!r}): {what} ({path})", failure, target=self.config.target, what=what,
                    path=self.scope["path"])

    def _to_loop(self, f, *args) -> None:
        self.apploop.post(f, *args)

    def _poke(self) -> None:
        self._to_loop(self._set_changed)

    # IPushProducer: the channel passes the transport's pause/resume on

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.waiting:
            self._poke()

    def stopProducing(self) -> None:
        self._gone(1006, "")

    # -- the loop's thread

    def _set_changed(self) -> None:
        if self.changed is not None:
            self.changed.set()

    def _deliver(self, message: dict, size: int) -> None:
        self.incoming.append((message, size))
        self.changed.set()

    def _create_task(self) -> None:
        self.changed = asyncio.Event()
        self.task = self.apploop.loop.create_task(self._run())

    async def _run(self) -> None:
        failure = None
        try:
            await self.apploop.app(self.scope, self.receive, self.send)
        except (ClientDisconnected, asyncio.CancelledError):
            pass
        except Exception:
            failure = Failure()
        finally:
            self.mailbox.post(self._app_done, failure)

    async def _wait(self) -> None:
        self.changed.clear()
        await self.changed.wait()

    async def receive(self) -> dict:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while not self.incoming and self.gone_code is None:
            self.changed.clear()
            if not self.incoming and self.gone_code is None:
                await self.changed.wait()
        if self.incoming:
            message, size = self.incoming.popleft()
            self.mailbox.post(self._consumed, size)
            return message
        return {"type": "websocket.disconnect", "code": self.gone_code, "reason": self.gone_reason}

    async def send(self, message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "websocket.accept":
            if self.accepted or self.app_closed:
                raise RuntimeError("ASGI: websocket.accept after the WebSocket was accepted or closed")
            if self.gone_code is not None:
                raise ClientDisconnected("the client left")
            headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
                raise RuntimeError(f"ASGI: websocket.accept subprotocol {subprotocol!r} was not offered "
                                   f"by the client ({self.scope['subprotocols']})")
            self.accepted = True
            self.mailbox.post(self._accept, subprotocol, headers)
        elif kind == "websocket.send":
            if not self.accepted:
                raise RuntimeError("ASGI: websocket.send before websocket.accept")
            if self.app_closed:
                raise RuntimeError("ASGI: websocket.send after websocket.close")
            text, data = message.get("text"), message.get("bytes")
            if (text is None) == (data is None):
                raise TypeError("ASGI: websocket.send needs exactly one of 'text' and 'bytes'")
            payload = text if text is not None else bytes(data)
            size = len(payload) if text is None else len(payload.encode("utf-8"))
            while (self.paused or self.posted - self.written > HIGH_WATER) and self.gone_code is None:
                self.waiting = True
                self.changed.clear()
                if (self.paused or self.posted - self.written > HIGH_WATER) and self.gone_code is None:
                    await self.changed.wait()
                self.waiting = False
            if self.gone_code is not None:
                raise ClientDisconnected("the client left")
            self.posted += size
            self.mailbox.post(self._send_message, payload)
        elif kind == "websocket.close":
            if self.app_closed:
                raise RuntimeError("ASGI: websocket.close sent twice")
            self.app_closed = True
            code = message.get("code", 1000) or 1000
            self.mailbox.post(self._app_close, int(code), message.get("reason") or "")
        else:
            raise RuntimeError(f"ASGI: unexpected message type {kind!r} on a websocket scope")
