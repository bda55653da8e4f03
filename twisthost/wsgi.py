"""WSGI mounts: a PEP 3333 server on a bounded thread pool, with few reactor hops.

Twisted's ``WSGIResource`` is correct but slow and unsafe under load: every
response chunk is a blocking round trip to the reactor, there is no flow
control, its pool queue is unbounded, and a stop can deadlock.  Here:

- the reactor reads the whole body (slow clients never hold a thread; the
  body limit is enforced before reading, see ``twisthost.bodylimit``), builds
  the environ and queues one job on the app's :class:`~.threadpools.WorkerPool`
  or answers 503 + Retry-After when ``threads + queue`` are taken;
- the pool thread runs the app and posts each chunk to the reactor without
  waiting (the first one carries status and headers, the last one finishes
  the request); posts coalesce in the pool's mailbox, so a small response
  costs about one reactor wake-up;
- back-pressure: past ``PRODUCER_AFTER`` bytes the exchange registers as a
  streaming producer, and the thread waits while the transport is paused or
  more than ``HIGH_WATER`` bytes are posted but unwritten, so a slow reader
  never makes us buffer a big response in memory;
- ``timeout=`` answers 504, logs the stack of the stuck thread and discards
  what the thread produces later; no thread is killed, but the job counts as
  overdue in its pool, and a pool whose every thread stays overdue for the
  site's ``graceful_timeout`` has the process replaced gracefully
  (``replace_when_stuck=``, see ``HostService.pool_stuck``);
- a response with ``X-Accel-Redirect`` or ``X-Sendfile`` is handed to an
  internal ``Static`` (:mod:`twisthost.accel`) instead of sending the app's body;
- a ``wsgi.file_wrapper`` around a regular file is not read by the thread:
  on a plain TCP connection the reactor sends it with ``sendfile(2)``
  (:mod:`twisthost.sendfile`), and a HEAD answer skips it altogether.
"""

from __future__ import annotations

import inspect
import os
import stat
import threading

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .accel import hand_off, target_of
from .errors import ConfigError
from .forwarded import resolve_client
from .importing import resolve
from .pages import write_error
from .sendfile import SendfileProducer, can_sendfile
from .threadpools import WorkerPool
from .tls import ssl_environ

log = Logger()

#: Bytes posted by the app thread but not yet written to the transport before it waits.
HIGH_WATER = 256 * 1024
#: Bytes written before an exchange starts listening to the transport's pause/resume.
PRODUCER_AFTER = 64 * 1024
#: A ``wsgi.file_wrapper`` file at least this big goes out with sendfile(2); smaller ones are read.
SENDFILE_MIN = 64 * 1024
#: Response headers whose value from the app replaces Twisted's default instead of adding to it.
_REPLACED = frozenset((b"server", b"date"))


def build_wsgi(config, context) -> "WSGIApp":
    app = resolve(config, config.target, config.pythonpath)
    if not callable(app):
        raise ConfigError(
            f"WSGI({config.target!r}) is a {type(app).__name__}, not a WSGI application",
            config.where,
            "point at the callable app(environ, start_response), or a factory with '()'",
        )
    if is_async(app):
        raise ConfigError(
            f"WSGI({config.target!r}) is an async callable (an ASGI app?): WSGI() calls it from a "
            "thread and every request would fail",
            config.where,
            f"mount it with ASGI({config.target!r}) instead (docs/asgi.md), or mount the "
            "framework's WSGI app (Django: get_wsgi_application)",
        )
    return WSGIApp(app, _pool_for(config, context), config, context)


