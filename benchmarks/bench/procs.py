"""Servers as process trees: start, wait until they answer, measure, stop.

Every figure is summed over the whole tree (master, workers, uWSGI's HTTP
router, nginx's workers), read from ``/proc`` so that nothing has to be
installed in the servers' environments:

- CPU: ``utime + stime + cutime + cstime`` from ``/proc/PID/stat``.  The
  children's fields keep the time of workers that exited and were reaped, so
  the difference between two readings is the tree's CPU in that window.
- memory: ``Rss`` and ``Pss`` from ``/proc/PID/smaps_rollup``.  PSS divides
  shared pages among the processes sharing them, so it is the fair figure for
  pre-forking servers whose workers share most of their memory.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
NOT_AVAILABLE = re.compile(r"not available yet|got an unknown option", re.I)


class StartError(Exception):
    """The server did not come up; ``available`` is False when it is a missing feature."""

    def __init__(self, message: str, available: bool = True):
        super().__init__(message)
        self.available = available


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the name may hold spaces and ')'


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    return parents


def tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return total / TICK


def memory(pids) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pids``."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return rss, pss


@dataclass
class Process:
    """A started server: its root ``Popen``, its log, and how it stopped."""

    name: str
    popen: subprocess.Popen | None  # None: a server someone else runs (see attach)
    port: int
    log_path: Path | None = None
    stop_note: str = ""
    pid: int = field(init=False)

    def __post_init__(self):
        self.pid = self.popen.pid if self.popen else 0

    @classmethod
    def attach(cls, name: str, pid: int, port: int) -> "Process":
        """Measure a server started elsewhere (the proxy backend); stop() leaves it alone."""
        process = cls(name, None, port)
        process.pid = pid
        return process

    def pids(self) -> list[int]:
        return tree(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def memory(self) -> tuple[int, int]:
        return memory(self.pids())

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").strip().splitlines()[-lines:])

    def wait_ready(self, path: str, timeout: float) -> None:
        """Poll with real HTTP requests until the server answers ``path`` at all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen and self.popen.poll() is not None:
                tail = self.log_tail()
                message = f"exited with status {self.popen.returncode} before answering"
                raise StartError(f"{message}: {_last_error(tail)}", not NOT_AVAILABLE.search(tail))
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        raise StartError(f"did not answer GET {path} within {timeout:.0f} s: {_last_error(self.log_tail())}")

    def stop(self, timeout: float) -> bool:
        """SIGTERM, wait for the whole tree to go; SIGKILL after ``timeout``.

        Returns True when the server stopped by itself.  A hang is kept in
        ``stop_note`` for the report: a server that cannot be stopped cleanly
        is something users need to know.
        """
        if self.popen is None:
            return True
        pids = self.pids()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.popen.poll()
            if not [pid for pid in pids if _alive(pid)]:
                return True
            time.sleep(0.05)
        left = [pid for pid in pids if _alive(pid)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()
        self.stop_note = f"stop hung: {len(left)} process(es) killed after {timeout:g} s"
        return False


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def _last_error(tail: str) -> str:
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if NOT_AVAILABLE.search(line) or "Error" in line or "error" in line:
            return line[-300:]
    return lines[-1][-300:] if lines else "(no output)"


def start(name: str, argv: list[str], port: int, log_path: Path, env: dict, cwd: Path) -> Process:
    """Start ``argv`` in its own session (so a hung tree can be found and killed)."""
    log_file = open(log_path, "wb")
    try:
        popen = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )
    finally:
        log_file.close()
    return Process(name, popen, port, log_path)
