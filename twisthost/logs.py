"""Access logs: one line per finished request, combined, JSON or custom.

Twisted's own access log quotes the client IP (which breaks log tools),
writes through the legacy logging system on every request (about a fifth of
twistd web's CPU per request) and rotates files itself at 1 MB.  Ours writes
plain lines into a buffer flushed every second or at 64 KiB, reopens the
file on USR1 for logrotate, and never records credentials: only the request
line, status, sizes, timings, user agent and referer are logged.
"""

from __future__ import annotations

import json
import os
import re
import string
import time
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger

log = Logger()

FIELDS = (
    "time", "host", "method", "path", "query", "protocol", "status", "bytes",
    "duration_ms", "queue_ms", "upstream", "upstream_ms", "remote", "user_agent",
    "referer", "request_id", "route",
)
FORMATS = ("combined", "vhost_combined", "json")
FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 1.0

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')


def check_format(fmt: str) -> str | None:
    """None if ``fmt`` is a known format or a valid custom template, else the error."""
    if fmt in FORMATS:
        return None
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}
    except ValueError as error:
        return f"bad log format template: {error}"
    unknown = sorted(names - set(FIELDS))
    if unknown or not names:
        return f"log_format fields must be among {', '.join(FIELDS)}; unknown: {unknown or 'none given'}"
    return None


@dataclass
class RequestNotes:
    """What routing and services learn about a request, for logs and metrics.

    Set on ``request.notes`` by the router; services (WSGI queue wait, proxy
    upstream) add their fields to ``extra``.
    """

    host: str
    route: str
    started: float
    request_id: str
    logger: "AccessLog | None" = None
    extra: dict = field(default_factory=dict)


def new_request_id(given: list[bytes] | None) -> bytes:
    """The last of the client's X-Request-ID values if it is sane, else a new one."""
    # 128 random bits as hex, like uuid4().hex without building a UUID object per request.
    return given[-1] if given and _REQUEST_ID.match(given[-1]) else os.urandom(16).hex().encode()


def request_id(request) -> str:
    """The request's id (:func:`new_request_id`), set on its request and response headers."""
    value = new_request_id(request.requestHeaders.getRawHeaders(b"x-request-id"))
    request.requestHeaders.setRawHeaders(b"x-request-id", [value])
    request.responseHeaders.setRawHeaders(b"x-request-id", [value])
    return value.decode("ascii")


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def record(request, remote: str) -> dict:
    """The loggable facts of a finished request (no headers beyond UA and referer)."""
    notes = getattr(request, "notes", None)
    path, _, query = _text(request.uri).partition("?")
    now = time.time()
    entry = {
        "time": now,
        "host": notes.host if notes else "",
        "route": notes.route if notes else "",
        "method": _text(request.method),
        "path": path,
        "query": query,
        "protocol": _text(request.clientproto),
        "status": request.code,
        "bytes": request.sentLength,
        "duration_ms": round((time.monotonic() - notes.started) * 1000, 3) if notes else None,
        "queue_ms": None,
        "upstream": None,
        "upstream_ms": None,
        "remote": remote,
        "user_agent": _text(request.getHeader(b"user-agent")),
        "referer": _text(request.getHeader(b"referer")),
        "request_id": notes.request_id if notes else "",
    }
    if notes:
        entry.update({k: v for k, v in notes.extra.items() if k in entry})
    return entry


def _escape(value) -> str:
    """nginx-style: quotes, backslashes and control characters become \\xHH."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02X}", str(value))


class _SecondCache:
    """``strftime`` of the current second, formatted once per second, not per line."""

    def __init__(self, pattern: str, encode: bool = False):
        self.pattern = pattern
        self.encode = encode
        self.second = None
        self.text = ""

    def __call__(self, when: float):
        second = int(when)
        if second != self.second:
            text = time.strftime(self.pattern, time.gmtime(second))
            self.second, self.text = second, text.encode("ascii") if self.encode else text
        return self.text


_combined_stamp = _SecondCache("[%d/%b/%Y:%H:%M:%S +0000]", encode=True)
_iso_stamp = _SecondCache("%Y-%m-%dT%H:%M:%S")
_UNSAFE_BYTES = re.compile(rb'[\x00-\x1f\x7f-\xff"\\]')
# json.dumps builds a new encoder per call when given options; one is enough.
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _escape_bytes(value: bytes) -> bytes:
    """nginx-style for raw bytes: quotes, backslashes, controls and non-ASCII become \\xHH."""
    if _UNSAFE_BYTES.search(value) is None:
        return value
    return _UNSAFE_BYTES.sub(lambda m: b"\\x%02X" % m.group()[0], value)


def _header(request, name: bytes) -> bytes:
    values = request.requestHeaders.getRawHeaders(name)
    return _escape_bytes(values[-1]) if values else b"-"


def combined_line(request, remote: str) -> bytes:
    """The combined format straight from the request's bytes: the common case, kept cheap."""
    if request.method:
        line = b"%s %s %s" % (_escape_bytes(request.method), _escape_bytes(request.uri),
                              _escape_bytes(request.clientproto))
    else:  # refused before a request line was read (Apache logs the same)
        line = b"-"
    return b'%s - - %s "%s" %d %d "%s" "%s"\n' % (
        remote.encode("ascii", "replace") or b"-",
        _combined_stamp(time.time()),
        line,
        request.code,
        request.sentLength,
        _header(request, b"referer"),
        _header(request, b"user-agent"),
    )


