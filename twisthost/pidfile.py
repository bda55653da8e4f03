"""twistd's ``--pidfile`` when ``--uid``/``--gid`` drop root: still removed at stop.

twistd writes the pidfile as root, drops privileges, and at stop tries to
remove it as the new user, which cannot (a pidfile lives in a folder such as
``/run`` that only root may write): "No permission to delete pid file", and a
stale file left for the next start to puzzle over.  Servers that drop
privileges keep something root for this (nginx's and Apache's master
processes); the same is done here, as small as it can be.

:class:`PidFile` takes the pidfile over from twistd: it writes it (as root,
before any listener opens) and forks a helper that keeps root, closes every
file descriptor but one pipe, ignores signals and waits.  When the reactor has
shut down, the server asks the helper to remove the file and waits for it, so
the file is gone before the process exits; if the server dies instead, the
pipe's end tells the helper just the same.  The helper removes the file only
if it still names the server's process.
"""

from __future__ import annotations

import os
import signal

from twisted.application.service import Service

#: Signals a terminal or a service manager may send to the whole process group:
#: the helper outlives them until the server is gone.
_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE)


def take_over(twistd_options) -> str | None:
    """The pidfile path to keep with :class:`PidFile`, taken out of twistd's options; or None.

    Only when twistd will drop root (``--uid`` or ``--gid`` given, running as
    root): otherwise twistd removes its pidfile itself and is left to it.
    """
    path = twistd_options.get("pidfile") if twistd_options is not None else None
    dropping = twistd_options is not None and (
        twistd_options.get("uid") is not None or twistd_options.get("gid") is not None)
    if not path or not dropping or os.getuid() != 0:
        return None
    twistd_options["pidfile"] = ""  # twistd neither writes nor tries to remove it now
    return path


class PidFile(Service):
    """Writes ``path`` with this process's id and has it removed at stop (see the module)."""

    def __init__(self, path: str, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.path, self.reactor = path, reactor
        self.helper = self.pipe = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        server = os.getpid()  # after twistd daemonised: the process to signal
        with open(self.path, "wb") as file:
            file.write(b"%d" % server)
        read, write = os.pipe()
        helper = os.fork()
        if helper == 0:
            _remove_when_told(read, self.path, server)  # never returns
        os.close(read)
        self.helper, self.pipe = helper, write
        self.reactor.addSystemEventTrigger("after", "shutdown", self.remove)

    def remove(self) -> None:
        """Have the helper remove the pidfile, and wait until it has."""
        if self.pipe is None:
            return
        pipe, self.pipe = self.pipe, None
        try:
            os.write(pipe, b"x")
        finally:
            os.close(pipe)
        os.waitpid(self.helper, 0)


def _remove_when_told(pipe: int, path: str, server: int) -> None:
    """The helper: wait for a byte or the end of ``pipe``, remove ``path`` if it names ``server``."""
    status = 1
    try:
        for signum in _IGNORED:
            signal.signal(signum, signal.SIG_IGN)
        os.closerange(0, pipe)  # nothing of the server's: no sockets, no log files
        os.closerange(pipe + 1, os.sysconf("SC_OPEN_MAX"))
        os.read(pipe, 1)
        try:
            with open(path, "rb") as file:
                named = file.read().strip()
            if named == b"%d" % server:
                os.unlink(path)
        except FileNotFoundError:
            pass
        status = 0
    finally:
        os._exit(status)  # none of the server's exit handlers
