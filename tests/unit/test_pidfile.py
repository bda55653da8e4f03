"""``twisthost.pidfile``: the pidfile kept by a helper that stays root (``--uid``/``--gid``).

The helper is a real forked process; the reactor is Twisted's ``MemoryReactor``,
which records the shutdown trigger the server would run.
"""

from __future__ import annotations

import os
import time

import pytest
from twisted.internet.testing import MemoryReactor

from twisthost.pidfile import PidFile, take_over


@pytest.mark.parametrize("options, taken", [
    ({"pidfile": "/run/t.pid", "uid": 65534, "gid": None}, True),
    ({"pidfile": "/run/t.pid", "uid": None, "gid": 65534}, True),
    ({"pidfile": "/run/t.pid", "uid": None, "gid": None}, False),   # twistd removes its own
    ({"pidfile": "", "uid": 65534, "gid": None}, False),            # --pidfile= : none at all
])
def test_take_over_only_when_root_will_be_dropped(options, taken):
    if os.getuid() != 0:
        pytest.skip("only root drops privileges")
    before = dict(options)
    assert take_over(options) == (before["pidfile"] if taken else None)
    assert options["pidfile"] == ("" if taken else before["pidfile"])  # twistd leaves it alone


def test_take_over_without_twistd():
    assert take_over(None) is None


def started(tmp_path) -> tuple[PidFile, MemoryReactor]:
    reactor = MemoryReactor()
    keeper = PidFile(str(tmp_path / "server.pid"), reactor)
    keeper.privilegedStartService()
    return keeper, reactor


def helper_gone(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def test_written_then_removed_after_the_reactor_shut_down(tmp_path):
    keeper, reactor = started(tmp_path)
    assert (tmp_path / "server.pid").read_text() == str(os.getpid())
    (trigger, args, kwargs), = reactor.triggers["after"]["shutdown"]
    trigger(*args, **kwargs)  # waits for the helper
    assert not (tmp_path / "server.pid").exists()
    assert helper_gone(keeper.helper)


def test_a_pidfile_naming_another_process_is_left(tmp_path):
    keeper, _ = started(tmp_path)
    (tmp_path / "server.pid").write_text("1")  # another server's now
    keeper.remove()
    assert (tmp_path / "server.pid").read_text() == "1"


def test_the_helper_also_removes_it_when_the_server_dies(tmp_path):
    keeper, _ = started(tmp_path)
    os.close(keeper.pipe)  # what the kernel does for a server killed outright
    deadline = time.monotonic() + 30
    while not helper_gone(keeper.helper):
        assert time.monotonic() < deadline, "the helper did not end"
        time.sleep(0.01)
    assert not (tmp_path / "server.pid").exists()
