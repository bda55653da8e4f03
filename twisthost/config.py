"""The vocabulary users write in ``site.py``: ``Site``, ``Host`` and the services.

These are frozen value objects that validate themselves when constructed, so a
mistake is reported at the line of ``site.py`` that made it.  Nothing here
builds a Twisted object: the capability modules turn these values into
resources, which keeps ``twisthost check`` and reload cheap and side-effect
free.  Every option is declared with :func:`option`, whose ``doc`` feeds the
generated reference in ``docs/config.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import os
import re
import shlex
import shutil
from typing import Any, ClassVar

from .errors import ConfigError, Where, caller_location, combined, gather, item_where, record

_REQUIRED = dataclasses.MISSING


def option(default: Any = _REQUIRED, *, doc: str, positional: bool = False):
    """Declare a config option with its documentation (keyword-only by default)."""
    kw_only = not positional
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or None for mutable defaults")
    return dataclasses.field(default=default, kw_only=kw_only, metadata={"doc": doc})


def spec(cls):
    """Make ``cls`` a frozen config class that knows where in site.py it was made.

    The generated ``__init__`` is wrapped so that unknown keywords and bad
    arity become ``ConfigError``s with a "did you mean" hint instead of a
    bare ``TypeError`` from deep inside dataclasses.  While errors are being
    collected (``errors.collecting``, as ``twisthost check`` does) a mistake
    is recorded instead of raised and the object is marked ``failed``: the
    rest of site.py still runs, so one run reports every mistake.  An
    unknown option or extra positional argument is dropped and the rest
    checked as if it had not been given.
    """
    cls = dataclasses.dataclass(frozen=True, eq=True)(cls)
    generated_init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    positional = [f.name for f in dataclasses.fields(cls) if f.init and not f.kw_only]

    @functools.wraps(generated_init)
    def __init__(self, *args, **kwargs):
        where = caller_location()
        object.__setattr__(self, "where", where)
        problems = []
        for key in [key for key in kwargs if key not in names]:
            close = difflib.get_close_matches(key, names, n=1)
            hint = (
                f"did you mean {close[0]}=?"
                if close
                else f"{cls.__name__} takes: {', '.join(names)}"
            )
            problems.append(ConfigError(f"{cls.__name__}() got an unknown option {key!r}", where, hint))
            del kwargs[key]
        if len(args) > len(positional):
            problems.append(ConfigError(
                f"{cls.__name__}() takes at most {len(positional)} positional "
                f"argument(s) ({', '.join(positional) or 'none'}), got {len(args)}",
                where,
                "pass the other options by keyword, e.g. threads=8",
            ))
            args = args[:len(positional)]
        try:
            generated_init(self, *args, **kwargs)
        except (TypeError, ConfigError) as error:
            if isinstance(error, TypeError):
                error = ConfigError(f"{cls.__name__}(): {error}", where)
            problems.append(error)
            # Without the dropped arguments it was fine: usable to look for more mistakes in a build.
            object.__setattr__(self, "failed", True)
        if problems:
            error = combined(problems)
            if not record(error):
                raise error from None
        if any(isinstance(value, Spec) and value.failed for value in vars(self).values()):
            # Built from a part whose mistake is already recorded: not usable either.
            object.__setattr__(self, "failed", True)

    cls.__init__ = __init__
    return cls


class Spec:
    """Common checks for config classes; ``where`` is set by :func:`spec`."""

    where: ClassVar[Where | None]
    failed: ClassVar[bool] = False  # set on an object whose mistakes were recorded (see spec)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate and normalise fields; subclasses extend."""

    # -- helpers used by check() -------------------------------------------------

    def fail(self, message: str, hint: str = "") -> ConfigError:
        return ConfigError(message, self.where, hint)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def base_dir(self) -> str:
        """Relative paths in site.py are relative to site.py's folder."""
        if self.where is not None:
            return os.path.dirname(os.path.abspath(self.where.filename))
        return os.getcwd()

    def _label(self, name: str) -> str:
        return f"{type(self).__name__}({name}=...)"

    def want(self, name: str, types, what: str, optional: bool = False) -> Any:
        value = getattr(self, name)
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in _as_tuple(types):
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            raise self.fail(
                f"{self._label(name)} expects {what}, got {type(value).__name__} "
                f"{value!r}"
            )
        return value

    def want_number(
        self, name: str, low: float | None = None, high: float | None = None,
        optional: bool = False, integer: bool = False,
    ) -> Any:
        what = "an integer" if integer else "a number"
        value = self.want(name, int if integer else (int, float), what, optional)
        if value is None:
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise self.fail(f"{self._label(name)} must be in {bounds}, got {value!r}")
        return value

    def want_strings(self, name: str, what: str = "a list of strings") -> tuple:
        value = getattr(self, name)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise self.fail(
                f"{self._label(name)} expects {what}, got {type(value).__name__} "
                f"{value!r}",
                f"write {name}=[{value!r}]" if isinstance(value, str) else "",
            )
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.fail(f"{self._label(name)} expects {what}, got item {item!r}")
        self._set(name, tuple(value))
        return tuple(value)

    def want_path(self, name: str, kind: str = "dir", optional: bool = False) -> str | None:
        """A path that must exist: made absolute against site.py's folder."""
        value = self.want(name, (str, os.PathLike), "a path", optional)
        if value is None:
            return None
        path = os.path.normpath(os.path.join(self.base_dir(), os.fspath(value)))
        exists = os.path.isdir(path) if kind == "dir" else os.path.isfile(path)
        if not exists:
            raise self.fail(
                f"{self._label(name)}: {'folder' if kind == 'dir' else 'file'} "
                f"{path!r} does not exist",
                "relative paths are taken from the folder of the config file",
            )
        self._set(name, path)
        return path

    def want_target(self, name: str) -> str:
        """An import target ``pkg.mod:attr`` or ``pkg.mod:factory()``."""
        value = self.want(name, str, "an import target like 'package.module:name'")
        if not _TARGET.match(value):
            raise self.fail(
                f"{self._label(name)}: {value!r} is not an import target",
                "write 'package.module:name' or 'package.module:factory()'",
            )
        return value

    def summary(self) -> str:
        """One line for the routing table: the class, main value, changed options."""
        parts = []
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            if not f.kw_only:
                parts.append(repr(value))
            elif value != f.default:
                parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*(\(\))?$")


class Service(Spec):
    """Anything that can be mounted at a route: the capability modules build it."""


# --------------------------------------------------------------------------- services


@spec
class Redirect(Service):
    """Answer every request with a redirect to ``url``.

    Like nginx's ``return 301 https://example.com$request_uri``: with
    ``keep_path`` the part of the path below the mount point and the query
    string are appended to ``url``.
    """

    url: str = option(doc="Absolute URL (or absolute path) to redirect to.", positional=True)
    status: int = option(301, doc="HTTP status: 301, 302, 303, 307 or 308.")
    keep_path: bool = option(
        True, doc="Append the request path below the mount and the query string to `url`."
    )

    def check(self) -> None:
        url = self.want("url", str, "a URL string")
        if not (re.match(r"^https?://[^/\s]+", url) or url.startswith("/")) or any(
            c.isspace() for c in url
        ):
            raise self.fail(
                f"Redirect url {url!r} must be absolute (http://, https:// or /path)"
            )
        self.want("status", int, "an integer")
        if self.status not in (301, 302, 303, 307, 308):
            raise self.fail(f"Redirect(status=...) must be 301, 302, 303, 307 or 308, got {self.status!r}")
        self.want("keep_path", bool, "True or False")


