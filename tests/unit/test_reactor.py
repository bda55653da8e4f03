"""HostReactor: Twisted's epoll reactor without a log context per event, and as contained as Twisted's.

A real (not installed) ``HostReactor`` on real socket pairs: no network, no sleeps.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet.abstract import FileDescriptor

select = pytest.importorskip("select")
if not hasattr(select, "epoll"):
    pytest.skip("no epoll here", allow_module_level=True)

from twisthost.reactor import HostReactor  # noqa: E402


class Reader(FileDescriptor):
    """One end of a socket pair; ``fail_on_lost`` makes its ``connectionLost`` raise."""

    def __init__(self, sock, reactor, fail_on_read=False, fail_on_lost=False):
        super().__init__(reactor)
        self.sock, self.fail_on_read, self.fail_on_lost = sock, fail_on_read, fail_on_lost
        self.got: list[bytes] = []

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        if self.fail_on_read:
            raise RuntimeError("a protocol bug while reading")
        self.got.append(self.sock.recv(100))

    def connectionLost(self, reason):
        self.stopReading()
        if self.fail_on_lost:
            raise RuntimeError("a protocol bug in connectionLost")


@pytest.fixture
def reactor():
    reactor = HostReactor()
    yield reactor
    reactor._poller.close()


def pair():
    a, b = socket.socketpair()
    return a, b


def test_ready_descriptors_are_handled(reactor):
    a, b = pair()
    try:
        reader = Reader(a, reactor)
        reader.startReading()
        b.send(b"hello")
        reactor.doPoll(1)
        assert reader.got == [b"hello"]
    finally:
        a.close(), b.close()


def test_an_error_escaping_one_handler_does_not_stop_the_batch(reactor, caplog):
    """Twisted's doPoll logs such an error (callWithLogger) and goes on; so must ours."""
    broken_a, broken_b = pair()
    fine_a, fine_b = pair()
    errors = []
    from twisted.logger import globalLogPublisher

    observer = lambda event: errors.append(event) if event.get("log_failure") else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        broken = Reader(broken_a, reactor, fail_on_read=True, fail_on_lost=True)
        fine = Reader(fine_a, reactor)
        broken.startReading(), fine.startReading()
        broken_b.send(b"x"), fine_b.send(b"y")
        reactor.doPoll(1)  # both are ready in this one poll
        assert fine.got == [b"y"]
        assert any("protocol bug" in str(event["log_failure"].value) for event in errors)
    finally:
        globalLogPublisher.removeObserver(observer)
        for sock in (broken_a, broken_b, fine_a, fine_b):
            sock.close()
