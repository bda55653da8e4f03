"""The reactor ``twistd twisthost`` runs on where epoll exists.

Twisted's epoll reactor hands each ready descriptor to its handler inside
``log.callWithLogger``, which copies two context dicts per event so that a
legacy ``log.msg`` made while handling it is tagged with the connection's log
prefix.  Measured on the lanes (a cached static file, a proxied GET), that is
about a seventh of the request's CPU: the same-run figures are in
docs/design.md.  twisthost and the parts of Twisted it runs log through
``twisted.logger``, whose events do not read that context, so
:class:`HostReactor` calls the handler directly.

Error containment stays as Twisted's: an exception that escapes one
descriptor's handling (a protocol's ``connectionLost`` raising) is logged
and the other descriptors of the same poll are still handled.  What is
lost: a legacy message logged from inside I/O handling shows ``-`` as its
system instead of the connection's prefix.

``twistd --reactor=NAME twisthost`` still picks any other reactor, and
where there is no epoll twistd's default serves (``twisthost.tap``).
"""

from __future__ import annotations

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor

from ._compat import poll_events


class HostReactor(EPollReactor):
    """:class:`EPollReactor` dispatching I/O events without a log context."""

    def doPoll(self, timeout):
        poll_events(self, timeout)

    doIteration = doPoll


def install() -> None:
    """Make :class:`HostReactor` the reactor, as Twisted's reactor modules' ``install`` do."""
    installReactor(HostReactor())