@spec
class Resource(Service):
    """Mount any ``twisted.web`` resource built by Python code of your own.

    ``target`` names an ``IResource`` object (``"pkg.mod:root"``) or a
    callable that returns one (``"pkg.mod:make_root()"``).  The module is
    imported with the config file's folder (and ``pythonpath``) on ``sys.path``.
    """

    target: str = option(doc="Import target: 'pkg.mod:resource' or 'pkg.mod:factory()'.", positional=True)
    pythonpath: tuple = option((), doc="Extra folders put on sys.path before importing, relative to the config file.")

    def check(self) -> None:
        self.want_target("target")
        self._set("pythonpath", _absolute_paths(self, "pythonpath"))


def _absolute_paths(spec_: Spec, name: str) -> tuple:
    return tuple(
        os.path.normpath(os.path.join(spec_.base_dir(), p)) for p in spec_.want_strings(name)
    )


@spec
class WSGI(Service):
    """A PEP 3333 application (Flask, Django, ...) run in a thread pool.

    The reactor reads the whole request body first (so a slow client never
    holds a thread), then a pool thread runs the app.  At most ``threads``
    requests run and ``queue`` more wait; beyond that the answer is an
    immediate 503 with Retry-After instead of an unbounded backlog.  Apps
    sharing ``pool="name"`` share one pool and must agree on its size.
    """

    target: str = option(doc="Import target: 'pkg.mod:app' or 'pkg.mod:create_app()'.", positional=True)
    pythonpath: tuple = option((), doc="Extra folders put on sys.path before importing, relative to the config file.")
    threads: int = option(8, doc="Most requests the app runs at once (threads in its pool).")
    min_threads: int = option(1, doc="Threads started with the pool; more start on demand up to `threads`.")
    pool: Any = option(None, doc="Name of a thread pool shared with other WSGI apps that give the same name (and sizes).")
    queue: Any = option(None, doc="Requests that may wait for a busy pool; more get 503 + Retry-After at once. Default: 8 x threads (64 with the default 8 threads), enough for bursts of a few dozen clients per thread pool.")
    max_body: int = option(1 << 30, doc="Largest request body in bytes; a bigger Content-Length gets 413 before the body is read.")
    body_spool: int = option(100_000, doc="Request bodies up to this many bytes stay in memory; bigger ones go to a temporary file.")
    timeout: Any = option(None, doc="Seconds a request may take (queue wait included) before it gets 504 and the stuck thread's stack is logged; None = no limit.")
    debug: bool = option(False, doc="Show the traceback in the body of a 500 (never in production).")
    replace_when_stuck: bool = option(True, doc="When every thread of the pool has been past its `timeout` for the Site's `graceful_timeout` seconds, log their stacks and replace the process gracefully: with workers the master starts a new worker and drains this one; a single process stops gracefully and exits with status 75 (EX_TEMPFAIL) for its supervisor to restart it. Needs `timeout`; False keeps the pool answering 503 until its threads return.")

    def check(self) -> None:
        self.want_target("target")
        self._set("pythonpath", _absolute_paths(self, "pythonpath"))
        self.want_number("threads", 1, 1024, integer=True)
        self.want_number("min_threads", 0, integer=True)
        if self.min_threads > self.threads:
            raise self.fail(
                f"WSGI(min_threads={self.min_threads}) is more than threads={self.threads}",
                "min_threads is how many of the `threads` start at once",
            )
        if self.pool is not None and (not isinstance(self.pool, str) or not self.pool):
            raise self.fail(f"WSGI(pool=...) expects a pool name, got {self.pool!r}")
        if self.queue is None:
            self._set("queue", 8 * self.threads)
        self.want_number("queue", 0, integer=True)
        self.want_number("max_body", 0, integer=True)
        self.want_number("body_spool", 0, integer=True)
        if self.timeout is not None:
            self._set("timeout", float(self.want_number("timeout", 0.001)))
        self.want("debug", bool, "True or False")
        self.want("replace_when_stuck", bool, "True or False")

    def pool_key(self) -> tuple:
        """What pools shared by name must agree on."""
        return (self.threads, self.min_threads, self.queue, self.replace_when_stuck)


@spec
class ASGI(Service):
    """An ASGI 3 application (FastAPI, Starlette, Django's ASGI handler...) on an event loop of its own.

    Each ``ASGI`` mount runs its own asyncio loop (uvloop when installed) in
    its own thread, so a coroutine that blocks its loop delays only that app,
    never static files, WSGI apps, the proxy or other ASGI apps.  HTTP
    requests get the body as read by the reactor, responses stream with
    back-pressure; WebSocket runs over HTTP/1.1 (wsproto); the lifespan
    startup runs before the listeners serve, and a failed one stops the
    start.  See docs/asgi.md.
    """

    target: str = option(doc="Import target: 'pkg.mod:app' or 'pkg.mod:create_app()'.", positional=True)
    pythonpath: tuple = option((), doc="Extra folders put on sys.path before importing, relative to the config file.")
    max_concurrency: int = option(1000, doc="Most requests and WebSockets the app handles at once; more get 503 + Retry-After at once.")
    max_body: int = option(1 << 30, doc="Largest request body in bytes; a bigger Content-Length gets 413 before the body is read.")
    body_spool: int = option(100_000, doc="Request bodies up to this many bytes stay in memory; bigger ones go to a temporary file.")
    request_timeout: Any = option(None, doc="Seconds an HTTP request may take before it gets 504 (or its connection is closed), the stuck task's stack is logged and the task cancelled; None = no limit. WebSockets are not timed.")
    lifespan: str = option("auto", doc="The lifespan protocol: 'auto' (run it; an app that raises on it does not support it, which is fine), 'on' (an app that raises on it fails the start), 'off' (never sent).")
    lifespan_timeout: float = option(30.0, doc="Seconds the lifespan startup (and shutdown) may take; a startup past it fails the start.")
    websocket: bool = option(True, doc="Hand WebSocket upgrade requests (HTTP/1.1) to the app as 'websocket' scopes; False sends them as plain 'http' requests.")
    max_message: int = option(16 << 20, doc="Largest WebSocket message, in bytes, the app is given; a bigger one closes the connection with 1009.")
    ping_interval: Any = option(None, doc="Seconds between WebSocket pings sent to the client; None sends none.")
    ping_timeout: float = option(20.0, doc="With ping_interval: seconds to wait for the pong before the WebSocket is closed (1011).")
    debug: bool = option(False, doc="Show the traceback in the body of a 500 (never in production).")

    def check(self) -> None:
        self.want_target("target")
        self._set("pythonpath", _absolute_paths(self, "pythonpath"))
        self.want_number("max_concurrency", 1, integer=True)
        self.want_number("max_body", 0, integer=True)
        self.want_number("body_spool", 0, integer=True)
        if self.request_timeout is not None:
            self._set("request_timeout", float(self.want_number("request_timeout", 0.001)))
        if self.lifespan not in ("auto", "on", "off"):
            raise self.fail(f"ASGI(lifespan=...) must be 'auto', 'on' or 'off', got {self.lifespan!r}")
        self._set("lifespan_timeout", float(self.want_number("lifespan_timeout", 0.001)))
        self.want("websocket", bool, "True or False")
        self.want_number("max_message", 1, integer=True)
        if self.ping_interval is not None:
            self._set("ping_interval", float(self.want_number("ping_interval", 0.01)))
        self._set("ping_timeout", float(self.want_number("ping_timeout", 0.01)))
        self.want("debug", bool, "True or False")