def is_async(app) -> bool:
    """Is ``app`` a coroutine function, or an object whose ``__call__`` is one (Starlette,
    FastAPI, Django's ASGIHandler)?  Such an app returns a coroutine, not an iterable: a WSGI
    server can only fail each request with it.  ASGI 2's double callable is not seen here."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(type(app), "__call__", None)
    return not inspect.isroutine(app) and not inspect.isclass(app) and inspect.iscoroutinefunction(call)


def _pool_for(config, context) -> WorkerPool:
    """The app's own pool, or the named pool it shares (which must agree on sizes)."""
    pools = context.shared.setdefault("wsgi_pools", {})
    name = config.pool
    found = pools.get(name) if name is not None else None
    if found is not None:
        pool, owner = found
        if owner.pool_key() != config.pool_key():
            raise ConfigError(
                f"WSGI(pool={name!r}) has threads/min_threads/queue/replace_when_stuck "
                f"{config.pool_key()}, but the pool was made with {owner.pool_key()}"
                + (f" at line {owner.where.line}" if owner.where else ""),
                config.where,
                "give every WSGI sharing a pool the same threads, min_threads, queue and replace_when_stuck",
            )
        return pool
    pool = WorkerPool(name or config.target, config.threads, config.min_threads, config.queue, context.reactor)
    if config.replace_when_stuck:
        pool.stuck_after = context.site.graceful_timeout
        # Looked up when it happens: the serving process sets context.pool_stuck.
        pool.on_stuck = lambda pool, why: context.pool_stuck(pool, why)
    pool.setServiceParent(context.services)
    if name is not None:
        pools[name] = (pool, config)
    return pool


