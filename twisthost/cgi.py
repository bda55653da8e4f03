"""``CGI(folder)``: RFC 3875 scripts in child processes, without twcgi's sharp edges.

``twisted.web.twcgi`` hands the child the server's whole environment (secrets
included), turns a query string without ``=`` into command-line arguments,
reads the whole request body into memory, buffers stderr without bound and
never times out.  This module keeps its shape (a leaf resource spawning a
``ProcessProtocol`` per request) but the child gets only the CGI
meta-variables plus the configured ``env``/``pass_env``; argv is the
interpreter and script only; the body is streamed from Twisted's buffered
``request.content`` to stdin; stdout is streamed back with back-pressure; the
header block and stderr are size-bounded; and a ``timeout`` kills the child,
and what it started, and answers 504.  A ``Location: /local/path`` response with no other header
is re-dispatched inside the server (RFC 3875 §6.2.2).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
from urllib.parse import parse_qs, unquote_to_bytes

from twisted.internet import error, protocol
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from .forwarded import resolve_client
from .http.wire import IS_TOKEN
from .pages import write_error
from .scripts import inside, safe_segment

log = Logger()

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_HEADER_BYTES = 64 * 1024
MAX_STDERR_BYTES = 16 * 1024
MAX_LOCAL_REDIRECTS = 5
# util-linux's setsid(1) makes the script the leader of a new session (it
# execs in place: Twisted's child is no group leader), so a kill reaches every
# process the script started.  Without it only the script itself is killed.
SETSID = shutil.which("setsid")

# Request headers never passed on: HTTP_PROXY would be read as a proxy
# setting by many libraries ("httpoxy"); the body framing ones are given as
# CONTENT_TYPE/CONTENT_LENGTH.
_SKIP_REQUEST_HEADERS = frozenset(
    {b"proxy", b"proxy-authorization", b"content-type", b"content-length", b"transfer-encoding"})
# Passed only with CGI(pass_authorization=True), as Apache's CGIPassAuth: a script
# doing no authentication of its own should not hold the client's credentials.
_AUTHORIZATION = b"authorization"
# Response headers the server owns: framing and connection management.
_SKIP_RESPONSE_HEADERS = {b"server", b"date", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade"}


class CGIFolder(Resource):
    """Leaf resource: finds the script for the remaining path and runs it."""

    isLeaf = True

    def __init__(self, config, context):
        super().__init__()
        self.config = config
        self.root = os.path.realpath(config.folder)
        self.reactor = context.reactor
        self.networks = context.site.trusted_proxies
        self.base_env = {"PATH": DEFAULT_PATH, **(config.env or {})}
        self.skipped = _SKIP_REQUEST_HEADERS if config.pass_authorization else (
            _SKIP_REQUEST_HEADERS | {_AUTHORIZATION})

    def locate(self, segments):
        """``(script path, consumed segments, path info segments)`` or None."""
        current = self.root
        for number, segment in enumerate(segments):
            name = safe_segment(segment)
            if name is None:
                return None
            current = os.path.join(current, name)
            if not inside(self.root, current):
                return None
            if os.path.isfile(current):
                return current, segments[: number + 1], segments[number + 1 :]
            if not os.path.isdir(current):
                return None
        return None

    def command(self, script: str):
        """argv for ``script``: its interpreter's, or itself if executable; else None."""
        interpreter = (self.config.interpreters or {}).get(os.path.splitext(script)[1].lower())
        if interpreter is not None:
            return [*interpreter, script]
        if os.access(script, os.X_OK):
            return [script]
        return None

    def render(self, request):
        found = self.locate(request.postpath)
        argv = found and self.command(found[0])
        if not argv:
            return write_error(request, 404, "Not found.")
        script, consumed, path_info = found
        env = self.environ(request, script, request.prepath + consumed, path_info)
        child = CGIProcess(request, self.reactor, self.config.timeout, self.config.max_output)
        if SETSID:
            argv = [SETSID, *argv]
        try:
            self.reactor.spawnProcess(child, argv[0], argv, env, os.path.dirname(script))
        except OSError as failure:
            log.error("CGI {script} could not start: {failure}", script=script, failure=failure)
            return write_error(request, 502, "The script could not be started.")
        return server.NOT_DONE_YET

    def environ(self, request, script, script_segments, path_info) -> dict:
        """The whole child environment: meta-variables, HTTP_*, configured extras."""
        client = resolve_client(request, self.networks)
        env: dict = {name: os.environ[name] for name in self.config.pass_env if name in os.environ}
        env.update(self.base_env)
        for name, values in request.requestHeaders.getAllRawHeaders():
            lower = name.lower()
            if lower in self.skipped or b"_" in lower or not IS_TOKEN.match(lower):
                continue  # "X_Foo" would alias "X-Foo" once underscored
            value = b", ".join(values)
            if b"\0" not in value:
                env["HTTP_" + lower.decode("ascii").upper().replace("-", "_")] = value
        uri = request.uri
        body_size = _size(request.content)
        content_type = request.getHeader(b"content-type")
        env.update(
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_SOFTWARE="twisthost",
            SERVER_PROTOCOL=request.clientproto,
            SERVER_NAME=request.getRequestHostname(),
            SERVER_PORT=str(getattr(request.getHost(), "port", 0)),
            REQUEST_METHOD=request.method,
            REQUEST_URI=uri,
            REQUEST_SCHEME=client.scheme,
            QUERY_STRING=uri.partition(b"?")[2],
            SCRIPT_NAME=b"/" + b"/".join(script_segments),
            SCRIPT_FILENAME=script,
            DOCUMENT_ROOT=self.root,
            REMOTE_ADDR=client.addr,
            REMOTE_HOST=client.addr,
        )
        if client.scheme == "https":
            env["HTTPS"] = "on"
        if path_info:
            env["PATH_INFO"] = b"/" + b"/".join(path_info)
        if body_size or request.getHeader(b"content-length") is not None:
            env["CONTENT_LENGTH"] = str(body_size)
        if content_type is not None:
            env["CONTENT_TYPE"] = content_type
        return {key: value for key, value in env.items() if b"\0" not in _bytes(value)}