@spec
class Static(Service):
    """Files under ``root``, served like nginx's ``root`` or Caddy's ``file_server``.

    Safe by default: no directory listing, dotfiles and symlinks that leave
    ``root`` answer 404, unknown types are ``application/octet-stream``.
    Responses carry a strong ETag and Last-Modified and honour conditional
    and Range requests; precompressed ``.br``/``.zst``/``.gz`` sidecars are
    preferred over compressing on the fly; big files go out with
    ``sendfile(2)`` on plain TCP.  See docs/static.md.
    """

    root: str = option(doc="Folder to serve; relative to the config file.", positional=True)
    index: tuple = option(("index.html",), doc="File names tried, in order, for a request ending in '/'.")
    listing: bool = option(False, doc="List folders that have no index file (an HTML page; dotfiles stay hidden).")
    dotfiles: bool = option(False, doc="Serve names starting with '.'; off, they answer 404 (except '.well-known').")
    follow_symlinks: bool = option(False, doc="Follow symlinks that point outside `root`; off, those answer 404.")
    fallback: Any = option(None, doc="File under `root` served (200) for missing paths, e.g. 'index.html' for a single-page app.")
    fallback_assets: bool = option(False, doc="Also serve `fallback` for missing paths whose last segment has an extension (/app.js); off, those 404.")
    not_found: Any = option(None, doc="File under `root` sent as the body of 404 answers, e.g. '404.html'.")
    max_age: Any = option(None, doc="Seconds for 'Cache-Control: max-age=N' on files no `cache` rule matches; None sends no Cache-Control.")
    cache: Any = option(None, doc="Cache-Control per glob, first match wins: {'*.css': 'max-age=31536000, immutable'}. A pattern without '/' matches the file name, with '/' the path below the mount.")
    types: Any = option(None, doc="Extra or overriding content types by extension: {'.log': 'text/plain'}.")
    precompressed: tuple = option(("br", "zstd", "gzip"), doc="Encodings whose sidecar files (x.css.br, x.css.zst, x.css.gz) are served when the client accepts them; order breaks q-value ties.")
    gzip: bool = option(True, doc="Gzip text responses on the fly when there is no sidecar (files up to 2 MiB, cached in memory; never for ranges).")
    gzip_min_size: int = option(1024, doc="Smallest file, in bytes, compressed on the fly.")
    sendfile_min_size: Any = option(65536, doc="Files of at least this many bytes go out with zero-copy sendfile(2) on plain TCP (TLS and HTTP/2 use the buffered path); None disables it.")
    internal: bool = option(False, doc="Not reachable by clients directly, only through an X-Accel-Redirect answer (like nginx's `internal`).")

    def check(self) -> None:
        root = self.want_path("root", "dir")
        for name in ("listing", "dotfiles", "follow_symlinks", "fallback_assets", "gzip", "internal"):
            self.want(name, bool, "True or False")
        for name in self.want_strings("index", "a list of file names"):
            if "/" in name or name in (".", ".."):
                raise self.fail(f"Static(index=...): {name!r} must be a plain file name", "e.g. index=['index.html']")
        for name in ("fallback", "not_found"):
            self._file_below_root(name, root)
        self.want_number("max_age", low=0, optional=True, integer=True)
        self.want_number("gzip_min_size", low=0, integer=True)
        self.want_number("sendfile_min_size", low=0, optional=True, integer=True)
        self._set("cache", self._mapping("cache", "{'*.css': 'max-age=31536000, immutable'}"))
        self._set("types", self._mapping("types", "{'.log': 'text/plain'}"))
        for extension, _ in self.types or ():
            if not extension.startswith(".") or "/" in extension:
                raise self.fail(f"Static(types=...): {extension!r} is not an extension", "write it with its dot, e.g. '.log'")
        known = ("br", "zstd", "gzip")
        for coding in self.want_strings("precompressed", "a list of encodings"):
            if coding not in known:
                raise self.fail(f"Static(precompressed=...): unknown encoding {coding!r}", f"choose from {', '.join(known)}")

    def _file_below_root(self, name: str, root: str) -> None:
        """``fallback``/``not_found`` name a regular file inside ``root``."""
        value = self.want(name, str, "a file name below root", optional=True)
        if value is None:
            return
        path = os.path.realpath(os.path.join(root, value.lstrip("/")))
        if os.path.commonpath([path, os.path.realpath(root)]) != os.path.realpath(root):
            raise self.fail(f"Static({name}={value!r}) is outside root", "give a path relative to root")
        if not os.path.isfile(path):
            raise self.fail(f"Static({name}={value!r}): file {path!r} does not exist", "the path is relative to root")
        self._set(name, path)

    def _mapping(self, name: str, example: str) -> tuple:
        """A dict of non-empty one-line strings, kept as a tuple of pairs (order matters)."""
        value = getattr(self, name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(f"{self._label(name)} expects a dict, got {type(value).__name__} {value!r}", f"e.g. {name}={example}")
        for key, item in value.items():
            for text in (key, item):
                if not isinstance(text, str) or not text or any(c in text for c in "\r\n\0"):
                    raise self.fail(f"{self._label(name)}: {text!r} must be a non-empty one-line string", f"e.g. {name}={example}")
        return tuple(value.items())


@spec
class HealthCheck(Spec):
    """Active health checks for ``Proxy(health=...)``, like Caddy's ``health_uri``.

    Every ``interval`` seconds each upstream gets ``GET path``; ``fails``
    failed checks in a row take it out of rotation and ``passes`` good ones
    put it back.  A check fails on a connection error, on no answer within
    ``timeout`` or on a status other than ``expect_status``.
    """

    path: str = option("/healthz", doc="Path (and query) requested on each upstream.", positional=True)
    interval: float = option(5.0, doc="Seconds between two checks of one upstream.")
    timeout: float = option(2.0, doc="Seconds to wait for the answer of one check.")
    expect_status: int = option(200, doc="The status code a healthy upstream answers.")
    passes: int = option(2, doc="Good checks in a row that bring a down upstream back.")
    fails: int = option(2, doc="Failed checks in a row that take an upstream out.")
    host: Any = option(None, doc="Host header of the checks; default: the Proxy's host= (the Host its requests are sent with), else the upstream's own host:port.")

    def check(self) -> None:
        path = self.want("path", str, "a path like '/healthz'")
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise self.fail(f"HealthCheck path {path!r} must start with '/' and hold no spaces")
        self.want_number("interval", 0.05)
        self.want_number("timeout", 0.01)
        self.want_number("expect_status", 100, 599, integer=True)
        self.want_number("passes", 1, integer=True)
        self.want_number("fails", 1, integer=True)
        self.want("host", str, "a host name", optional=True)


BALANCE_POLICIES = ("round_robin", "least_conn", "random_two", "ip_hash", "uri_hash")
_UPSTREAM_URL = re.compile(r"^(https?://[^/\s?#]+(/[^\s?#]*)?|unix:/[^\s?#]+)$")


@spec
class Proxy(Service):
    """Reverse proxy to one or more upstream HTTP servers, like nginx's
    ``proxy_pass`` to an ``upstream`` block or Caddy's ``reverse_proxy``.

    Connections to upstreams are kept alive and reused.  Request bodies are
    received whole before the upstream is contacted (a slow client costs the
    upstream nothing); responses stream back as they arrive, with
    back-pressure.  The upstream sees the client's ``Host`` and
    ``X-Forwarded-For``/``-Proto``/``-Host`` plus ``Forwarded``, trusting the
    incoming values only from ``Site(trusted_proxies=...)``.  An upstream URL
    may carry a base path (``http://b:9000/app``) that is put before the
    request path.  ``Connection: Upgrade`` requests (WebSocket) are tunnelled.
    See docs/proxy.md.
    """

    upstreams: Any = option(doc="An upstream URL ('http://host:port', 'https://host/base', 'unix:/path.sock') or a list of them.", positional=True)
    balance: str = option("round_robin", doc="How to pick an upstream: 'round_robin', 'least_conn', 'random_two', 'ip_hash' or 'uri_hash'.")
    weights: Any = option(None, doc="Mapping of upstream URL to an integer weight (default 1 each).")
    backup: tuple = option((), doc="Upstream URLs used only while every primary upstream is down.")
    host: Any = option(None, doc="Host header sent upstream; default: the client's Host, unchanged.")
    strip_prefix: bool = option(False, doc="Drop the route prefix from the path ('/api/x' mounted at '/api' goes up as '/x').")
    headers_up: Any = option(None, doc="Mapping of request header to a value to set, or None to remove it, applied last.")
    headers_down: Any = option(None, doc="Mapping of response header to a value to set, or None to remove it, applied last.")
    via: bool = option(False, doc="Add 'Via: 1.1 twisthost' both ways.")
    max_connections_per_upstream: Any = option(None, doc="Most requests in flight to one upstream; a full upstream is skipped (None: no limit).")
    keepalive: int = option(32, doc="Idle keep-alive connections kept per upstream.")
    keepalive_timeout: float = option(60.0, doc="Seconds an idle upstream connection is kept.")
    connect_timeout: float = option(5.0, doc="Seconds to open a connection; then the next upstream is tried.")
    response_timeout: float = option(60.0, doc="Seconds from sending the request to the response head; then 504 (or a retry for idempotent methods).")
    idle_timeout: float = option(60.0, doc="Seconds a response body (or a tunnel) may stall, in either direction, before both sides are closed.")
    retries: int = option(2, doc="Other upstreams tried after a failure (any method when no connection opened, else idempotent methods only).")
    try_duration: float = option(30.0, doc="Seconds after which no further upstream is tried.")
    max_fails: int = option(1, doc="Failures within fail_timeout that mark an upstream down (0: never).")
    fail_timeout: float = option(10.0, doc="Window for max_fails, and how long the upstream then stays down.")
    health: Any = option(None, doc="HealthCheck(...) for active checks of every upstream.")
    unavailable_status: int = option(502, doc="Status when no upstream can be tried: 502 or 503.")
    verify: bool = option(True, doc="Verify https:// upstream certificates and host names.")
    ca: Any = option(None, doc="PEM file of the CA that signs https:// upstreams (instead of the system store).")
    websocket: bool = option(True, doc="Tunnel 'Connection: Upgrade' requests (WebSocket); False answers them as plain requests.")
    accel: bool = option(True, doc="Honour X-Accel-Redirect and X-Sendfile from upstreams: an internal Static of this host serves the named file (nginx's default). False: both headers are dropped and the upstream's own answer relayed (nginx's proxy_ignore_headers plus proxy_hide_header).")

    def check(self) -> None:
        if isinstance(self.upstreams, str):
            self._set("upstreams", (self.upstreams,))
        urls = self.want_strings("upstreams", "an upstream URL or a list of URLs")
        if not urls:
            raise self.fail("Proxy() needs at least one upstream")
        if isinstance(self.backup, str):
            self._set("backup", (self.backup,))
        backup = self.want_strings("backup", "a list of upstream URLs") if self.backup else ()
        seen = set()
        for url in urls + backup:
            if not _UPSTREAM_URL.match(url):
                raise self.fail(
                    f"Proxy upstream {url!r} is not a URL",
                    "write 'http://host:port', 'https://host/base/path' or 'unix:/path/to.sock'",
                )
            if url in seen:
                raise self.fail(f"Proxy upstream {url!r} is listed twice")
            seen.add(url)
        if self.balance not in BALANCE_POLICIES:
            close = difflib.get_close_matches(str(self.balance), BALANCE_POLICIES, n=1)
            raise self.fail(
                f"Proxy(balance=...) must be one of {', '.join(BALANCE_POLICIES)}, got {self.balance!r}",
                f"did you mean {close[0]!r}?" if close else "",
            )
        self._set("weights", self._weights(seen))
        self.want("host", str, "a host name", optional=True)
        self._set("headers_up", self._header_rules("headers_up"))
        self._set("headers_down", self._header_rules("headers_down"))
        for flag in ("strip_prefix", "via", "verify", "websocket", "accel"):
            self.want(flag, bool, "True or False")
        self.want_number("max_connections_per_upstream", 1, optional=True, integer=True)
        self.want_number("keepalive", 0, integer=True)
        self.want_number("retries", 0, integer=True)
        self.want_number("max_fails", 0, integer=True)
        for name in ("keepalive_timeout", "connect_timeout", "response_timeout", "idle_timeout",
                     "try_duration", "fail_timeout"):
            self.want_number(name, 0.001)
        if self.health is not None and not isinstance(self.health, HealthCheck):
            raise self.fail(
                f"Proxy(health=...) expects HealthCheck(...), got {self.health!r}",
                "write health=HealthCheck('/healthz', interval=5)",
            )
        if self.unavailable_status not in (502, 503):
            raise self.fail(f"Proxy(unavailable_status=...) must be 502 or 503, got {self.unavailable_status!r}")
        self.want_path("ca", "file", optional=True)
        if self.ca is not None and not self.verify:
            raise self.fail("Proxy(ca=...) has no effect with verify=False", "drop one of them")

    def _weights(self, urls: set) -> tuple | None:
        """``{url: weight}`` as a sorted tuple of pairs, so the config stays hashable."""
        if self.weights is None:
            return None
        if not isinstance(self.weights, dict):
            raise self.fail(
                f"Proxy(weights=...) expects a dict of upstream URL to weight, got {self.weights!r}",
                "write weights={'http://a:9000': 3}",
            )
        for url, weight in self.weights.items():
            if url not in urls:
                raise self.fail(f"Proxy(weights=...) names {url!r}, which is not an upstream")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
                raise self.fail(f"Proxy(weights=...) weight of {url!r} must be an integer 1..1000, got {weight!r}")
        return tuple(sorted(self.weights.items()))

    def _header_rules(self, name: str) -> tuple | None:
        """``{header: value or None}`` as a tuple of (lower-case bytes name, bytes value or None)."""
        rules = getattr(self, name)
        if rules is None:
            return None
        if not isinstance(rules, dict):
            raise self.fail(
                f"Proxy({name}=...) expects a dict of header name to value (or None to remove), got {rules!r}",
                f"write {name}={{'X-Api-Key': 'secret', 'Cookie': None}}",
            )
        out = []
        for header, value in rules.items():
            if not isinstance(header, str) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", header):
                raise self.fail(f"Proxy({name}=...): {header!r} is not a header name")
            if value is not None and (not isinstance(value, str) or re.search(r"[\r\n\0]", value)):
                raise self.fail(f"Proxy({name}=...): value of {header!r} must be a one-line string or None")
            out.append((header.lower().encode("ascii"), None if value is None else value.encode("latin-1")))
        return tuple(out)

    def weight_of(self, url: str) -> int:
        return dict(self.weights or ()).get(url, 1)


@spec
class Scripts(Service):
    """``.rpy`` resource scripts under ``folder``, Twisted Web style.

    ``/hello`` and ``/hello.rpy`` run ``hello.rpy`` (nested folders too); a
    folder URL runs its ``index`` script.  A script is plain Python that binds
    ``resource`` to a ``twisted.web`` resource; it runs once and its resource
    is reused until the file changes on disk.  Other files are not served
    unless ``static=True``.
    """

    folder: str = option(doc="Folder of .rpy scripts; relative to the config file.", positional=True)
    index: tuple = option(("index.rpy",), doc="File names tried, in order, for a folder URL; names not ending in .rpy need static=True.")
    static: bool = option(False, doc="Also serve the folder's other files (never .rpy sources, never dotfiles).")
    debug: bool = option(False, doc="Show a script's load traceback in the 500 page (development only); it is always logged.")
    reload: bool = option(True, doc="Re-run a script when its file's mtime or size changes (one stat per request).")

    def check(self) -> None:
        self.want_path("folder", "dir")
        for name in self.want_strings("index", "a list of file names"):
            if "/" in name or name.startswith("."):
                raise self.fail(f"Scripts(index=...): {name!r} must be a plain file name", "e.g. index=['index.rpy']")
            if not name.endswith(".rpy") and not self.static:
                raise self.fail(
                    f"Scripts(index=...): {name!r} is not a .rpy script",
                    "set static=True to serve other files, or list only .rpy names",
                )
        for flag in ("static", "debug", "reload"):
            self.want(flag, bool, "True or False")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@spec
class CGI(Service):
    """CGI scripts (RFC 3875) under ``folder``, each request in a fresh process.

    A file runs if it has an interpreter in ``interpreters`` (by extension) or
    is executable; any other file is never served.  Path segments after the
    script become ``PATH_INFO``.  The child sees only the CGI meta-variables,
    ``env`` and the ``pass_env`` names of the server's environment.
    """

    folder: str = option(doc="Folder of CGI scripts; relative to the config file.", positional=True)
    interpreters: Any = option(None, doc="Map of file extension to interpreter command, e.g. {'.pl': 'perl', '.py': 'python3'}; checked to exist.")
    env: Any = option(None, doc="Extra environment variables for every script, a dict of name to string. PATH defaults to '/usr/local/bin:/usr/bin:/bin'.")
    pass_env: tuple = option((), doc="Names of the server's own environment variables copied to scripts (an allow-list; nothing else is inherited).")
    timeout: float = option(30.0, doc="Seconds a script may run; then it and the processes it started are killed and the client gets 504 (or a cut connection if output had started).")
    max_output: Any = option(None, doc="Largest response body in bytes a script may write before it is killed; None for no limit (output is streamed with back-pressure either way).")
    pass_authorization: bool = option(False, doc="Give scripts the client's Authorization header as HTTP_AUTHORIZATION (Apache's CGIPassAuth), for scripts that do their own HTTP authentication. Off by default: the credentials stay out of every script's environment, its child processes and its error output.")

    def check(self) -> None:
        self.want_path("folder", "dir")
        if self.interpreters is not None:
            self._set("interpreters", self._interpreters())
        env = self.want("env", dict, "a dict of variable name to string", optional=True) or {}
        for name, value in env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise self.fail(f"CGI(env=...): {name!r} is not a valid variable name")
            if not isinstance(value, str) or "\0" in value:
                raise self.fail(f"CGI(env=...): value of {name} must be a string, got {value!r}")
        for name in self.want_strings("pass_env", "a list of variable names"):
            if not _ENV_NAME.match(name):
                raise self.fail(f"CGI(pass_env=...): {name!r} is not a valid variable name")
        self.want_number("timeout", low=0.001)
        self.want_number("max_output", low=1, integer=True, optional=True)
        self.want("pass_authorization", bool, "True or False")

    def _interpreters(self) -> dict:
        """``{".pl": "perl"}`` -> ``{".pl": ("/usr/bin/perl",)}``, each program found now."""
        found = {}
        for ext, command in self.want("interpreters", dict, "a dict like {'.pl': 'perl'}").items():
            if not isinstance(ext, str) or not re.match(r"^\.[A-Za-z0-9_.-]+$", ext):
                raise self.fail(f"CGI(interpreters=...): key {ext!r} is not a file extension", "write e.g. '.pl'")
            argv = shlex.split(command) if isinstance(command, str) else command
            if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) and a for a in argv):
                raise self.fail(f"CGI(interpreters=...): command for {ext!r} must be a string or a list of strings, got {command!r}")
            program = shutil.which(argv[0])
            if program is None:
                raise self.fail(
                    f"CGI(interpreters=...): interpreter {argv[0]!r} for {ext!r} not found",
                    "install it, give its absolute path, or drop the extension",
                )
            found[ext.lower()] = (program, *argv[1:])
        return found


