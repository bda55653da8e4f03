"""A deadline that moves on every request, kept with one ``DelayedCall``.

A connection's timeout changes several times per request (head, body,
answering, keep-alive; an upstream connection goes idle and is taken again),
and a ``DelayedCall`` cancelled or rescheduled each time costs heap
operations in the reactor.  A :class:`LazyTimer` only records the new
deadline; its one call is moved when the deadline comes sooner than it, and
when it fires early it re-arms itself for the rest.
"""

from __future__ import annotations


class LazyTimer:
    """Calls ``expired()`` once the last deadline set by :meth:`start` passes."""

    __slots__ = ("_call_later", "_expired", "_call", "deadline")

    def __init__(self, call_later, expired):
        self._call_later = call_later  # reactor.callLater, or a protocol's patched one
        self._expired = expired
        self._call = None  # the pending DelayedCall, due at or before deadline
        self.deadline: float | None = None  # clock time it expires; None when off

    def start(self, period: float) -> None:
        """Expire ``period`` seconds from now (instead of any earlier setting)."""
        call = self._call
        if call is None:
            self._call = call = self._call_later(period, self._fired)
            self.deadline = call.getTime()
        else:
            self.deadline = deadline = call.seconds() + period
            if deadline < call.getTime():
                call.reset(period)

    def stop(self) -> None:
        """Do not expire; a call still pending finds nothing to do."""
        self.deadline = None

    def cancel(self) -> None:
        """Stop, and drop the pending call (its owner is going away)."""
        self.deadline = None
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def close(self) -> None:
        """Cancel for good, as the owner goes away: ``expired`` (mostly the owner's
        bound method, so owner and timer hold each other) is let go, and both are
        freed by reference counting instead of waiting for the cyclic GC."""
        self.cancel()
        self._expired = _closed

    def _fired(self) -> None:
        call, self._call = self._call, None
        if self.deadline is None:
            return
        left = self.deadline - call.seconds()
        if left > 0:
            self._call = self._call_later(left, self._fired)
            return
        self.deadline = None
        self._expired()


def _closed() -> None:
    """What a closed :class:`LazyTimer` calls if started again: nothing."""
