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

The worker processes (``workers.py``, ``acceptshare.py``) still override and
call private ``Process``/``Port`` methods; their rewrite is a separate issue.
"""

from __future__ import annotations

import errno

from twisted.logger import Logger

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