def vhost_combined_line(request, remote: str) -> bytes:
    """Apache's ``vhost_combined``: ``host:port`` of the server that answered, then the combined line.

    The host is the matched ``Host``'s config name (``(default)``, or ``-`` when none
    matched), not the client's Host header, as Apache's ``%v`` is the ServerName; the
    port is the listener's.  The size is the body's, as in ``combined`` (Apache's ``%O``
    would add the head).
    """
    notes = getattr(request, "notes", None)  # none when no host matched
    port = getattr(request.channel.getHost(), "port", None)
    return b"%s:%s %s" % (
        notes.host.encode("utf-8") if notes is not None else b"-",
        b"%d" % port if port is not None else b"-",
        combined_line(request, remote),
    )


def format_json(entry: dict) -> str:
    out = dict(entry)
    out["time"] = f"{_iso_stamp(entry['time'])}.{int(entry['time'] % 1 * 1000):03d}Z"
    return _json(out)


def formatter(fmt: str):
    """``line(request, remote) -> bytes`` for a log format."""
    if fmt == "combined":
        return combined_line
    if fmt == "vhost_combined":
        return vhost_combined_line
    if fmt == "json":
        render = format_json
    else:
        def render(entry):
            return fmt.format(**{k: "-" if v is None else _escape(v) for k, v in entry.items()})
    return lambda request, remote: (render(record(request, remote)) + "\n").encode("utf-8", "replace")


class AccessLog(Service):
    """A buffered, reopenable access-log file (or stdout for ``"-"``).

    A service of the build context: started with the tree it logs for, and
    flushed and closed when a reload replaces that tree.
    """

    def __init__(self, target: str, fmt: str, reactor):
        self.target = target
        self.line = formatter(fmt)
        self.buffer: list[bytes] = []
        self.size = 0
        self.fd = None
        self.flusher = task.LoopingCall(self.flush)
        self.flusher.clock = reactor

    def startService(self) -> None:
        from .service import on_reopen

        super().startService()
        if self.fd is None:
            self.reopen()
        self.flusher.start(FLUSH_SECONDS, now=False)
        self._unregister = on_reopen(self.reopen)

    def stopService(self) -> None:
        super().stopService()
        self._unregister()
        if self.flusher.running:
            self.flusher.stop()
        self.flush()
        if self.target != "-" and self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def write(self, request, remote: str) -> None:
        line = self.line(request, remote)
        if not self.running:  # a request that outlived the tree a reload replaced
            self._append_once(line)
            return
        self.buffer.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def _append_once(self, data: bytes) -> None:
        if self.target == "-":
            os.write(1, data)
            return
        fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def flush(self) -> None:
        if not self.buffer or self.fd is None:
            return
        data, self.buffer, self.size = b"".join(self.buffer), [], 0
        try:
            os.write(self.fd, data)
        except OSError as error:
            log.error("access log {target}: {error}", target=self.target, error=error)

    def reopen(self) -> None:
        """Open the path anew (after logrotate renamed it): the USR1 action."""
        if self.target == "-":
            self.fd = 1
            return
        self.flush()
        old = self.fd
        self.fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if old is not None:
            os.close(old)


def access_log_for(spec_, site, context) -> AccessLog | None:
    """The log a Site or Host writes to, one ``AccessLog`` per file per build.

    A Host whose ``access_log``/``log_format`` say 'site' shares the Site's.
    """
    target = site.access_log if spec_.access_log == "site" else spec_.access_log
    fmt = site.log_format if spec_.log_format == "site" else spec_.log_format
    if target is None:
        return None
    logs = context.shared.setdefault("access_logs", {})
    key = (target, fmt)
    if key not in logs:
        logs[key] = AccessLog(target, fmt, context.reactor)
        logs[key].setServiceParent(context.services)
    return logs[key]


# -------------------------------------------------------------------- the error log

_error_log_target = {"path": None, "nodaemon": True}


def use_json_error_log(options) -> None:
    """Make twistd (``options`` is its ServerOptions) log as JSON lines.

    twistd's ``--logger`` takes the dotted name of an observer factory; the
    factory reads ``--logfile``/``--nodaemon`` from here.
    """
    _error_log_target.update(path=options.get("logfile"), nodaemon=bool(options.get("nodaemon")))
    options["logger"] = "twisthost.logs.json_error_log"


class JSONErrorLog:
    """A log observer writing ``{"time", "level", "namespace", "message"[, "traceback"]}`` lines.

    Twisted's ``jsonFileLogObserver`` serialises whole events for reloading
    them later (format strings, flattened fields); log shippers want the
    rendered message instead.
    """

    def __init__(self, out):
        self.out = out

    def __call__(self, event) -> None:
        from twisted.logger import formatEvent

        level = event.get("log_level")
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(event.get("log_time", time.time())))
            + f".{int(event.get('log_time', 0) % 1 * 1000):03d}Z",
            "level": level.name if level is not None else "info",
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()


def json_error_log():
    """twisthost's error log as one JSON object per event (``--log-format json``)."""
    import sys

    from twisted.python.logfile import LogFile

    path = _error_log_target["path"]
    if path == "-" or (not path and _error_log_target["nodaemon"]):
        return JSONErrorLog(sys.stdout)
    from .service import on_reopen

    # No size-based rotation: logrotate moves the file and sends USR1.
    out = LogFile.fromFullPath(path or "twistd.log", rotateLength=None)
    on_reopen(out.reopen)
    return JSONErrorLog(out)
