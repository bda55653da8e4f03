"""The reactor ``twistd twisthost`` runs on where epoll exists.

Twisted's epoll reactor hands each ready descriptor to its handler inside
``log.callWithLogger``, which copies two context dicts per event so that a
legacy ``log.msg`` made while handling it is tagged with the connection's log
prefix.  That costs ~3 µs per event, and a proxied request is two events (the
client's request, the upstream's answer): a few percent of the whole request.
twisthost and the parts of Twisted it runs log through ``twisted.logger``,
whose events do not read that context, so :class:`HostReactor` calls the
handler directly.  What is lost: a legacy message logged from inside I/O
handling (Twisted's "Unhandled Error" when a protocol raises) shows ``-`` as
its system instead of the connection's prefix; the traceback is unchanged.

``twistd --reactor=NAME twisthost`` still picks any other reactor, and
where there is no epoll twistd's default serves (``twisthost.tap``).
"""

from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor


class HostReactor(EPollReactor):
    """:class:`EPollReactor` dispatching I/O events without a log context."""

    def doPoll(self, timeout):
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as error:  # as EPollReactor: EINTR is a wake-up, anything else a bug
            if error.errno == errno.EINTR:
                return
            raise
        handle, selectables = self._doReadOrWrite, self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                handle(selectable, fd, event)

    doIteration = doPoll


def install() -> None:
    """Make :class:`HostReactor` the reactor, as Twisted's reactor modules' ``install`` do."""
    installReactor(HostReactor())
