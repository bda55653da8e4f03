"""A site built from a site.py in process, spoken to over ``StringTransport``s.

The real ``HostService`` and its HTTP factory answer; only the sockets are
replaced, so a unit test sees the bytes a client would.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from twisthost.service import HostService, prepare

PEER = IPv4Address("TCP", "127.0.0.1", 50000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)


class InProcessSite:
    """``HostService(prepare(site.py))``; :meth:`exchange` sends raw bytes on a new connection."""

    def __init__(self, folder: Path, source: str):
        path = folder / "site.py"
        path.write_text(textwrap.dedent(source).lstrip())
        self.service = HostService(prepare(str(path)))
        self.factory = self.service.factory
        self.clock = Clock()

    def exchange(self, data: bytes) -> bytes:
        """What the server wrote back for ``data`` before the connection was dropped."""
        protocol = self.factory.buildProtocol(PEER)
        protocol.channel.callLater = self.clock.callLater  # the channel's timers on our clock
        transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        protocol.makeConnection(transport)
        try:
            protocol.dataReceived(data)
            return transport.value()
        finally:
            protocol.connectionLost(Failure(ConnectionDone()))


def request(target: str, *headers: str, method: str = "GET", host: str = "site.test") -> bytes:
    """An HTTP/1.1 request head asking the server to close after answering."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def head_of(response: bytes) -> tuple[int, dict[bytes, list[bytes]]]:
    """``(status, {lower-case name: [values]})`` of the first response in ``response``."""
    head = response.partition(b"\r\n\r\n")[0].split(b"\r\n")
    fields: dict[bytes, list[bytes]] = {}
    for line in head[1:]:
        name, _, value = line.partition(b":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return int(head[0].split(b" ")[1]), fields