# --------------------------------------------------------------------------- listeners


@spec
class TLS(Spec):
    """A TLS listener in ``Site(listen=...)``: ``TLS("tcp:443", cert=..., key=...)``.

    It serves every certificate of the site, chosen by SNI: each
    ``Host(cert=...)`` for that host's names, each certificate in
    ``certs_dir`` for the names it lists, and ``cert`` (also the default for
    clients without SNI or naming an unknown host).  Wildcards match one
    label, as in certificates.  TLS 1.2+ with Mozilla "intermediate" ciphers,
    no compression, session resumption, and HTTP/2 over ALPN.  Certificates
    are re-read on reload.  See docs/tls.md.
    """

    endpoint: str = option(doc="Twisted server endpoint for the plain socket the TLS runs over, e.g. 'tcp:443', 'systemd:domain=INET:index=1'.", positional=True)
    cert: Any = option(None, doc="PEM certificate chain (leaf first, e.g. certbot's fullchain.pem); the default certificate. Relative to the config file.")
    key: Any = option(None, doc="PEM private key of `cert`; None when the key is in the `cert` file.")
    certs_dir: Any = option(None, doc="Folder of .pem files (certificate chains and keys, paired by key), served for the names each certificate lists.")
    default: Any = option(None, doc="Host name whose certificate goes to clients without SNI or with unknown names; needed when there are several certificates and no `cert`.")
    min_version: str = option("1.2", doc="Lowest TLS version accepted: '1.2' or '1.3'.")
    client_ca: Any = option(None, doc="PEM file of the CA(s) whose client certificates are accepted (mutual TLS).")
    verify_client: Any = option(None, doc="With `client_ca`: 'required' (the default then: no certificate, no connection) or 'optional'.")
    http2: bool = option(True, doc="Offer HTTP/2 via ALPN (needs the h2 package); False serves HTTP/1.1 only.")

    def check(self) -> None:
        if isinstance(self.endpoint, str) and re.match(r"^(ssl|tls):", self.endpoint):
            raise self.fail(
                f"TLS({self.endpoint!r}): give the plain socket endpoint, TLS(...) adds the TLS",
                "write e.g. TLS('tcp:443', cert='fullchain.pem', key='privkey.pem')",
            )
        check_endpoint(self.endpoint, self.where, "TLS(endpoint)")
        self.want_path("cert", "file", optional=True)
        self.want_path("key", "file", optional=True)
        if self.key is not None and self.cert is None:
            raise self.fail("TLS(key=...) without cert=...", "give both, or neither")
        self.want_path("certs_dir", "dir", optional=True)
        if self.default is not None:
            self._set("default", normalize_host(self.want("default", str, "a host name")))
        if self.min_version not in ("1.2", "1.3"):
            raise self.fail(f"TLS(min_version=...) must be '1.2' or '1.3', got {self.min_version!r}",
                            "older versions are insecure and not offered")
        self.want_path("client_ca", "file", optional=True)
        if self.verify_client is None and self.client_ca is not None:
            self._set("verify_client", "required")
        if self.verify_client is not None:
            if self.verify_client not in ("optional", "required"):
                raise self.fail(f"TLS(verify_client=...) must be 'optional' or 'required', got {self.verify_client!r}")
            if self.client_ca is None:
                raise self.fail(f"TLS(verify_client={self.verify_client!r}) needs client_ca=...",
                                "client_ca is the PEM file of the CA that signs client certificates")
        self.want("http2", bool, "True or False")


