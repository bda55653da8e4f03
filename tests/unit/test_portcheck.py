"""``twisthost.portcheck``: listeners that cannot open, found before any does.

A port "in use" is held by a socket this test binds, so the holder ``/proc``
names is this very process.
"""

from __future__ import annotations

import os
import socket

import pytest
from conftest import free_port
from twisted.python.systemd import ListenFDs

from twisthost.errors import ConfigError
from twisthost.loader import load
from twisthost.portcheck import check_listeners, port_holder


@pytest.fixture
def held():
    """A loopback port this process listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def site(tmp_path, listen: str, admin: str = "None"):
    (tmp_path / "site.py").write_text(
        "from twisthost import Host, Redirect, Site\n"
        "site = Site(\n"
        f"    listen=[{listen}],\n"
        f"    admin={admin},\n"
        "    default=Host(Redirect('/')),\n"
        ")\n")
    return load(str(tmp_path / "site.py"))


def error_of(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


def test_a_port_in_use_is_one_line_at_the_listener_with_its_holder(tmp_path, held):
    config = site(tmp_path, f"'tcp:{free_port()}:interface=127.0.0.1', 'tcp:{held}:interface=127.0.0.1'")
    message = error_of(lambda: check_listeners(config))
    first, hint = message.split("\n")
    assert first == f"{tmp_path / 'site.py'}:3: error: cannot listen on 127.0.0.1:{held}: address already in use"
    assert hint.startswith(f"  hint: process {os.getpid()} (") and "holds it" in hint


def test_the_admin_listener_is_checked_too(tmp_path, held):
    config = site(tmp_path, f"'tcp:{free_port()}:interface=127.0.0.1'", admin=f"'tcp:{held}:interface=127.0.0.1'")
    message = error_of(lambda: check_listeners(config, admin=config.admin))
    assert message.startswith(f"{tmp_path / 'site.py'}:4: error: cannot listen on 127.0.0.1:{held}")


def test_command_line_endpoints_are_named_as_given(tmp_path, held):
    config = site(tmp_path, f"'tcp:{free_port()}'")
    message = error_of(lambda: check_listeners(config, [f"tcp:{held}:interface=127.0.0.1"]))
    assert message.startswith(f"error: --listen tcp:{held}:interface=127.0.0.1: cannot listen on 127.0.0.1:{held}")
    message = error_of(lambda: check_listeners(config, admin=f"tcp:{held}:interface=127.0.0.1"))
    assert message.startswith(f"error: --admin tcp:{held}:interface=127.0.0.1: cannot listen")


def test_every_listener_that_cannot_open_is_reported(tmp_path, held):
    with socket.create_server(("127.0.0.1", 0)) as other:
        second = other.getsockname()[1]
        config = site(tmp_path, f"'tcp:{held}:interface=127.0.0.1',\n            'tcp:{second}:interface=127.0.0.1'")
        message = error_of(lambda: check_listeners(config))
    assert f"site.py:3: error: cannot listen on 127.0.0.1:{held}" in message
    assert f"site.py:4: error: cannot listen on 127.0.0.1:{second}" in message


@pytest.mark.parametrize("listen", ["'tcp:0'", "'unix:{folder}/t.sock'", "'tcp:{free}:interface=127.0.0.1'",
                                    "'tcp6:{free}:interface=\\\\:\\\\:1'"])
def test_what_can_open_passes(tmp_path, listen):
    check_listeners(site(tmp_path, listen.format(folder=tmp_path, free=free_port())))
    assert not (tmp_path / "t.sock").exists()  # nothing was opened


def test_a_missing_address(tmp_path):
    message = error_of(lambda: check_listeners(site(tmp_path, f"'tcp:{free_port()}:interface=192.0.2.7'")))
    assert f"cannot listen on 192.0.2.7:" in message and "no such address on this machine" in message


def test_port_holder(held):
    pid, command = port_holder(held)
    assert pid == os.getpid() and "python" in command
    assert port_holder(free_port()) is None


SYSTEMD = "'systemd:domain=INET:index=0'"
NONE = ListenFDs([])  # what Twisted finds when it cannot use what was passed
PID = str(os.getpid())


@pytest.mark.parametrize("passed, environ, listen, message", [
    (NONE, {}, SYSTEMD, "systemd passed no sockets to this process"),
    (NONE, {"LISTEN_PID": "1", "LISTEN_FDS": "1"}, SYSTEMD, "systemd passed no sockets"),  # for another process
    (NONE, {"LISTEN_PID": PID, "LISTEN_FDS": "1"}, SYSTEMD, "systemd passed 1 socket(s) without LISTEN_FDNAMES"),
    (NONE, {"LISTEN_PID": PID, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, SYSTEMD,
     "LISTEN_FDNAMES names 1 socket(s) but LISTEN_FDS is 2"),
    (ListenFDs([3], ["web"]), {}, "'systemd:domain=INET:index=1'", "so index= is 0 to 0"),
    (ListenFDs([3], ["web"]), {}, "'systemd:domain=INET:name=api'", "no socket named 'api' among web"),
])
def test_systemd_sockets_that_are_not_there(tmp_path, passed, environ, listen, message):
    text = error_of(lambda: check_listeners(site(tmp_path, listen), systemd=passed, environ=environ))
    assert text.startswith(f"{tmp_path / 'site.py'}:3: error: cannot listen on systemd:") and message in text
    assert "\n  hint: " in text


def test_systemd_sockets_that_are_there(tmp_path):
    check_listeners(site(tmp_path, "'systemd:domain=INET:index=1', 'systemd:domain=INET:name=api'"),
                    systemd=ListenFDs([3, 4], ["web", "api"]), environ={})