class ErrorStream:
    """``wsgi.errors``: each write becomes an error event of the twisted logger.

    Writes come from pool threads; they are posted to the reactor thread,
    where log observers expect to run.
    """

    def __init__(self, target: str, mailbox):
        self._log = Logger(namespace=f"twisthost.wsgi.{target}")
        self._mailbox = mailbox

    def write(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, not {type(text).__name__}")
        if text.strip():
            self._mailbox.post(self._emit, text.rstrip("\n"))

    def _emit(self, text: str) -> None:
        self._log.error("{text}", text=text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Events are posted as they are written; nothing is held back."""


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in big blocks, close it with the response.

    The iteration is the fallback; for a regular file the exchange asks
    :meth:`span` and lets the kernel send the bytes instead (``fileno`` and
    ``close`` are what :class:`~.sendfile.SendfileProducer` uses).
    """

    def __init__(self, filelike, blksize: int = 64 * 1024):
        self.filelike, self.blksize = filelike, blksize

    def span(self) -> tuple[int, int] | None:
        """``(offset, bytes left)`` when the wrapped object is a regular file, else None."""
        try:
            st = os.fstat(self.filelike.fileno())
            offset = self.filelike.tell()  # the app may have seeked: send from there
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
            return None
        if not stat.S_ISREG(st.st_mode) or not isinstance(offset, int):
            return None
        return offset, max(0, st.st_size - offset)

    def fileno(self) -> int:
        return self.filelike.fileno()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class WSGIApp(Resource):
    """The resource for one ``WSGI(...)`` mount: admission, environ, hand-off."""

    isLeaf = True

    def __init__(self, app, pool: WorkerPool, config, context):
        super().__init__()
        self.app = app
        self.pool = pool
        self.config = config
        self.reactor = context.reactor
        self.networks = context.site.trusted_proxies
        self.max_body = config.max_body  # read by twisthost.bodylimit before the body
        self.body_spool = config.body_spool
        self.base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.errors": ErrorStream(config.target, pool.mailbox),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
            "SERVER_SOFTWARE": "twisthost",
        }

    def render(self, request):
        exchange = Exchange(self, request)
        if not self.pool.submit(exchange):
            request.setHeader(b"retry-after", b"1")
            return write_error(request, 503, "The application is busy; retry shortly.")
        if self.config.timeout is not None:
            exchange.deadline = self.reactor.callLater(self.config.timeout, exchange.expire)
        return NOT_DONE_YET

    def environ(self, request) -> dict:
        """The PEP 3333 environ for ``request``; runs in the reactor thread."""
        env = self.base_environ.copy()
        client = resolve_client(request, self.networks)
        uri = request.uri
        query = uri.partition(b"?")[2]
        content = request.content
        content.seek(0, 2)
        length = content.tell()
        content.seek(0)
        prepath, postpath = request.prepath, request.postpath
        env["REQUEST_METHOD"] = request.method.decode("latin-1")
        env["SCRIPT_NAME"] = ("/" + b"/".join(prepath).decode("latin-1")) if prepath else ""
        env["PATH_INFO"] = ("/" + b"/".join(postpath).decode("latin-1")) if postpath else ""
        env["QUERY_STRING"] = query.decode("latin-1")
        env["REQUEST_URI"] = env["RAW_URI"] = uri.decode("latin-1")
        env["SERVER_PROTOCOL"] = request.clientproto.decode("latin-1") or "HTTP/1.0"
        env["REMOTE_ADDR"] = client.addr
        env["REMOTE_PORT"] = str(getattr(request.getClientAddress(), "port", ""))
        env["SERVER_NAME"], env["SERVER_PORT"] = _server_name_port(request, client.scheme)
        env["wsgi.url_scheme"] = client.scheme
        if client.scheme == "https":
            env.update(ssl_environ(request))  # SSL_CLIENT_S_DN...; {} behind a TLS-terminating proxy
        env["wsgi.input"] = content
        if length or request.requestHeaders.hasHeader(b"content-length"):
            env["CONTENT_LENGTH"] = str(length)  # the body as read, also for chunked uploads
        for name, values in request.requestHeaders.getAllRawHeaders():
            key = _environ_key(name)
            if key is not None:
                sep = "; " if key == "HTTP_COOKIE" else ","
                env[key] = values[0].decode("latin-1") if len(values) == 1 else sep.join(
                    value.decode("latin-1") for value in values
                )
        return env


_KEYS: dict = {b"Content-Type": "CONTENT_TYPE", b"Content-Length": None}


def _environ_key(name: bytes) -> str | None:
    """``X-Foo`` -> ``HTTP_X_FOO``; None for names with ``_`` (``X_Foo`` would alias ``X-Foo``)."""
    try:
        return _KEYS[name]
    except KeyError:
        key = None if b"_" in name else "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_KEYS) < 1024:  # bounded: names are client-chosen
            _KEYS[name] = key
        return key


def _server_name_port(request, scheme: str) -> tuple[str, str]:
    host = request.requestHeaders.getRawHeaders(b"host")
    if not host:
        local = request.getHost()
        return str(getattr(local, "host", "") or "localhost"), str(getattr(local, "port", "") or "0")
    value = host[0].decode("latin-1")
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name, port = name + "]", rest[1:]
    else:
        name, _, port = value.partition(":")
    return name, port or ("443" if scheme == "https" else "80")


class _Gone(Exception):
    """The response is no longer wanted: the client left or the deadline passed."""


class Exchange:
    """One request/response between the reactor and a pool thread.

    Fields written by the thread: ``posted``, ``waiting``, ``head_sent``;
    by the reactor: ``written``, ``paused``, ``closed``.  Each side only reads
    the other's, so no lock is needed beyond the mailbox's ordering.
    """

    queued_at = queue_wait = 0.0
    thread_id = None
    deadline = None
    wake = None

    def __init__(self, resource: WSGIApp, request):
        self.resource = resource
        self.request = request
        self.environ = resource.environ(request)
        self.mailbox = resource.pool.mailbox
        self.head = None  # (code, reason, [(name, value)]) once start_response was called
        self.head_sent = False
        self.accel = None  # (header, value) of an X-Accel-Redirect or X-Sendfile head (accel.target_of)
        self.sendfile = can_sendfile(request)
        self.running = False
        self.posted = self.written = 0
        self.waiting = self.paused = self.closed = self.producing = False

    # -- pool thread -------------------------------------------------------------

    def run(self) -> None:
        if self._gone():
            return  # expired while queued, or the client left: do not run the app
        self.running = True
        result = None
        try:
            result = self.resource.app(self.environ, self.start_response)
            if isinstance(result, FileWrapper) and self._offer_file(result):
                result = None  # the reactor sends the file and closes it
            else:
                self._send_body(result)
                self._end()
        except _Gone:
            pass
        except Exception:
            self._failed(Failure())
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    self.mailbox.post(self._log_failure, Failure(), "close() of the response failed")
            self.running = False

    def _send_body(self, result) -> None:
        if self.accel is not None:
            return  # an X-Accel-Redirect answer's body is dropped unread
        for chunk in result:
            if self.accel is not None:
                break  # start_response came with the first chunk
            if chunk:
                self.write(chunk)
            elif self._gone():
                raise _Gone

    def _end(self) -> None:
        if self.accel is not None:
            self.mailbox.post(self._hand_off, self._take_head(), self.accel)
        else:
            self.mailbox.post(self._apply, self._take_head(), b"", True)

    def _offer_file(self, wrapper: FileWrapper) -> bool:
        """Give a regular file to the reactor to send with sendfile(2); False to iterate it.

        Sends exactly the app's Content-Length when it set one (the
        connection is aborted if the file holds less), else the rest of the
        file.  HEAD answers take this path on any transport: nothing is read.
        """
        head = self.head
        if self.accel is not None or head is None or not (200 <= head[0] < 300 and head[0] != 204):
            return False
        head_only = self.environ["REQUEST_METHOD"] == "HEAD"
        if not (self.sendfile or head_only):
            return False
        span = wrapper.span()
        if span is None:
            return False
        offset, count = span
        lengths = [value for name, value in head[2] if name.lower() == b"content-length"]
        if lengths:
            if len(lengths) != 1 or not lengths[0].isdigit():
                return False
            count = int(lengths[0])
        if count < SENDFILE_MIN and not head_only:
            return False
        self.mailbox.post(self._send_file, self._take_head(), wrapper, offset, count)
        return True

    def start_response(self, status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.head is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if not (isinstance(status, str) and len(status) > 4 and status[:3].isdigit() and status[3] == " "):
            raise ValueError(f"WSGI status must be like '200 OK', got {status!r}")
        if not isinstance(headers, list):
            raise TypeError(f"WSGI headers must be a list, got {type(headers).__name__}")
        encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        self.head = (int(status[:3]), status[4:].encode("latin-1"), encoded)
        self.accel = target_of(encoded)
        return self.write

    def write(self, chunk: bytes) -> None:
        """Send ``chunk`` (also the legacy ``write()`` callable); waits only for back-pressure."""
        if type(chunk) is not bytes:
            raise TypeError(f"WSGI response chunks must be bytes, got {type(chunk).__name__}")
        if self.accel is not None:
            return  # the body of an X-Accel-Redirect answer is dropped
        if self.paused or self.posted - self.written > HIGH_WATER:
            self._wait_for_room()
        if self._gone():
            raise _Gone
        head = self._take_head()
        self.posted += len(chunk)
        self.mailbox.post(self._apply, head, chunk, False)

    def _take_head(self):
        """The status and headers if they still have to go out, else None."""
        if self.head_sent:
            return None
        if self.head is None:
            raise AssertionError("the application sent a body before calling start_response()")
        self.head_sent = True
        return self.head

    def _gone(self) -> bool:
        return self.closed or self.request._disconnected

    def _wait_for_room(self) -> None:
        if self.wake is None:
            self.wake = threading.Event()
        while (self.paused or self.posted - self.written > HIGH_WATER) and not self._gone():
            self.waiting = True  # set before the re-check: the reactor sets wake after its update
            self.wake.clear()
            if (self.paused or self.posted - self.written > HIGH_WATER) and not self._gone():
                self.wake.wait(1.0)  # also polls for a client that left while we were paused
            self.waiting = False

    def _failed(self, failure: Failure) -> None:
        if self.head_sent:
            self.mailbox.post(self._abort, failure)
        else:
            self.mailbox.post(self._fail, failure)

    # -- reactor thread ----------------------------------------------------------

    def _apply(self, head, chunk: bytes, end: bool) -> None:
        if self.closed:
            return
        request = self.request
        # Head, body and end leave in one send (HostChannel; HTTP/2 has no such batching).
        channel = request.channel
        held = hasattr(channel, "hold_output") and channel.hold_output()
        try:
            if head is not None:
                self._write_head(head)
            if chunk:
                request.write(chunk)
                self.written += len(chunk)
                if not self.producing and self.written > PRODUCER_AFTER and not end:
                    self.producing = True
                    request.registerProducer(self, True)
            if end:
                self._finish()
            elif self.waiting:
                self.wake.set()
        finally:
            if held:
                channel.send_held()

    def _hand_off(self, head, target: tuple[bytes, bytes]) -> None:
        """X-Accel-Redirect or X-Sendfile: the internal Static answers instead of the app."""
        if self.closed:
            return
        self._close()
        if not self.request._disconnected:
            hand_off(self.request, target, head[2], self.resource.config.target)

    def _send_file(self, head, wrapper: FileWrapper, offset: int, count: int) -> None:
        """The app's ``wsgi.file_wrapper`` body, sent by the kernel (nothing for HEAD)."""
        request = self.request
        unwanted = self.closed or request._disconnected  # past the deadline, or the client left
        self._close()
        if unwanted:
            self._close_wrapper(wrapper)
            return
        self._write_head(head)
        request.setHeader(b"content-length", b"%d" % count)
        if request.method == b"HEAD":
            self._close_wrapper(wrapper)
            request.finish()
        else:
            SendfileProducer(request, wrapper, offset, count).start()  # closes it when done

    def _close_wrapper(self, wrapper: FileWrapper) -> None:
        try:
            wrapper.close()
        except Exception:
            self._log_failure(Failure(), "close() of the response failed")

    def _write_head(self, head) -> None:
        code, reason, headers = head
        request = self.request
        request.setResponseCode(code, reason)
        response_headers = request.responseHeaders
        for name, value in headers:
            if name.lower() in _REPLACED:
                response_headers.setRawHeaders(name, [value])
            else:
                response_headers.addRawHeader(name, value)
        notes = getattr(request, "notes", None)
        if notes is not None:
            notes.extra["queue_ms"] = round(self.queue_wait * 1000, 3)

    def _close(self) -> None:
        """No more output from the thread is wanted; wake it if it waits."""
        self.closed = True
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        if self.producing:
            self.producing = False
            self.request.unregisterProducer()
        if self.waiting:
            self.wake.set()

    def _finish(self) -> None:
        self._close()
        request = self.request
        if not request._disconnected:
            request.finish()
        elif request.startedWriting:
            # The client left before the app's end reached the reactor, often
            # because the body it was promised was all there: still a request
            # the access log and metrics must count (Twisted logs in finish only).
            request.site.log(request)

    def _fail(self, failure: Failure) -> None:
        """The app failed before sending headers: 500 (traceback only with debug=True)."""
        if self.closed:
            return
        self._log_failure(failure, "application error")
        detail = failure.getTraceback() if self.resource.config.debug else ""
        body = write_error(self.request, 500, detail)
        if body:
            self.request.write(body)
        self._finish()

    def _abort(self, failure: Failure) -> None:
        """The app failed mid-body: the response cannot be completed, drop the connection."""
        if self.closed:
            return
        self._log_failure(failure, "application error after the response started; closing the connection")
        self._close()
        self.request.loseConnection()

    def _log_failure(self, failure: Failure, what: str) -> None:
        log.failure(
            "{target}: {what} ({method} {uri})", failure,
            target=self.resource.config.target, what=what,
            method=self.environ["REQUEST_METHOD"], uri=self.environ["REQUEST_URI"],
        )

    def describe(self) -> str:
        """``METHOD /uri``, for the pool's log lines about stuck threads."""
        return f"{self.environ['REQUEST_METHOD']} {self.environ['REQUEST_URI']}"

    def expire(self) -> None:
        """The deadline passed: 504 (or drop the connection), log where the thread is stuck."""
        self.deadline = None
        if self.closed:
            return
        pool = self.resource.pool
        pool.stats.timeouts += 1
        running = self.running
        stack = pool.stack_of(self.thread_id) if running else "(still waiting in the queue)"
        log.error(
            "{target}: {method} {uri} passed its {timeout}s deadline; the thread is at:\n{stack}",
            target=self.resource.config.target, method=self.environ["REQUEST_METHOD"],
            uri=self.environ["REQUEST_URI"], timeout=self.resource.config.timeout, stack=stack,
        )
        if self.request.startedWriting:
            self._close()
            self.request.loseConnection()
        else:
            body = write_error(self.request, 504, "The application did not answer in time.")
            if body:
                self.request.write(body)
            self._finish()
        if running:
            pool.overdue(self)  # after the answer: a replacement it may start finds this one done

    # -- IPushProducer, registered on the request for big responses

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.waiting:
            self.wake.set()

    def stopProducing(self) -> None:
        self.closed = True
        if self.waiting:
            self.wake.set()

