"""Workers share new connections by how many each holds, not by who wakes first.

All workers wait on the one listening socket the master holds.  A burst of
connections (a client opening its keep-alive pool, a proxy in front, wrk)
wakes every worker, but on a busy box only the one already on a CPU runs,
and Twisted's ``Port.doRead`` accepts up to 100 connections per wake-up: it
takes the whole burst while the others wait to be scheduled.  Measured with
``workers=2`` and wrk's 50 keep-alive connections: in 2 of 3 rounds one
worker held all 50 and the pair served what one process does.

So the master keeps a :class:`ConnectionBoard` in memory it shares with the
workers it forks: one counter per worker, its open connections (or
:data:`IDLE` while it is not accepting).  A worker accepts one connection at
a time, and only while it holds at most :data:`MARGIN` more than the least
loaded accepting worker; otherwise it stops watching the socket for
:data:`RECHECK` seconds, which leaves the connection to the others.  A worker
that has declined for :data:`GIVE_UP` seconds accepts anyway, and goes on
accepting until the others catch up, so a stuck or busy sibling delays
clients once by at most that, not once per connection.
"""

from __future__ import annotations

import mmap
import socket

from twisted.internet import defer, endpoints, error, tcp, unix

SLOTS = 256  # workers the board has room for; beyond it a worker accepts unbalanced
IDLE = -1  # the slot of a worker that is not accepting (starting, stopping, gone)
MARGIN = 2  # connections a worker may hold beyond the least loaded one before it waits
RECHECK = 0.002  # seconds a worker that declined stops watching the socket
GIVE_UP = 0.05  # seconds of declining after which it accepts anyway


class ConnectionBoard:
    """Open connections per worker, in an anonymous shared mapping that forked workers inherit."""

    def __init__(self):
        self._memory = mmap.mmap(-1, SLOTS * 4)  # MAP_SHARED: writes are seen across fork
        self.counts = memoryview(self._memory).cast("i")
        for slot in range(SLOTS):
            self.counts[slot] = IDLE
        self._free = list(range(SLOTS))

    def take_seat(self) -> "Seat | None":
        """The master: a seat for a new worker (IDLE until it accepts), None when all are taken."""
        return Seat(self, self._free.pop(0)) if self._free else None

    def release(self, seat: "Seat | None") -> None:
        """The master: the worker of ``seat`` is gone."""
        if seat is not None:
            seat.leave()
            self._free.append(seat.slot)


class Seat:
    """One worker's counter on the board; the worker inherits it across fork."""

    def __init__(self, board: ConnectionBoard, slot: int):
        self.counts, self.slot = board.counts, slot

    def may_accept(self, count: int) -> bool:
        """Publish ``count``; True unless it is ahead of the least loaded accepting worker."""
        self.counts[self.slot] = count
        least = min((c for c in self.counts if c != IDLE), default=count)
        return count <= least + MARGIN

    def leave(self) -> None:
        """Not accepting any more (draining, or gone): the others take new connections."""
        self.counts[self.slot] = IDLE


class _Balanced:
    """``Port.doRead`` that asks the board first and accepts one connection per wake-up."""

    seat: Seat  # set by SharedSocketEndpoint.listen
    count = None  # () -> open connections of this worker; likewise
    _declined_since: float | None = None

    def doRead(self):
        if self.seat.may_accept(self.count()):
            self._declined_since = None
        else:
            now = self.reactor.seconds()
            if self._declined_since is None:
                self._declined_since = now
            if now - self._declined_since < GIVE_UP:
                self.stopReading()
                self.reactor.callLater(RECHECK, self._recheck)
                return None
            # The others have not taken it for GIVE_UP s (busy or stuck): accept,
            # and go on accepting until the board says this worker may again.
        self.numberAccepts = 1  # Twisted's doRead grows it after a full round
        return super().doRead()

    def _recheck(self) -> None:
        if self.connected and not self.disconnecting:
            self.startReading()


class _TCPPort(_Balanced, tcp.Port):
    pass


class _UNIXPort(_Balanced, unix.Port):
    pass


class SharedSocketEndpoint(endpoints.AdoptedStreamServerEndpoint):
    """``AdoptedStreamServerEndpoint`` whose port accepts by the board.

    ``listen`` is the base class's with ``reactor.adoptStreamPort``'s two
    lines inlined to build the balanced port class.
    """

    def __init__(self, reactor, fileno: int, family: int, seat: Seat, count):
        super().__init__(reactor, fileno, family)
        self.seat, self.count = seat, count

    def listen(self, factory):
        if self._used:
            return defer.fail(error.AlreadyListened())
        self._used = True
        try:
            self._setNonBlocking(self.fileno)
            if self.addressFamily == socket.AF_UNIX:
                port = _UNIXPort._fromListeningDescriptor(self.reactor, self.fileno, factory)
            else:
                port = _TCPPort._fromListeningDescriptor(self.reactor, self.fileno, self.addressFamily, factory)
            port.seat, port.count = self.seat, self.count
            port.startListening()
            self._close(self.fileno)
        except BaseException:
            return defer.fail()
        return defer.succeed(port)