@spec
class HSTS(Spec):
    """``Strict-Transport-Security`` for ``Host(hsts=...)``, sent on HTTPS responses only.

    ``preload`` follows hstspreload.org's rules: it needs
    ``include_subdomains`` and a max-age of at least a year.
    """

    max_age: int = option(31536000, doc="Seconds browsers remember to use HTTPS only (a year by default).", positional=True)
    include_subdomains: bool = option(False, doc="Also cover every subdomain of the host.")
    preload: bool = option(False, doc="Ask to be put on browsers' preload lists (hard to undo).")

    def check(self) -> None:
        self.want_number("max_age", 0, integer=True)
        self.want("include_subdomains", bool, "True or False")
        self.want("preload", bool, "True or False")
        if self.preload and not (self.include_subdomains and self.max_age >= 31536000):
            raise self.fail("HSTS(preload=True) needs include_subdomains=True and max_age >= 31536000",
                            "the preload list refuses anything less")

    def header_value(self) -> str:
        return f"max-age={self.max_age}" + "; includeSubDomains" * self.include_subdomains + "; preload" * self.preload


def check_endpoint(value: Any, where: Where | None, label: str) -> str:
    """Parse a server endpoint string now, so typos fail at check time.

    ``systemd:`` endpoints are only parsed, not resolved: the inherited file
    descriptors exist only under systemd, not when running ``check``.
    """
    from twisted.internet import endpoints

    if not isinstance(value, str):
        raise ConfigError(
            f"{label} expects a Twisted endpoint string like 'tcp:8080', got {value!r}", where
        )
    try:
        if value.startswith("systemd:"):
            from ._compat import endpoint_options

            kwargs = endpoint_options(value)
            unknown = set(kwargs) - {"domain", "index", "name"}
            if unknown:
                raise ValueError(f"unknown systemd option(s) {sorted(unknown)}")
        else:
            endpoints.serverFromString(_NoReactor(), value)
    except Exception as error:  # the parser raises many types for bad input
        raise ConfigError(
            f"invalid listen endpoint {value!r}: {error}",
            where,
            "examples: 'tcp:8080', 'tcp:8080:interface=127.0.0.1', 'tcp6:8080', "
            "'unix:/run/twisthost.sock', 'systemd:domain=INET:index=0'",
        ) from None
    return value


