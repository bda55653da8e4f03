"""ASGI mounts: each app on an asyncio event loop of its own, in a thread of its own.

The isolation design (docs/asgi.md): the reactor thread never runs app code.
Each ``ASGI(...)`` mount gets an :class:`AppLoop`, a ``twisted.application``
service that owns one thread running one asyncio loop (uvloop's when it is
installed).  A coroutine that blocks that loop (``time.sleep`` in
``async def``, a synchronous database driver) stalls that app only; static
files, WSGI pools, the proxy and other ASGI apps go on, since they are served
by the reactor thread or threads of their own.

Hand-offs between the threads are bounded and cheap:

- reactor -> loop: :meth:`AppLoop.post` (start a task, a client that
  left, room to write again, a WebSocket message): one
  ``loop.call_soon_threadsafe`` per reactor turn, however many calls.  At most
  ``max_concurrency`` tasks exist per app: the next request gets 503 +
  Retry-After at once, as a full WSGI queue does;
- loop -> reactor: the app's ``send`` posts to a
  :class:`~.threadpools.ReactorMailbox` (one reactor wake-up per batch); it
  awaits while the transport is paused (the exchange is the request's push
  producer) or more than ``HIGH_WATER`` bytes are posted but unwritten, so a
  slow reader never makes us buffer a big response.

The request is a ``twisted.web`` request as for every service: its body was
read (and limited, ``max_body``, see :mod:`twisthost.bodylimit`) by the
reactor, and goes to the app as ``http.request`` events of ``CHUNK`` bytes.
WebSocket requests (HTTP/1.1) are handed to :mod:`twisthost.asgi_ws`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import sys
import threading
import traceback
from urllib.parse import unquote

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .errors import ConfigError
from .forwarded import resolve_client
from .importing import resolve
from .pages import write_error
from .threadpools import ReactorMailbox
from .wsgi import is_async

log = Logger()

#: Bytes the app may have sent that the reactor has not written yet before its ``send`` waits.
HIGH_WATER = 256 * 1024
#: Size of the ``http.request`` events the request body is delivered in.
CHUNK = 64 * 1024
#: Response headers whose value from the app replaces Twisted's default instead of adding to it.
_REPLACED = frozenset((b"server", b"date"))
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
LIFESPAN_VERSION = {"version": "3.0", "spec_version": "2.0"}


class ClientDisconnected(OSError):
    """``send`` after the client left (or the deadline passed): what uvicorn raises too."""


class LifespanFailed(Exception):
    """The app's lifespan startup failed; the message names the app."""


def new_event_loop():
    """uvloop's loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# ----------------------------------------------------------------- building


def build_asgi(config, context) -> "ASGIResource":
    app = resolve(config, config.target, config.pythonpath)
    check_app(config, app)
    loop = AppLoop(config, app, context.reactor)
    loop.setServiceParent(context.services)
    return ASGIResource(app, loop, config, context)


def check_app(config, app) -> None:
    """An ASGI 3 app is an async callable ``app(scope, receive, send)``: say what else it is."""
    if not callable(app):
        raise ConfigError(
            f"ASGI({config.target!r}) is a {type(app).__name__}, not an ASGI application",
            config.where,
            "point at the callable 'async def app(scope, receive, send)', or a factory with '()'",
        )
    if is_async(app) or _positional(app) == ["scope", "receive", "send"]:
        return  # the second: a plain function or object returning the awaitable (middleware does)
    if _looks_wsgi(app):
        raise ConfigError(
            f"ASGI({config.target!r}) is a synchronous callable taking (environ, start_response): "
            "a WSGI app, not an ASGI one",
            config.where,
            f"mount it with WSGI({config.target!r}) instead",
        )
    raise ConfigError(
        f"ASGI({config.target!r}) is a synchronous callable, not an ASGI 3 application "
        "(an 'async def app(scope, receive, send)', or an object whose __call__ is async)",
        config.where,
        "ASGI 2 apps (a class called with the scope) can be wrapped with "
        "asgiref.compatibility.guarantee_single_callable",
    )


def _positional(app) -> list:
    """The names of ``app``'s positional parameters ([] when they cannot be known)."""
    try:
        parameters = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _looks_wsgi(app) -> bool:
    names = _positional(app)
    return len(names) == 2 or names[:2] == ["environ", "start_response"]


# ----------------------------------------------------------------- the loop


