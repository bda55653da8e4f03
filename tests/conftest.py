"""Shared fixtures: real twistd processes on ephemeral loopback ports.

Tests talk to the server the way users do, over sockets, with http.client,
curl or raw bytes; ``serve`` starts ``twistd -n twisthost`` with a config
written into the test's tmp folder.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")

#: Upper bound, in seconds, for what a process test expects "at once" or right after a short
#: timer it configured (about a second).  A loaded CI box (two shared cores) has taken over a
#: second for one local request, so nothing tighter; yet it stays well below the defaults a
#: wrong timer would fall back to (20 s and up) and the hangs the tests look for.
PROMPT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kib(pid: int, name: str) -> int:
    """A ``VmRSS``/``VmHWM``-style figure of a process, in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(name)


def write_site(folder: Path, source: str, name: str = "site.py") -> Path:
    """Write a config file (dedented) into ``folder`` and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def config_error(folder: Path, source: str, build: bool = False) -> str:
    """Write ``source`` as site.py, load it (and build it); the ConfigError's text.

    Fails the test when the config is accepted.
    """
    from twisthost.errors import ConfigError
    from twisthost.loader import load
    from twisthost.service import prepare

    path = write_site(folder, source)
    with pytest.raises(ConfigError) as caught:
        (prepare if build else load)(str(path))
    return str(caught.value)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true, and return that.

    Fails the test after ``timeout`` s; the bound is generous because a fresh
    process can take seconds on a loaded 2-core box, and only a failure waits it out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


class Server:
    """A running ``twistd -n twisthost`` subprocess."""

    def __init__(self, config: Path, port: int, extra_args=(), env=None):
        self.config, self.port = config, port
        self.log_path = Path(tempfile.mkdtemp(prefix="twisthost-test-")) / f"twistd-{port}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config),
             "--listen", f"tcp:{port}:interface=127.0.0.1", *extra_args],
            stdout=self.log_file, stderr=subprocess.STDOUT, cwd=config.parent,
            env=env,
        )
        try:
            wait_for_port(port, self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"twistd did not start:\n{self.log()}") from None

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def request(self, method="GET", path="/", host="localhost", headers=None, body=None,
                timeout=10.0):
        """One request on a fresh connection: (status, headers dict-like, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"Host": host, **(headers or {})}
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path):
    """``serve(source_or_path, ...)`` starts twistd; every server is stopped at teardown."""
    servers = []

    def start(config, *extra_args, env=None) -> Server:
        path = config if isinstance(config, Path) else write_site(tmp_path, config)
        server = Server(path, free_port(), extra_args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
    return b"".join(chunks)


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


class CountingLane:
    """A site's real lane (``twisthost.lane.lane_request``), remembering whether a request of
    ``kind`` (a lane's request class) took each head: the lane tests' proof that the plain
    cases went through the lane."""

    def __init__(self, lane, kind: type):
        self.lane, self.kind = lane, kind
        self.taken: list[bool] = []

    def __call__(self, channel, head):
        request = self.lane(channel, head)
        self.taken.append(isinstance(request, self.kind))
        return request
