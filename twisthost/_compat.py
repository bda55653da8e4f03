"""Every private name of Twisted that twisthost still uses, fenced here.

Each has a contract test (``tests/unit/test_compat.py``) that fails with a
clear message on a Twisted that changed it, so an upgrade breaks CI in one
place instead of somewhere in a request path.  The goal is to need nothing
here; what is left and why:

- HTTP/2 over TLS still runs on Twisted's ``H2Connection``, which has no
  public import path (the h2 issue replaces it);
- :func:`poll_events` is ``EPollReactor.doPoll`` without ``log.callWithLogger``
  per event (``reactor.HostReactor``: a seventh of a lane request's CPU);
- :func:`unsent` lets a response go straight to the socket when the
  transport holds nothing (``directsend``), which Twisted cannot tell publicly;
- :func:`endpoint_options` parses a ``systemd:`` endpoint string without
  resolving inherited descriptors, so ``check`` works outside systemd;
- :func:`tcp_server_address` and :func:`systemd_passed` let the start-up check
  (``portcheck``) name a port in use, or a systemd socket that is missing, in one
  line before anything listens;
- :func:`raise_listen_errors` makes a port in use stop start-up instead of
  being logged;
- :func:`log_observers` finds the files twistd's log observers write to
  (``--logfile`` reopened on SIGUSR1, workers closing inherited ones).

- :class:`FastHeaders` reads and writes ``Headers._rawHeaders`` directly, and
  ``request.DefaultHeadersRequest.process`` (Twisted's, with cheap default
  headers) needs :func:`answer_star` and :func:`is_encoding_resource`: kept
  because the same-run benchmark without them was 8-12% worse in CPU
  µs/request (hello, echo-16k, static-1k; docs/design.md).

The worker processes (``workers.py``, ``acceptshare.py``) still override and
call private ``Process``/``Port`` methods; their rewrite is a separate issue.
"""

from __future__ import annotations

import errno

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import _IEncodingResource

_log = Logger()


def h2_connection():
    """A new ``twisted.web._http2.H2Connection`` (imported only when HTTP/2 is negotiated)."""
    from twisted.web._http2 import H2Connection

    return H2Connection()


def poll_events(reactor, timeout) -> None:
    """One ``epoll_wait`` of an ``EPollReactor`` and a call of each ready descriptor's handler.

    As Twisted's ``doPoll``, but each handler is called directly, inside a
    ``try`` instead of ``log.callWithLogger``: an error that escapes one is
    logged and the rest of the batch is still handled.
    """
    try:
        events = reactor._poller.poll(-1 if timeout is None else timeout, len(reactor._selectables))
    except OSError as error:  # as EPollReactor: EINTR is a wake-up, anything else a bug
        if error.errno == errno.EINTR:
            return
        raise
    handle, selectables = reactor._doReadOrWrite, reactor._selectables
    for fd, event in events:
        selectable = selectables.get(fd)
        if selectable is not None:
            try:
                handle(selectable, fd, event)
            except Exception:
                _log.failure("Unhandled error handling I/O of {selectable!r}", selectable=selectable)


def unsent(transport) -> bool:
    """Does a Twisted ``FileDescriptor`` transport hold bytes not yet sent, or is its write side shut?

    ``write`` appends to ``_tempDataBuffer`` until the next write event
    moves it to ``dataBuffer``; ``_writeDisconnected`` is set by a half-close.
    """
    return bool(transport.dataBuffer or transport._tempDataBuffer) or transport._writeDisconnected


def endpoint_options(description: str) -> dict:
    """The keyword options of a server endpoint string, parsed as ``serverFromString`` does, unresolved."""
    from twisted.internet import endpoints

    _, _, kwargs = endpoints._parseServer(description, None)
    return kwargs


def tcp_server_address(endpoint) -> tuple[int, str]:
    """``(port, interface)`` a ``TCP4ServerEndpoint``/``TCP6ServerEndpoint`` was made with."""
    return endpoint._port, endpoint._interface