def _bytes(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _size(content) -> int:
    if content is None:
        return 0
    content.seek(0, io.SEEK_END)
    size = content.tell()
    content.seek(0)
    return size


class CGIProcess(protocol.ProcessProtocol):
    """One running script: body to stdin, parsed headers and streamed body back.

    Registered as a streaming producer on the request, so a slow client
    pauses reading the child's stdout (and the child blocks on its pipe)
    rather than the output piling up in memory.
    """

    def __init__(self, request, reactor, timeout: float, max_output: int | None):
        self.request = request
        self.reactor = reactor
        self.timeout = timeout
        self.max_output = max_output
        self.header_buffer = b""
        self.headers_done = False
        self.done = False  # the request is answered (or gone): ignore further output
        self.written = 0
        self.stderr = b""
        self.timer = None
        request.notifyFinish().addErrback(self._client_gone)

    # -- process events ---------------------------------------------------------

    def connectionMade(self):
        self.timer = self.reactor.callLater(self.timeout, self._timed_out)
        self.request.registerProducer(self, True)
        content = self.request.content
        if content is None or _size(content) == 0:
            self.transport.closeStdin()
            return
        sending = FileSender().beginFileTransfer(content, self.transport)
        # the child may exit without reading its input: that is its business
        sending.addCallbacks(lambda _: self.transport.closeStdin(), lambda _: None)

    def outReceived(self, data: bytes):
        if self.done:
            return
        if not self.headers_done:
            self.header_buffer += data
            end = _header_end(self.header_buffer)
            if end is None:
                if len(self.header_buffer) > MAX_HEADER_BYTES:
                    self._fail(502, "script response headers too large")
                return
            head, data = end
            self.header_buffer = b""
            self.headers_done = True
            if not self._apply_headers(head) or not data:
                return
        self._write_body(data)

    def errReceived(self, data: bytes):
        room = MAX_STDERR_BYTES - len(self.stderr)
        if room > 0:
            self.stderr += data[:room]

    def processEnded(self, reason):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        code = getattr(reason.value, "exitCode", None)
        if self.stderr or code:
            log.warn(
                "CGI {uri} exited with {code}; stderr: {stderr}",
                uri=self.request.uri, code=code if code is not None else reason.value,
                stderr=self.stderr.decode("utf-8", "replace").rstrip(),
            )
        if self.done:
            return
        if not self.headers_done:
            self._fail(502, "script ended before a complete header block (exit {code})".format(code=code))
            return
        self.done = True
        self.request.unregisterProducer()
        self.request.finish()

    # -- producer interface (for the request) -----------------------------------

    def pauseProducing(self):
        self.transport.pauseProducing()

    def resumeProducing(self):
        self.transport.resumeProducing()

    def stopProducing(self):
        self._kill()

    # -- helpers -----------------------------------------------------------------

    def _apply_headers(self, head: bytes) -> bool:
        """Set status and headers from the script's header block; False if answered otherwise."""
        fields = []
        for line in re.split(rb"\r?\n", head):
            name, colon, value = line.partition(b":")
            if not colon or not IS_TOKEN.match(name):
                self._fail(502, f"malformed script header line {line[:100]!r}")
                return False
            fields.append((name.lower(), value.strip()))
        names = {name for name, _ in fields}
        location = dict(fields).get(b"location")
        if names == {b"location"} and location.startswith(b"/"):
            self._local_redirect(location)
            return False
        code, message = 200, None
        if b"status" in names:
            status = dict(fields)[b"status"]
            match = re.match(rb"^([2-5]\d\d)(?:\s+(.*))?$", status)
            if not match:
                self._fail(502, f"bad Status header {status[:100]!r}")
                return False
            code, message = int(match.group(1)), match.group(2) or None
        elif location is not None:
            code = 302
        self.request.setResponseCode(code, message)
        self.request.defaultContentType = None  # the script decides, like twcgi
        for name, value in fields:
            if name != b"status" and name not in _SKIP_RESPONSE_HEADERS:
                self.request.responseHeaders.addRawHeader(name, value)
        return True

    def _write_body(self, data: bytes):
        if self.max_output is not None and self.written + len(data) > self.max_output:
            self.request.write(data[: self.max_output - self.written])
            log.error("CGI {uri} exceeded max_output={limit}; killed", uri=self.request.uri, limit=self.max_output)
            self._abort()
            return
        self.written += len(data)
        self.request.write(data)

    def _local_redirect(self, location: bytes):
        """Serve ``location`` from this server as the answer, as a GET without a body."""
        request = self.request
        self._stop_child()
        hops = getattr(request, "_twisthost_cgi_redirects", 0) + 1
        if hops > MAX_LOCAL_REDIRECTS:
            self._fail(502, "too many local redirects")
            return
        request._twisthost_cgi_redirects = hops
        self.done = True
        request.unregisterProducer()
        path, _, query = location.partition(b"?")
        request.uri, request.path, request.method = location, path, b"GET"
        request.args = parse_qs(query, keep_blank_values=True)
        request.content = io.BytesIO()
        for name in (b"content-length", b"content-type", b"transfer-encoding"):
            request.requestHeaders.removeHeader(name)
        request.prepath = []
        request.postpath = [unquote_to_bytes(segment) for segment in path[1:].split(b"/")]
        try:  # as twisted.web.server.Request.process does
            request.render(request.site.getResourceFor(request))
        except Exception:
            request.processingFailed(Failure())

    def _fail(self, status: int, problem: str):
        """Answer an error page; only called before any of the script's headers were applied."""
        log.error("CGI {uri}: {problem}", uri=self.request.uri, problem=problem)
        self.done = True
        self._stop_child()
        self.request.unregisterProducer()
        detail = "The script took too long." if status == 504 else "The script failed; see the server log."
        self.request.write(write_error(self.request, status, detail))
        self.request.finish()

    def _timed_out(self):
        if self.done:
            return
        if self.headers_done:
            log.error("CGI {uri} timed out after {seconds}s; killed", uri=self.request.uri, seconds=self.timeout)
            self._abort()
        else:
            self._fail(504, f"timed out after {self.timeout}s; killed")

    def _abort(self):
        """The response has started: cut the connection so the client sees it incomplete."""
        self.done = True
        self._stop_child()
        self.request.unregisterProducer()
        self.request.loseConnection()

    def _client_gone(self, failure):
        self.done = True
        self._stop_child()

    def _stop_child(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self._kill()

    def _kill(self):
        if SETSID and self.transport.pid is not None:
            try:
                os.killpg(self.transport.pid, signal.SIGKILL)  # the script's session is its group
            except (ProcessLookupError, PermissionError):
                pass  # setsid has not run yet (or the group is gone): the script alone, below
        try:
            self.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        self.transport.loseConnection()


def _header_end(buffer: bytes):
    """``(header block, start of the body)`` once a blank line ends the headers."""
    match = re.search(rb"\r?\n\r?\n", buffer)
    if match is None:
        return None
    return buffer[: match.start()], buffer[match.end() :]


def build_cgi(config, context) -> Resource:
    return CGIFolder(config, context)
