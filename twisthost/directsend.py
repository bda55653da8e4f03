"""Writes that go straight to the socket when nothing is waiting in front of them.

Twisted's TCP transport buffers every write and sends it on the next write
event: per response or proxied request that is two epoll updates and a
reactor turn.  When a plain TCP/UNIX transport has nothing unsent (so the
order of bytes is kept) and is not closing, the kernel can take the bytes
now; what it does not take, and every error, goes to ``transport.write``,
whose write event sends the rest or reports the error as Twisted always does.
"""

from __future__ import annotations

from twisted.internet import tcp

from ._compat import unsent


def is_plain_socket(transport) -> bool:
    """A kernel socket without TLS: the only kind :func:`send_now` may bypass."""
    return isinstance(transport, tcp.Connection) and not transport.TLS


def idle(transport) -> bool:
    """Nothing unsent in the transport's buffers, and it is open for writing."""
    return transport.connected and not transport.disconnecting and not unsent(transport)


def send_now(transport, data: bytes, flags: int = 0) -> None:
    """``transport.write(data)``, sent at once when :func:`idle`; ``flags`` as for ``send(2)``.

    The caller has checked :func:`is_plain_socket` once for the connection.
    """
    if idle(transport):
        # Not ``writeSomeData``: its memoryview slice and retry wrapper cost more
        # than this send; a blocked send leaves it all, any error too, to the transport.
        try:
            sent = transport.socket.send(data, flags)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