def systemd_passed():
    """The ``ListenFDs`` Twisted's ``systemd:`` endpoints read (taken from the environment on import)."""
    from twisted.internet import endpoints

    return endpoints._SystemdParser._sddaemon


def raise_listen_errors(service) -> None:
    """Make a ``StreamServerEndpointService`` raise a listening error from ``startService``.

    Its default is to log the error and go on without the port.
    """
    service._raiseSynchronously = True


def log_observers(publisher) -> list:
    """The observers of a ``LogPublisher`` (twistd's file observer among them)."""
    return list(publisher._observers)


def observer_file(observer):
    """The file a ``FileLogObserver`` writes to, or None for other observers."""
    return getattr(observer, "_outFile", None)


#: bytes header name -> the key Twisted's ``Headers`` stores it under.
_KEYS: dict[bytes, bytes] = {}
_MAX_KEYS = 10_000  # names are client-chosen: bounded like Twisted's own name cache


def _key(name: bytes) -> bytes:
    """The storage key of ``name``, learnt from the base class itself once per name.

    Asking ``Headers`` (rather than repeating its canonicalisation) keeps
    the fast paths right whatever form a Twisted version stores names in;
    an invalid name raises here as it would there.
    """
    key = _KEYS.get(name)
    if key is None:
        probe = Headers()
        probe.setRawHeaders(name, [b""])
        (key,) = probe._rawHeaders
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[name] = key
    return key


class FastHeaders(Headers):
    """Twisted's ``Headers`` without its per-call costs for ``bytes`` names and values.

    A small request sets or reads a dozen headers.  The base class derives
    the stored name through a method call each time and rebuilds every value
    with ``b" ".join(value.splitlines())`` even when it holds no line break.
    Here the stored name comes from one dict look-up, and ``bytes`` values
    without CR or LF are kept as they are; ``str`` names or values, and
    values with line breaks, take the base class's path, so every result is
    the same.
    """

    __slots__ = ()

    def add_judged(self, fields) -> None:
        """Add ``(name, value)`` pairs a strict parser already checked (no CR/LF)."""
        raw = self._rawHeaders
        for name, value in fields:
            key = _KEYS.get(name) or _key(name)
            values = raw.get(key)
            if values is None:
                raw[key] = [value]
            else:
                values.append(value)

    def setRawHeaders(self, name, values):
        # One value is nearly every call (Server, Date, X-Request-Id: four per
        # proxied request): judged without the loop and the copy, ~1.2 of ~73 µs.
        if type(name) is bytes and type(values) is list and len(values) == 1:
            value = values[0]
            if type(value) is bytes and b"\r" not in value and b"\n" not in value:
                self._rawHeaders[_KEYS.get(name) or _key(name)] = [value]
                return
        if type(name) is bytes and type(values) is list:
            for value in values:
                if type(value) is not bytes or b"\r" in value or b"\n" in value:
                    break
            else:
                self._rawHeaders[_KEYS.get(name) or _key(name)] = values[:]
                return
        super().setRawHeaders(name, values)

    def addRawHeader(self, name, value):
        if type(name) is bytes and type(value) is bytes and b"\r" not in value and b"\n" not in value:
            self.add_judged(((name, value),))
        else:
            super().addRawHeader(name, value)

    def getRawHeaders(self, name, default=None):
        if type(name) is bytes:
            return self._rawHeaders.get(_KEYS.get(name) or _key(name)) or default
        return super().getRawHeaders(name, default)

    def hasHeader(self, name):
        if type(name) is bytes:
            return (_KEYS.get(name) or _key(name)) in self._rawHeaders
        return super().hasHeader(name)

    def removeHeader(self, name):
        if type(name) is bytes:
            self._rawHeaders.pop(_KEYS.get(name) or _key(name), None)
        else:
            super().removeHeader(name)


def answer_star(request) -> None:
    """Answer ``OPTIONS *`` as Twisted's ``Request.process`` does (``Request._handleStar``)."""
    request._handleStar()


def is_encoding_resource(resource) -> bool:
    """Does ``resource`` encode its responses (``EncodingResourceWrapper``: Twisted's gzip)?"""
    return _IEncodingResource.providedBy(resource)
