"""Load generators: wrk when installed, a small Python client otherwise.

Both give a :class:`Load`: requests, seconds, latency percentiles and error
counts.  wrk reports through a Lua ``done()`` hook that prints one JSON line,
so nothing depends on the layout of its human-readable output.  The Python
client exists so the harness (and its smoke test) runs where wrk cannot be
installed; its figures are far below wrk's and the report says which one ran.
"""

from __future__ import annotations

import http.client
import json
import math
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .install import find_tool

LUA = """\
wrk.method = {method}
wrk.body = {body}
wrk.headers["Content-Type"] = "application/octet-stream"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH {{"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    status_errors: int  # responses with status >= 400 (wrk's "Non-2xx or 3xx responses")
    socket_errors: int  # connect, read, write errors and timeouts


@dataclass
class Request:
    """What one load run sends: method, path and body size."""

    path: str
    method: str = "GET"
    body_size: int = 0


class Wrk:
    """``wrk -t1 -c50 -d10s --latency`` (the defaults), driven by a generated Lua script."""

    name = "wrk"

    def __init__(self, threads: int, connections: int, timeout: float, workdir: Path):
        self.binary = find_tool("wrk")
        self.threads, self.connections, self.timeout = threads, connections, timeout
        self.workdir = workdir

    def argv(self, url: str, request: Request, seconds: float, connections: int | None, script: str) -> list[str]:
        # wrk takes whole seconds only
        return [
            self.binary, f"-t{self.threads}", f"-c{connections or self.connections}",
            f"-d{math.ceil(seconds)}s", f"--timeout={math.ceil(self.timeout)}s", "--latency", "-s", script,
            url + request.path,
        ]

    @staticmethod
    def script_name(request: Request) -> str:
        return f"wrk-{request.method}-{request.body_size}.lua"

    def command(self, request: Request, seconds: float, connections: int | None = None) -> str:
        """The command as the report prints it."""
        argv = self.argv("http://127.0.0.1:PORT", request, seconds, connections, self.script_name(request))
        return shlex.join(["wrk", *argv[1:]])

    def start(self, port: int, request: Request, seconds: float, connections: int | None = None):
        """Start a run in the background; ``finish`` on the result waits for it."""
        script = self.workdir / self.script_name(request)
        if not script.exists():  # never rewrite it: a wrk already running may be reading it
            body = f'string.rep("x", {request.body_size})' if request.body_size else "nil"
            script.write_text(LUA.format(method=json.dumps(request.method), body=body))
        argv = self.argv(f"http://127.0.0.1:{port}", request, seconds, connections, str(script))
        return _WrkRun(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def run(self, port: int, request: Request, seconds: float, connections: int | None = None) -> Load:
        return self.start(port, request, seconds, connections).finish()


class _WrkRun:
    def __init__(self, popen: subprocess.Popen):
        self.popen = popen

    def finish(self) -> Load:
        out, _ = self.popen.communicate()
        for line in out.splitlines():
            if line.startswith("BENCH "):
                data = json.loads(line[6:])
                return Load(
                    data["requests"], data["seconds"], data["p50_us"] / 1000, data["p99_us"] / 1000,
                    data["status_errors"], data["socket_errors"],
                )
        raise RuntimeError(f"wrk failed (status {self.popen.returncode}): {out.strip()[-500:]}")


class PyClient:
    """Threads with keep-alive ``http.client`` connections: wrk's stand-in."""

    name = "python"

    def __init__(self, connections: int, timeout: float):
        self.connections, self.timeout = connections, timeout

    def command(self, request: Request, seconds: float, connections: int | None = None) -> str:
        return f"python client: {connections or self.connections} threads, {seconds:g} s, {request.method} {request.path}"

    def start(self, port: int, request: Request, seconds: float, connections: int | None = None):
        run = _PyRun(port, request, seconds, connections or self.connections, self.timeout)
        run.begin()
        return run

    def run(self, port: int, request: Request, seconds: float, connections: int | None = None) -> Load:
        return self.start(port, request, seconds, connections).finish()


class _PyRun:
    def __init__(self, port, request, seconds, connections, timeout):
        self.port, self.request, self.seconds, self.timeout = port, request, seconds, timeout
        self.latencies: list[float] = []
        self.status_errors = self.socket_errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(connections)]

    def begin(self) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + self.seconds
        for thread in self.threads:
            thread.start()

    def _loop(self) -> None:
        body = b"x" * self.request.body_size if self.request.body_size else None
        conn = None
        while time.monotonic() < self.deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            began = time.monotonic()
            try:
                conn.request(self.request.method, self.request.path, body=body)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                with self.lock:
                    self.socket_errors += 1
                continue
            with self.lock:
                self.latencies.append(time.monotonic() - began)
                self.status_errors += response.status >= 400
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def finish(self) -> Load:
        for thread in self.threads:
            thread.join()
        ordered = sorted(self.latencies)

        def percentile(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000 if ordered else 0.0

        return Load(
            len(ordered), time.monotonic() - self.started, percentile(0.5), percentile(0.99),
            self.status_errors, self.socket_errors,
        )


def make(kind: str, threads: int, connections: int, timeout: float, workdir: Path):
    """``kind`` is 'wrk', 'python', or 'auto' (wrk when installed)."""
    if kind == "wrk" or (kind == "auto" and find_tool("wrk")):
        if not find_tool("wrk"):
            raise RuntimeError("wrk is not installed")
        return Wrk(threads, connections, timeout, workdir)
    return PyClient(connections, timeout)