class AppStats:
    """Numbers of one ASGI app, for /status and /metrics; written in the reactor thread."""

    def __init__(self, name: str, max_concurrency: int):
        self.name = name
        self.max_concurrency = max_concurrency
        self.active = 0  # tasks running (HTTP requests and WebSockets)
        self.accepted = 0
        self.completed = 0
        self.rejected = 0  # 503s: max_concurrency reached
        self.timeouts = 0  # 504s: request_timeout passed
        self.websockets = 0  # open WebSocket connections


class AppLoop(Service):
    """One app's event loop and thread; runs the lifespan protocol at start and stop."""

    loop = None
    thread = None

    def __init__(self, config, app, reactor):
        self.config = config
        self.app = app
        self.label = config.target  # not `name`: MultiService wants service names unique
        self.reactor = reactor
        self.mailbox = ReactorMailbox(reactor)
        self.stats = AppStats(config.target, config.max_concurrency)
        self.state: dict = {}  # the lifespan's state, copied into each request's scope
        self.lifespan = None
        self.ready = False
        self.websockets: set = set()  # open WebSocketCycles (reactor side), closed 1001 at stop
        self._to_loop: collections.deque = collections.deque()  # see post()
        self._wake_due = False
        self._shutdown_trigger = None

    # -- start

    def startService(self) -> None:
        """Start the thread and its loop, then run the lifespan startup and wait for it.

        This runs before the listeners open (``HostService.startService``
        starts the built services first), so no request reaches an app whose
        startup has not completed.  A failed startup raises
        :class:`LifespanFailed`, which stops twistd with status 1.
        """
        super().startService()
        started = threading.Event()

        def run() -> None:
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            started.set()
            try:
                loop.run_forever()
                _cancel_pending(loop)
            finally:
                loop.close()

        self.thread = threading.Thread(target=run, name=f"asgi-{self.label}", daemon=True)
        self.thread.start()
        started.wait()
        if self.config.lifespan != "off":
            self.lifespan = Lifespan(self)
            future = asyncio.run_coroutine_threadsafe(self.lifespan.startup(), self.loop)
            try:
                problem = future.result(self.config.lifespan_timeout)
            except concurrent.futures.TimeoutError:
                problem = f"did not complete within lifespan_timeout={self.config.lifespan_timeout:g}s"
            if problem is not None:
                self._stop_loop()
                where = self.config.where
                place = f"{where.filename}:{where.line}: " if where is not None else ""
                message = f"{place}error: ASGI({self.config.target!r}): lifespan startup failed: {problem}"
                log.error("{message}", message=message)
                raise LifespanFailed(message)
        self.ready = True
        add_trigger = getattr(self.reactor, "addSystemEventTrigger", None)
        if add_trigger is not None:
            # Before the site's graceful drain, which would otherwise wait on open WebSockets
            # until graceful_timeout and then cut them without a close frame.
            self._shutdown_trigger = add_trigger("before", "shutdown", self.going_away)

    def going_away(self) -> None:
        """The process is stopping: close every open WebSocket with 1001 (going away)."""
        for websocket in list(self.websockets):
            websocket.going_away()

    def submit(self, starter) -> None:
        """Run ``starter()`` in the loop's thread (it creates the task)."""
        self.post(starter)

    def post(self, f, *args) -> None:
        """Run ``f(*args)`` in the loop's thread; called from the reactor thread only.

        Calls posted in one reactor turn share one wake-up of the loop
        (``call_soon_threadsafe`` writes to the loop's self-pipe each time),
        made once the reactor has handled the events of the turn: woken at
        once, the loop's thread would take the GIL from the reactor at each
        of its socket calls (the same reasoning as ``WorkerPool.submit``).
        """
        self._to_loop.append((f, args))
        if not self._wake_due:
            self._wake_due = True
            self.reactor.callLater(0, self._wake)

    def _wake(self) -> None:
        loop = self.loop
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: stopping, nothing more runs there
            self._wake_due = False
            self._to_loop.clear()

    def _drain(self) -> None:
        """In the loop's thread: run what the reactor posted."""
        self._wake_due = False  # before popping: a post from now on schedules a new wake-up
        calls = self._to_loop
        while calls:
            f, args = calls.popleft()
            try:
                f(*args)
            except Exception:
                self.mailbox.post(lambda failure=Failure(): log.failure(
                    "ASGI({target!r}): error in a hand-off to the loop", failure, target=self.label))

    # -- stop

    def stopService(self) -> defer.Deferred:
        """Run the lifespan shutdown (up to ``lifespan_timeout``), then stop the loop."""
        super().stopService()
        self.ready = False
        if self._shutdown_trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):  # fired already
                pass
            self._shutdown_trigger = None
        done: defer.Deferred = defer.Deferred()
        loop = self.loop
        if loop is None or loop.is_closed():
            done.callback(None)
            return done

        def finished(future) -> None:
            try:
                problem = future.result()
            except Exception as error:
                problem = repr(error)
            if problem:
                self.mailbox.post(lambda: log.error("ASGI({target!r}): lifespan shutdown failed: {problem}",
                                                    target=self.label, problem=problem))
            self.mailbox.post(fire)

        def fire() -> None:
            if timer.active():
                timer.cancel()
            self._stop_loop()
            if not done.called:
                done.callback(None)

        def give_up() -> None:
            log.warn("ASGI({target!r}): lifespan shutdown did not finish within {timeout}s; the loop's "
                     "thread is at:\n{stack}", target=self.label, timeout=self.config.lifespan_timeout,
                     stack=self.thread_stack())
            self._stop_loop()
            if not done.called:
                done.callback(None)

        timer = self.reactor.callLater(self.config.lifespan_timeout + 0.5, give_up)
        if self.lifespan is not None and self.lifespan.supported:
            asyncio.run_coroutine_threadsafe(self.lifespan.shutdown(), loop).add_done_callback(finished)
        else:
            self.mailbox.post(fire)
        return done

    def _stop_loop(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # closed meanwhile
                pass

    # -- what a stuck task is doing

    def thread_stack(self) -> str:
        frame = sys._current_frames().get(self.thread.ident) if self.thread is not None else None
        return "".join(traceback.format_stack(frame)) if frame is not None else "(not running)"

    def task_stack(self, task) -> str:
        """Where ``task`` is: the loop thread's stack when the task is running (blocking the
        loop), else the chain of coroutines it awaits."""
        if task is None:
            return "(not started yet: the loop has not picked the request up; is it blocked?)\n" \
                "the loop's thread is at:\n" + self.thread_stack()
        try:
            running = asyncio.current_task(self.loop) is task
        except RuntimeError:
            running = False
        if running:
            return "(running, blocking the loop)\n" + self.thread_stack()
        frames = []
        coro = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                frames.append(frame)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        lines = []
        for frame in frames:
            lines += traceback.format_stack(frame, limit=1)
        return "(suspended, awaiting)\n" + "".join(lines)


def _cancel_pending(loop) -> None:
    """Cancel the tasks still running when the loop stops (requests a stop cut short, open
    WebSockets) and give them a second to unwind, so none is destroyed while pending."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not pending:
        return
    for task in pending:
        task.cancel()
    try:
        loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
    except Exception:
        pass
    for task in pending:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at close


class Lifespan:
    """The ``lifespan`` scope: one task for the life of the app (runs in the loop)."""

    def __init__(self, apploop: AppLoop):
        self.apploop = apploop
        self.supported = True
        self.task = None
        self.incoming: asyncio.Queue | None = None
        self.startup_done: asyncio.Future | None = None
        self.shutdown_done: asyncio.Future | None = None
        self.phase = "startup"
        # 'auto': an app that raises before it asked for the startup event does not speak
        # lifespan (Django's handler); one that raises after it failed its startup.
        self.asked = False

    async def startup(self) -> str | None:
        """None when started (or lifespan unsupported in 'auto' mode), else what went wrong."""
        loop = asyncio.get_running_loop()
        self.incoming = asyncio.Queue()
        self.startup_done, self.shutdown_done = loop.create_future(), loop.create_future()
        self.incoming.put_nowait({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": dict(LIFESPAN_VERSION), "state": self.apploop.state}
        self.task = loop.create_task(self._run(scope))
        return await self.startup_done

    async def shutdown(self) -> str | None:
        self.phase = "shutdown"
        self.incoming.put_nowait({"type": "lifespan.shutdown"})
        return await self.shutdown_done

    async def _run(self, scope) -> None:
        config = self.apploop.config
        try:
            await self.apploop.app(scope, self.receive, self.send)
        except BaseException as error:  # CancelledError too: the app is gone either way
            if not self.startup_done.done():
                if config.lifespan == "auto" and not self.asked:
                    self.supported = False
                    text = _one_line(error)
                    self.apploop.mailbox.post(lambda: log.info(
                        "ASGI({target!r}) does not support the lifespan protocol ({error}); "
                        "starting without it", target=config.target, error=text))
                    self.startup_done.set_result(None)
                else:
                    self.startup_done.set_result("the app raised " + _format(error))
            elif not self.shutdown_done.done():
                self.shutdown_done.set_result("the app raised " + _format(error))
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            # Returned: done with lifespan. Before a startup answer that means no support.
            if not self.startup_done.done():
                self.supported = False
                self.startup_done.set_result(None)
            if not self.shutdown_done.done():
                self.shutdown_done.set_result(None)

    async def receive(self):
        self.asked = True
        return await self.incoming.get()

    async def send(self, message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "lifespan.startup.complete" and not self.startup_done.done():
            self.startup_done.set_result(None)
        elif kind == "lifespan.startup.failed" and not self.startup_done.done():
            self.startup_done.set_result(message.get("message") or "lifespan.startup.failed")
        elif kind == "lifespan.shutdown.complete" and not self.shutdown_done.done():
            self.shutdown_done.set_result(None)
        elif kind == "lifespan.shutdown.failed" and not self.shutdown_done.done():
            self.shutdown_done.set_result(message.get("message") or "lifespan.shutdown.failed")
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {message!r} during {self.phase}")


def _one_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()


def _format(error: BaseException) -> str:
    return _one_line(error) + "\n" + "".join(traceback.format_exception(type(error), error, error.__traceback__))


# ----------------------------------------------------------------- the resource


class ASGIResource(Resource):
    """The resource for one ``ASGI(...)`` mount: admission, scope, hand-off."""

    isLeaf = True

    def __init__(self, app, apploop: AppLoop, config, context):
        super().__init__()
        self.app = app
        self.apploop = apploop
        self.pool = None  # not a WSGI pool (sources.pool_mounts looks for one)
        self.config = config
        self.reactor = context.reactor
        self.networks = context.site.trusted_proxies
        self.max_body = config.max_body  # read by twisthost.bodylimit before the body
        self.body_spool = config.body_spool

    def render(self, request):
        stats = self.apploop.stats
        if not self.apploop.ready:
            request.setHeader(b"retry-after", b"1")
            return write_error(request, 503, "The application is not running.")
        if stats.active >= stats.max_concurrency:
            stats.rejected += 1
            request.setHeader(b"retry-after", b"1")
            return write_error(request, 503, "The application is busy; retry shortly.")
        if self.config.websocket and is_websocket(request):
            from .asgi_ws import start_websocket

            return start_websocket(self, request)
        stats.accepted += 1
        stats.active += 1
        HTTPCycle(self, request, self.scope(request, "http")).start()
        return NOT_DONE_YET

    def scope(self, request, kind: str) -> dict:
        """The ASGI connection scope for ``request``; built in the reactor thread."""
        client = resolve_client(request, self.networks)
        uri = request.uri
        raw_path, _, query = uri.partition(b"?")
        if raw_path[:1] != b"/":  # absolute-form target: http://host/path
            rest = raw_path.partition(b"://")[2]
            raw_path = b"/" + rest.partition(b"/")[2] if rest else b"/"
        prepath = request.prepath
        root_path = ("/" + b"/".join(prepath).decode("utf-8", "replace")) if prepath else ""
        peer = request.getClientAddress()
        local = request.getHost()
        version = request.clientproto.decode("latin-1").partition("/")[2] or "1.0"
        headers = [(name.lower(), value) for name, values in request.requestHeaders.getAllRawHeaders()
                   for value in values]
        scheme = client.scheme
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        scope = {
            "type": kind,
            "asgi": dict(ASGI_VERSION),
            "http_version": "2" if version.startswith("2") else version,
            "scheme": scheme,
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": root_path,
            "headers": headers,
            # The peer's port, unless a trusted proxy reported another client (its port is unknown).
            "client": [client.addr, getattr(peer, "port", 0) if client.addr == getattr(peer, "host", None) else 0]
            if client.addr else None,
            "server": [str(getattr(local, "host", "")), getattr(local, "port", None)]
            if getattr(local, "host", None) else None,
            "state": dict(self.apploop.state),
            "extensions": {},
        }
        if kind == "http":
            scope["method"] = request.method.decode("latin-1")
        else:
            protocols = request.requestHeaders.getRawHeaders(b"sec-websocket-protocol") or []
            scope["subprotocols"] = [p.strip().decode("latin-1") for value in protocols
                                     for p in value.split(b",") if p.strip()]
        return scope


def is_websocket(request) -> bool:
    """An ``Upgrade: websocket`` request (RFC 6455 4.1); the handshake is judged later."""
    upgrade = request.requestHeaders.getRawHeaders(b"upgrade") or []
    if not any(b"websocket" in value.lower() for value in upgrade):
        return False
    connection = request.requestHeaders.getRawHeaders(b"connection") or []
    return any(token.strip().lower() == b"upgrade" for value in connection for token in value.split(b","))


# ----------------------------------------------------------------- one HTTP exchange


class HTTPCycle:
    """One HTTP request/response between the reactor and the app's loop.

    Written by the loop: ``started``, ``complete``, ``posted``, ``waiting``,
    ``task``; by the reactor: ``written``, ``paused``, ``gone``, ``finished``.
    Each side only reads the other's, so the GIL's ordering and the
    re-check before each wait are enough.
    """

    task = None
    deadline = None
    changed: asyncio.Event | None = None  # made in the loop: wakes receive/send waiting there

    def __init__(self, resource: ASGIResource, request, scope: dict):
        self.resource = resource
        self.apploop = resource.apploop
        self.mailbox = resource.apploop.mailbox
        self.request = request
        self.scope = scope
        content = request.content
        content.seek(0, 2)
        self.length = content.tell()
        content.seek(0)
        self.content = content
        self.read = 0
        self.body_sent = False
        # the loop's side
        self.started = False  # http.response.start received
        self.complete = False  # the last http.response.body received
        self.head = None  # (status, headers) until it is posted with the first body
        self.posted = 0
        self.waiting = False
        # the reactor's side
        self.written = 0
        self.paused = False
        self.gone = False  # the client left, or the deadline passed
        self.finished = False  # the reactor is done with the response
        self.producing = False

    # -- reactor thread

    def start(self) -> None:
        timeout = self.resource.config.request_timeout
        if timeout is not None:
            self.deadline = self.resource.reactor.callLater(timeout, self.expire)
        self.request.notifyFinish().addErrback(self._client_left)
        self.apploop.submit(self._create_task)

    def _poke(self) -> None:
        """Wake the app's receive/send if they wait (from the reactor thread)."""
        self.apploop.post(self._set_changed)

    def _client_left(self, _failure) -> None:
        self.gone = True
        self._cancel_deadline()
        self._poke()

    def _apply(self, head, chunk: bytes, end: bool) -> None:
        if self.finished:
            return
        request = self.request
        channel = request.channel
        held = hasattr(channel, "hold_output") and channel.hold_output()
        try:
            if head is not None:
                self._write_head(head)
            if chunk:
                request.write(chunk)
                self.written += len(chunk)
            if end:
                self._finish()
            elif self.waiting:
                self._poke()
        finally:
            if held:
                channel.send_held()

    def _write_head(self, head) -> None:
        status, headers = head
        request = self.request
        request.setResponseCode(status)
        request.defaultContentType = None  # no text/html the app did not ask for
        response_headers = request.responseHeaders
        for name, value in headers:
            if name.lower() in _REPLACED:
                response_headers.setRawHeaders(name, [value])
            else:
                response_headers.addRawHeader(name, value)
        if not request._disconnected:
            self.producing = True
            request.registerProducer(self, True)

    def _finish(self) -> None:
        self._close()
        request = self.request
        if not request._disconnected:
            request.finish()
        elif request.startedWriting:
            request.site.log(request)  # the client left as the end arrived: still a request to log

    def _close(self) -> None:
        self.finished = True
        self._cancel_deadline()
        if self.producing:
            self.producing = False
            self.request.unregisterProducer()

    def _cancel_deadline(self) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None

    def _fail(self, failure: Failure, started: bool) -> None:
        """The app raised (or returned without answering)."""
        if self.finished:
            return
        if started or self.request.startedWriting:
            self._log(failure, "application error after the response started; closing the connection")
            self._abort()
            return
        self._log(failure, "application error")
        detail = failure.getTraceback() if (self.resource.config.debug and failure is not None) else ""
        self._error(500, detail)

    def _incomplete(self) -> None:
        if self.finished:
            return
        if not self.request.startedWriting and self.head is None and not self.posted:
            log.error("ASGI({target!r}): the app returned without a response ({method} {path})",
                      target=self.resource.config.target, method=self.scope["method"], path=self.scope["path"])
            self._error(500, "")
            return
        log.error("ASGI({target!r}): the app returned before the response was complete ({method} {path}); "
                  "closing the connection", target=self.resource.config.target,
                  method=self.scope["method"], path=self.scope["path"])
        self._abort()

    def _error(self, status: int, detail: str) -> None:
        body = write_error(self.request, status, detail)
        if body:
            self.request.write(body)
        self._finish()

    def _abort(self) -> None:
        self._close()
        self.gone = True
        self._poke()
        if not self.request._disconnected:
            self.request.loseConnection()

    def _done(self) -> None:
        """The task ended: its slot is free."""
        stats = self.apploop.stats
        stats.active -= 1
        stats.completed += 1

    def _log(self, failure, what: str) -> None:
        log.failure("ASGI({target!r}): {what} ({method} {path})", failure,
                    target=self.resource.config.target, what=what,
                    method=self.scope["method"], path=self.scope["path"])

    def expire(self) -> None:
        """``request_timeout`` passed: 504 (or drop the connection), log the task's stack, cancel it."""
        self.deadline = None
        if self.finished:
            return
        config = self.resource.config
        self.apploop.stats.timeouts += 1
        log.error("ASGI({target!r}): {method} {path} passed its {timeout:g}s request_timeout; the task is at:\n"
                  "{stack}", target=config.target, method=self.scope["method"], path=self.scope["path"],
                  timeout=config.request_timeout, stack=self.apploop.task_stack(self.task))
        self.gone = True
        self.apploop.post(self._cancel_task)
        if self.request.startedWriting:
            self._abort()
        else:
            self._error(504, "The application did not answer in time.")

    # IPushProducer, registered on the request once the response started

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.waiting:
            self._poke()

    def stopProducing(self) -> None:
        self.gone = True
        self._poke()

    # -- the loop's thread

    def _set_changed(self) -> None:
        if self.changed is not None:
            self.changed.set()

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _create_task(self) -> None:
        self.changed = asyncio.Event()
        self.task = self.apploop.loop.create_task(self._run())

    async def _run(self) -> None:
        post = self.mailbox.post
        try:
            if not self.gone:  # the client may have left, or the deadline passed, while it was queued
                await self.apploop.app(self.scope, self.receive, self.send)
                if not self.complete and not self.gone:
                    post(self._incomplete)
        except (ClientDisconnected, asyncio.CancelledError):
            pass
        except Exception:
            if not self.gone:
                post(self._fail, Failure(), self.started)
        finally:
            post(self._done)

    async def receive(self) -> dict:
        if self.gone or self.complete:
            return {"type": "http.disconnect"}
        if not self.body_sent or self.read < self.length:
            chunk = self.content.read(CHUNK) if self.length else b""
            self.read += len(chunk)
            self.body_sent = True
            more = self.read < self.length and bool(chunk)
            return {"type": "http.request", "body": chunk, "more_body": more}
        while not (self.gone or self.complete):
            self.changed.clear()
            if not (self.gone or self.complete):
                await self.changed.wait()
        return {"type": "http.disconnect"}

    async def send(self, message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI: http.response.start sent twice")
            status = message.get("status")
            if type(status) is not int or not 100 <= status <= 599:
                raise TypeError(f"ASGI: http.response.start status must be an int 100..599, got {status!r}")
            headers = []
            for pair in message.get("headers", ()):
                name, value = pair
                if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
                    raise TypeError(f"ASGI: header names and values must be bytes, got {pair!r}")
                if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
                    raise ValueError(f"ASGI: invalid header {pair!r}")
                headers.append((bytes(name), bytes(value)))
            self.started = True
            self.head = (status, headers)
        elif kind == "http.response.body":
            if not self.started:
                raise RuntimeError("ASGI: http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("ASGI: http.response.body after the response was complete")
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(f"ASGI: http.response.body body must be bytes, got {type(body).__name__}")
            more = bool(message.get("more_body", False))
            if self.gone:
                raise ClientDisconnected("the client left")
            while (self.paused or self.posted - self.written > HIGH_WATER) and not self.gone:
                self.waiting = True  # before the re-check: the reactor pokes after its update
                self.changed.clear()
                if (self.paused or self.posted - self.written > HIGH_WATER) and not self.gone:
                    await self.changed.wait()
                self.waiting = False
            if self.gone:
                raise ClientDisconnected("the client left")
            head, self.head = self.head, None
            body = bytes(body)
            self.posted += len(body)
            if not more:
                self.complete = True
                self.changed.set()  # a receive waiting for the end returns http.disconnect
            self.mailbox.post(self._apply, head, body, not more)
        else:
            raise RuntimeError(f"ASGI: unexpected message type {kind!r} on an http scope")