class _NoReactor:
    """Endpoint constructors only store the reactor; parsing must not install one."""


# --------------------------------------------------------------------------- logging


def check_access_log(spec_: Spec, inherit: bool) -> None:
    """``access_log``/``log_format`` of a Site or Host (a Host may say 'site')."""
    from .logs import check_format

    target = spec_.access_log
    if not (inherit and target == "site") and target not in (None, "-"):
        path = spec_.want("access_log", (str, os.PathLike), "a file path, '-' or None")
        path = os.path.normpath(os.path.join(spec_.base_dir(), os.fspath(path)))
        if not os.path.isdir(os.path.dirname(path)):
            raise spec_.fail(
                f"{spec_._label('access_log')}: folder {os.path.dirname(path)!r} does not exist",
                "create the folder; relative paths are taken from the config file's folder",
            )
        spec_._set("access_log", path)
    fmt = spec_.want("log_format", str, "'combined', 'vhost_combined', 'json' or a template")
    if not (inherit and fmt == "site"):
        problem = check_format(fmt)
        if problem:
            raise spec_.fail(problem, "e.g. log_format='json' or '{remote} {status} {path}'")


# --------------------------------------------------------------------------- hosts


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^({_LABEL})(\.{_LABEL})*$")


def normalize_host(name: str) -> str:
    """Lower-case, strip one trailing dot and IPv6 brackets: the key hosts match on."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    return name


def valid_host_name(name: str) -> bool:
    """Exact names, ``*.suffix`` wildcards, and IP literals."""
    if name.startswith("*."):
        return bool(_HOSTNAME.match(name[2:]))
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(name)) and len(name) <= 253


@spec
class Host(Spec):
    """A virtual host: requests whose Host header matches ``name`` or an alias.

    ``name`` is an exact name (``"app.example.com"``), a wildcard matching one
    or more labels (``"*.example.com"``) or an IP literal.  ``service`` is
    mounted at ``/``; ``routes`` maps path prefixes to services, the longest
    prefix matching on whole path segments winning.  As ``Site(default=...)``
    a host needs no name: ``Host(Static("/srv/default"))``.
    """

    name: Any = option(None, doc="Host name, '*.wildcard' or IP literal (None only for the default host).", positional=True)
    service: Any = option(None, doc="The service mounted at '/' (same as routes={'/': service}).", positional=True)
    routes: Any = option(None, doc="Mapping of path prefix ('/api') to service; longest prefix wins.")
    aliases: tuple = option((), doc="More names (exact or wildcard) for the same host.")
    cert: Any = option(None, doc="PEM certificate chain served by TLS(...) listeners for this host's names (SNI). Relative to the config file.")
    key: Any = option(None, doc="PEM private key of `cert`; None when the key is in the `cert` file.")
    https_redirect: Any = option(False, doc="True: plain-HTTP requests get 308 to https:// (same host, path and query; port of the first TLS listener). A port number picks the port.")
    hsts: Any = option(None, doc="Strict-Transport-Security on HTTPS responses: True, a max-age in seconds, or HSTS(...).")
    access_log: Any = option("site", doc="This host's access log: 'site' uses Site(access_log=...); a path, '-' or None overrides it.")
    log_format: str = option("site", doc="This host's log format: 'site' uses Site(log_format=...); otherwise as there.")

    def check(self) -> None:
        if isinstance(self.name, Service) and self.service is None:
            self._set("service", self.name)
            self._set("name", None)
        gather([self._check_tls, lambda: check_access_log(self, inherit=True), self._check_name,
                self._check_aliases, self._check_routes])

    def _check_name(self) -> None:
        if self.name is not None:
            self._set("name", self._host_name(self.want("name", str, "a host name")))

    def _check_aliases(self) -> None:
        self._set("aliases", tuple(self._host_name(a) for a in self.want_strings("aliases")))

    def _check_routes(self) -> None:
        """Each route on its own, so every bad one is reported; services that failed are left out."""
        routes: dict = {}
        if self.routes is not None:
            if not isinstance(self.routes, dict):
                raise self.fail(
                    f"Host(routes=...) expects a dict of path prefix to service, got "
                    f"{type(self.routes).__name__} {self.routes!r}",
                    "write routes={'/': WSGI('app:app'), '/static': Static('static')}",
                )
            gather(lambda prefix=prefix, service=service: self._add_route(routes, prefix, service)
                   for prefix, service in self.routes.items())
        if self.service is not None:
            if "/" in routes:
                raise self.fail(
                    f"Host {self.name!r} has both a service and a '/' route",
                    "move the service into routes={'/': ...} or drop the '/' route",
                )
            routes["/"] = ("/", self._service(self.service, "service"))
        if not routes:
            raise self.fail(
                f"Host {self.name!r} serves nothing",
                "give a service, e.g. Host('a.example', Static('site')), or routes={...}",
            )
        self._set("routes", {key: service for key, (_, service) in sorted(routes.items()) if not service.failed})

    def _add_route(self, routes: dict, prefix: Any, service: Any) -> None:
        key = self._prefix(prefix)
        if key in routes:
            raise self.fail(
                f"Host {self.name!r}: route prefixes {routes[key][0]!r} and {prefix!r} are the same path",
                "keep one of them",
            )
        routes[key] = (prefix, self._service(service, f"routes[{prefix!r}]"))

    def names(self) -> tuple:
        return ((self.name,) if self.name else ()) + self.aliases

    def _check_tls(self) -> None:
        self.want_path("cert", "file", optional=True)
        self.want_path("key", "file", optional=True)
        if self.key is not None and self.cert is None:
            raise self.fail("Host(key=...) without cert=...", "give both, or neither")
        redirect = self.https_redirect
        if not isinstance(redirect, bool):
            self.want_number("https_redirect", 1, 65535, integer=True)
        if self.hsts is True or (type(self.hsts) is int and self.hsts > 0):
            self._set("hsts", HSTS() if self.hsts is True else HSTS(max_age=self.hsts))
            object.__setattr__(self.hsts, "where", self.where)
        elif self.hsts is not None and not isinstance(self.hsts, HSTS):
            raise self.fail(
                f"Host(hsts=...) expects True, a max-age in seconds or HSTS(...), got {self.hsts!r}",
                "e.g. hsts=HSTS(max_age=31536000, include_subdomains=True)",
            )

    def _host_name(self, name: str) -> str:
        normal = normalize_host(name)
        if not valid_host_name(normal):
            hint = "drop the port: hosts match on the name only" if re.search(r":\d+$", normal) else (
                "use an exact name like 'app.example.com' or a wildcard like '*.example.com'"
            )
            raise self.fail(f"invalid host name {name!r}", hint)
        return normal

    def _prefix(self, prefix: Any) -> str:
        if not isinstance(prefix, str):
            raise self.fail(f"route prefix must be a string like '/api', got {prefix!r}")
        bad = (
            not prefix.startswith("/")
            or "//" in prefix
            or any(seg in (".", "..") for seg in prefix.split("/"))
            or re.search(r"[?#%\s\\]", prefix)
        )
        if bad:
            raise self.fail(
                f"invalid route prefix {prefix!r}",
                "a prefix is an absolute path of plain segments, like '/' or '/api/v1'",
            )
        return prefix.rstrip("/") or "/"

    def _service(self, service: Any, label: str) -> Service:
        if not isinstance(service, Service):
            raise self.fail(
                f"Host {self.name!r} {label} must be a service (WSGI, ASGI, Static, Proxy, "
                f"Scripts, CGI, Redirect, Resource), got {type(service).__name__} {service!r}"
            )
        return service


# --------------------------------------------------------------------------- site


@spec
class Site(Spec):
    """The whole host: listeners, virtual hosts and a default.

    ``site.py`` must bind the name ``site`` to one of these.
    """

    listen: tuple = option(("tcp:8080",), doc="Endpoint strings ('tcp:8080', 'unix:/run/x.sock', 'systemd:domain=INET:index=0') or TLS(...) items.")
    hosts: tuple = option((), doc="The virtual hosts, a list of Host.")
    default: Any = option(None, doc="Host or service used when no host matches; without it such requests get 404.")
    trusted_proxies: tuple = option((), doc="Peers (IPs or CIDR networks) whose X-Forwarded-*/Forwarded headers are believed.")
    workers: Any = option(1, doc="Worker processes sharing the listening sockets; 'auto' = one per CPU. 1 serves from a single process with no master.")
    graceful_timeout: float = option(30.0, doc="Seconds a graceful stop (TERM, reload, recycling) lets in-flight requests finish before closing them.")
    max_requests: int = option(0, doc="Replace a worker gracefully after this many requests (0 = never). Recycling runs a master process even with workers=1.")
    max_requests_jitter: int = option(0, doc="Add a random 0..N to max_requests per worker so workers do not all recycle at once.")
    max_rss: int = option(0, doc="Replace a worker gracefully when its resident memory exceeds this many MiB (0 = never; checked every few seconds, Linux).")
    access_log: Any = option(None, doc="Access log: a file path (relative to the config file), '-' for stdout, or None for none. Reopened on SIGUSR1.")
    log_format: str = option("combined", doc="'combined' (Apache/nginx, client IP unquoted), 'vhost_combined' (Apache's: the host that answered and the port first, for sites sharing one log), 'json' (one object per line), or a template like '{remote} {host} {status} {duration_ms}'.")
    admin: Any = option(None, doc="Endpoint of the admin listener (/healthz, /readyz, /metrics, /status), e.g. 'tcp:9901:interface=127.0.0.1'. Off when None.")
    admin_token: Any = option(None, doc="Bearer token the admin listener requires (except on /healthz); strongly advised when it listens beyond loopback.")
    hooks: Any = option(None, doc="Dict of lifecycle hooks: on_starting, when_ready, post_worker_init, on_reload, on_exit (called with the Site), pre_request, post_request (called with the request).")
    max_request_line: int = option(8192, doc="Longest request line (method, target, version) in bytes; longer ones get 414.")
    max_header_size: int = option(32768, doc="Total bytes of a request's header lines; more gets 431.")
    max_headers: int = option(100, doc="Most header lines in one request; more gets 431.")
    max_connections: int = option(1024, doc="Open connections per process; above it new ones get 503 and are closed (0 = no cap).")
    max_connections_per_ip: int = option(0, doc="Open connections per client IP (the peer address, so a proxy in front counts as one); above it 429 (0 = no cap).")
    header_timeout: float = option(20.0, doc="Seconds for a whole request head to arrive, from its first byte (from the accept for a connection's first request); 408 after. Bytes trickling in do not extend it.")
    body_timeout: float = option(60.0, doc="Seconds allowed between two reads of a request body; 408 after.")
    keepalive_timeout: float = option(30.0, doc="Seconds an idle connection waits for its next request before it is closed.")
    write_timeout: float = option(60.0, doc="Seconds a client may leave a full send buffer unread before the connection is dropped and its buffers freed.")
    server_header: Any = option("twisthost", doc="Value of the Server response header; None omits it. The Twisted version is never sent.")

    def check(self) -> None:
        gather([self._check_lifecycle, self._check_limits, lambda: check_access_log(self, inherit=False),
                self._check_admin, self._check_listen, self._check_hosts, self._check_default,
                self._check_trusted_proxies])

    def _located(self, keyword: str, item: Any = None) -> Where | None:
        """Where in this ``Site(...)`` call ``keyword=`` (or one item of its list) is written."""
        return item_where(self.where, type(self).__name__, keyword, item)

    def where_of(self, keyword: str, item: Any = None) -> Where | None:
        """Where ``keyword=`` (or the item of its list) is written, for errors found after
        checking, such as a listener whose port is in use (``portcheck``)."""
        return self._located(keyword, item)

    def _check_admin(self) -> None:
        if self.admin is not None:
            try:
                check_endpoint(self.admin, None, "Site(admin=...)")
            except ConfigError as error:
                raise error.located(self._located("admin")) from None
        self.want("admin_token", str, "a token string", optional=True)

    def _check_listen(self) -> None:
        """Every item checked, each error at the line of the item; failed TLS(...) items left out."""
        if isinstance(self.listen, (str, TLS)):
            self._set("listen", (self.listen,))
        listen = self.want("listen", (list, tuple), "a list of endpoint strings or TLS(...)")
        if not listen:
            raise self.fail("Site(listen=...) is empty", "e.g. listen=['tcp:8080']")
        gather(lambda item=item: self._check_listen_item(item) for item in listen if not isinstance(item, TLS))
        self._set("listen", tuple(item for item in listen if not (isinstance(item, TLS) and item.failed)))

    def _check_listen_item(self, item: Any) -> None:
        try:
            check_endpoint(item, None, "Site(listen=...)")
        except ConfigError as error:
            raise error.located(self._located("listen", item)) from None

    def _check_hosts(self) -> None:
        """Names unique across hosts; hosts that failed their own checks are left out."""
        hosts = self.want("hosts", (list, tuple), "a list of Host(...)")
        seen: dict[str, Host] = {}
        gather(lambda host=host: self._check_host(host, seen) for host in hosts)
        self._set("hosts", tuple(host for host in hosts if not host.failed))

    def _check_host(self, host: Any, seen: dict) -> None:
        if not isinstance(host, Host):
            raise self.fail(
                f"Site(hosts=...) items must be Host(...), got {type(host).__name__} {host!r}",
                "write hosts=[Host('a.example', ...), ...]",
            )
        if host.failed:
            return
        if host.name is None:
            raise ConfigError(
                "a Host in Site(hosts=...) needs a name", host.where,
                "only Site(default=...) takes a host without a name",
            )
        for name in host.names():
            if name in seen:
                other = seen[name].where
                raise ConfigError(
                    f"duplicate host name {name!r}"
                    + (f" (already used at line {other.line})" if other else ""),
                    host.where,
                    "each name and alias may appear on one Host only",
                )
            seen[name] = host

    def _check_default(self) -> None:
        if isinstance(self.default, Service):
            self._set("default", Host(self.default))
            object.__setattr__(self.default, "where", self.default.service.where)
        elif self.default is not None and not isinstance(self.default, Host):
            raise self.fail(f"Site(default=...) expects a Host or a service, got {self.default!r}")
        if self.default is not None and self.default.failed:
            self._set("default", None)  # its mistakes are recorded; the rest can still be built

    def _check_trusted_proxies(self) -> None:
        networks = []
        for item in self.want_strings("trusted_proxies", "a list of IP addresses or CIDR networks"):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ConfigError(f"trusted_proxies: {item!r} is not an IP address or network",
                                  self._located("trusted_proxies", item)) from None
        self._set("trusted_proxies", tuple(networks))

    def _check_limits(self) -> None:
        """The hardening options: see docs/security.md."""
        self.want_number("max_request_line", 64, 1 << 20, integer=True)
        self.want_number("max_header_size", 256, 1 << 24, integer=True)
        self.want_number("max_headers", 1, 100000, integer=True)
        self.want_number("max_connections", 0, integer=True)
        self.want_number("max_connections_per_ip", 0, integer=True)
        for name in ("header_timeout", "body_timeout", "keepalive_timeout", "write_timeout"):
            self._set(name, float(self.want_number(name, 0.01, 24 * 3600)))
        server = self.want("server_header", str, "a string or None", optional=True)
        if server is not None and not re.fullmatch(r"[\x21-\x7e]+( [\x21-\x7e]+)*", server):
            raise self.fail(
                f"Site(server_header=...) must be printable ASCII words, got {server!r}",
                "e.g. server_header='twisthost', or None to send no Server header",
            )

    def _check_lifecycle(self) -> None:
        if self.workers == "auto":
            self._set("workers", os.cpu_count() or 1)
        self.want_number("workers", 1, 1024, integer=True)
        self._set("graceful_timeout", float(self.want_number("graceful_timeout", 0, 24 * 3600)))
        for name in ("max_requests", "max_requests_jitter", "max_rss"):
            self.want_number(name, 0, integer=True)
        if self.max_requests_jitter and not self.max_requests:
            raise self.fail("Site(max_requests_jitter=...) needs max_requests", "e.g. max_requests=1000, max_requests_jitter=100")
        from .hooks import check_hooks

        self._set("hooks", check_hooks(self))

    def uses_master(self) -> bool:
        """Worker processes under a master: several workers, or recycling asked for."""
        return self.workers > 1 or bool(self.max_requests or self.max_rss)

    def all_hosts(self) -> tuple:
        return self.hosts + ((self.default,) if self.default is not None else ())

    def services(self):
        """Every mounted service, with its host and prefix, in table order."""
        for host in self.all_hosts():
            for prefix, service in host.routes.items():
                yield host, prefix, service


SERVICE_TYPES = (WSGI, ASGI, Static, Proxy, Scripts, CGI, Redirect, Resource)
