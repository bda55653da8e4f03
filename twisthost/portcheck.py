"""Every listener checked before any opens: a port in use is one located line, not a traceback.

Twisted reports a port it cannot bind with a ~40-line traceback, after the
listeners before it (and the admin listener) have opened.  ``twistd
twisthost`` asks here first, while it still runs in the foreground: each TCP
listener, TLS ones and the admin's included, is bound once on a throwaway
socket (as Twisted will bind it, with ``SO_REUSEADDR``) and each ``systemd:``
one looked up in what systemd passed.  A failure is a :class:`ConfigError`
at the line of the listener in site.py, with a hint naming the process that
holds the port when ``/proc`` tells.  The check and the real bind are not
atomic: a port taken in between still fails the old way.
"""

from __future__ import annotations

import errno
import os
import socket

from twisted.internet import endpoints

from ._compat import endpoint_options, systemd_passed, tcp_server_address
from .config import TLS, Site
from .errors import ConfigError, combined

_REASONS = {
    errno.EADDRINUSE: ("address already in use", None),
    errno.EACCES: ("permission denied", "ports below 1024 need root: start as root, and give "
                                        "twistd --uid/--gid to drop it once the ports are bound"),
    errno.EADDRNOTAVAIL: ("no such address on this machine", "use an interface address of this host, "
                                                             "or leave interface= out for all of them"),
}


def check_listeners(site: Site, listen=None, admin: str | None = None, systemd=None, environ=None) -> None:
    """Raise a :class:`ConfigError` for every listener that cannot be opened.

    ``listen`` is the command line's ``--listen`` endpoints when given (they
    replace the config's); ``admin`` the admin endpoint that will open, the
    config's or ``--admin``'s (None: no admin listener).  ``systemd`` (a
    ``twisted.python.systemd.ListenFDs``) and ``environ`` are what systemd
    passed and the environment the process started with; by default the
    ones Twisted read on import and ``/proc/self/environ``.
    """
    if listen:
        items = [(description, None, f"--listen {description}: ") for description in listen]
    else:
        items = [(item.endpoint, item.where, "") if isinstance(item, TLS)
                 else (item, site.where_of("listen", item), "") for item in site.listen]
    if admin is not None:
        items.append((admin, site.where_of("admin"), "") if admin == site.admin
                     else (admin, None, f"--admin {admin}: "))
    problems = []
    for description, where, prefix in items:
        problem = _problem(description, systemd, environ)
        if problem is not None:
            message, hint = problem
            problems.append(ConfigError(prefix + message, where, hint or ""))
    if problems:
        raise combined(problems)


def _problem(description: str, systemd, environ) -> tuple[str, str | None] | None:
    """``(message, hint)`` when ``description`` cannot be listened on now, else None."""
    if description.startswith("systemd:"):
        return _systemd_problem(description, systemd, environ)
    endpoint = endpoints.serverFromString(None, description)
    if isinstance(endpoint, endpoints.TCP6ServerEndpoint):
        family, default = socket.AF_INET6, "::"
    elif isinstance(endpoint, endpoints.TCP4ServerEndpoint):
        family, default = socket.AF_INET, "0.0.0.0"
    else:
        return None  # UNIX sockets: Twisted's own lock file and message
    port, interface = tcp_server_address(endpoint)
    interface = interface or default
    if port == 0:
        return None
    shown = f"[{interface}]:{port}" if ":" in interface else f"{interface}:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((interface, port))
    except OSError as error:
        reason, hint = _REASONS.get(error.errno, (os.strerror(error.errno or 0).lower(), None))
        if error.errno == errno.EADDRINUSE:
            hint = _holder_hint(port)
        return f"cannot listen on {shown}: {reason}", hint
    return None


def _systemd_problem(description: str, passed, environ) -> tuple[str, str] | None:
    """What is wrong with what systemd passed for a ``systemd:`` endpoint, as Twisted reads it.

    Twisted sees no socket at all unless ``LISTEN_PID`` is this process and
    ``LISTEN_FDNAMES`` (systemd 227+) names as many sockets as ``LISTEN_FDS``
    counts; an index or name beyond them was an ``IndexError``/``KeyError``.
    """
    options = endpoint_options(description)
    what = f"cannot listen on {description}"
    if passed is None:  # what Twisted took from the environment on import (it then unset it)
        passed = systemd_passed()
    names = list(passed.inheritedNamedDescriptors())
    count = len(passed.inheritedDescriptors())
    if not count:
        return _no_systemd_sockets(what, environ if environ is not None else _initial_environ())
    if "index" in options and not (options["index"].isdigit() and int(options["index"]) < count):
        return (f"{what}: systemd passed {count} socket(s), so index= is 0 to {count - 1}",
                f"the sockets' names: {', '.join(names)}; name=... is steadier than index=")
    if "name" in options and options["name"] not in names:
        return (f"{what}: no socket named {options['name']!r} among {', '.join(names)}",
                "the name is FileDescriptorName= of the .socket unit (default: the unit's name)")
    return None


def _no_systemd_sockets(what: str, environ) -> tuple[str, str]:
    """Why Twisted found no socket: said from the environment the process started with."""
    count = environ.get("LISTEN_FDS", "")
    if environ.get("LISTEN_PID") != str(os.getpid()) or not count.isdigit():
        return (f"{what}: systemd passed no sockets to this process (LISTEN_FDS and LISTEN_PID are not set for it)",
                "start it from a systemd .socket unit (ExecStart=twistd -n ..., no shell in between), "
                "or listen on e.g. tcp:8080")
    if "LISTEN_FDNAMES" not in environ:
        return (f"{what}: systemd passed {count} socket(s) without LISTEN_FDNAMES, which Twisted needs "
                "to use any of them", "systemd 227 and later set it; with an older one or another "
                                      "launcher, set LISTEN_FDNAMES to one name per socket, ':'-separated")
    named = len(environ["LISTEN_FDNAMES"].split(":"))
    return (f"{what}: LISTEN_FDNAMES names {named} socket(s) but LISTEN_FDS is {count}",
            "give one name per socket, ':'-separated")


def _initial_environ() -> dict[str, str]:
    """The environment this process was started with (``/proc/self/environ``, which keeps
    what Twisted unset on import), else ``os.environ``."""
    try:
        with open("/proc/self/environ", "rb") as file:
            pairs = [item.partition(b"=") for item in file.read().split(b"\0") if item]
    except OSError:
        return dict(os.environ)
    return {os.fsdecode(name): os.fsdecode(value) for name, _, value in pairs}


def _holder_hint(port: int) -> str:
    held = port_holder(port)
    if held is None:
        return f"another process holds it; `ss -ltnp 'sport = :{port}'` tells which"
    pid, command = held
    return f"process {pid} ({command}) holds it: stop it, or choose another port"


def port_holder(port: int) -> tuple[int, str] | None:
    """``(pid, command line)`` of a process listening on TCP ``port``, when ``/proc`` tells."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    # local address "0100007F:1F90", state 0A = LISTEN, inode in column 10
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(_link(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    argv = cmdline.read().rstrip(b"\0").split(b"\0")
                return int(pid), b" ".join(argv).decode("utf-8", "replace")[:120]
        except OSError:
            continue  # gone, or not ours to look at
    return None


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
