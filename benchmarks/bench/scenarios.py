"""What is measured: the scenarios and the measurement for each kind.

``throughput`` runs the load generator and reads CPU and memory around it;
``isolation`` adds a second generator on a fast static route while the slow
route saturates the server; ``upload`` sends one big body and samples memory
while it streams; ``idle`` opens many keep-alive connections and reads memory.
Every measurement returns a flat dict of metrics (see ``report.COLUMNS``).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass

from .load import Request
from .procs import Process

MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # throughput | isolation | upload | idle
    routes: tuple  # ((service, Request), ...): the first service a server offers is used
    about: str
    connections: int | None = None  # overrides --connections
    side: Request | None = None  # isolation: the fast route measured at the same time

    def route_for(self, offers) -> tuple[str, Request] | None:
        for service, request in self.routes:
            if service in offers:
                return service, request
        return None


STATIC_1K = Request("/static/1k.bin")

SCENARIOS = [
    Scenario("hello", "throughput", (("wsgi", Request("/")),), "WSGI app answering 14 bytes of text."),
    Scenario("echo-16k", "throughput", (("wsgi", Request("/echo", "POST", 16384)),),
             "WSGI app reading a 16 KiB POST body and sending it back."),
    Scenario("sleep-100ms", "isolation", (("wsgi", Request("/sleep")),),
             "WSGI app sleeping 100 ms per request at 50 connections; meanwhile a second generator "
             "(5 connections) fetches a 1 KiB static file from the same server. Servers without a file "
             "server of their own serve that file from the WSGI app.",
             connections=50, side=STATIC_1K),
    Scenario("static-1k", "throughput", (("static", STATIC_1K),), "A 1 KiB file."),
    Scenario("static-64k", "throughput", (("static", Request("/static/64k.bin")),), "A 64 KiB file."),
    Scenario("static-4m", "throughput", (("static", Request("/static/4m.bin")),), "A 4 MiB file."),
    Scenario("proxy", "throughput", (("proxy", Request("/")),),
             "Reverse proxy to one gunicorn gthread 2×4 backend serving the hello app; "
             "`direct` is wrk straight at the backend. CPU and memory are the proxy's only."),
    Scenario("upload-200m", "upload", (("wsgi", Request("/upload", "POST")), ("proxy", Request("/upload", "POST"))),
             "One POST of 200 MiB to a WSGI handler that reads and drops it (through the proxy for "
             "proxies); peak memory growth of the server tree while it streams."),
    Scenario("idle-1000", "idle", (("wsgi", Request("/")), ("static", STATIC_1K)),
             "1,000 connections each make one HTTP/1.1 request and stay open idle; memory of the server "
             "tree then. Servers without WSGI answer a 1 KiB file."),
]
SCENARIOS_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
STATIC_FILES = {"1k.bin": 1024, "64k.bin": 64 * 1024, "4m.bin": 4 * MIB}


class MemorySampler:
    """Peak RSS and PSS of a process tree, sampled in a thread while load runs."""

    def __init__(self, process: Process, interval: float):
        self.process, self.interval = process, interval
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss, pss = self.process.memory()
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()


def throughput(process: Process, generator, request: Request, options, connections=None) -> dict:
    generator.run(process.port, request, options.warmup, connections)
    before = process.cpu()
    with MemorySampler(process, 0.5) as memory:
        load = generator.run(process.port, request, options.duration, connections)
    cpu = process.cpu() - before
    return {**_load_metrics(load), **_cpu_memory(cpu, load.requests, memory)}


def isolation(process: Process, generator, request: Request, side: Request, options, connections=None) -> dict:
    generator.run(process.port, request, options.warmup, connections)
    before = process.cpu()
    with MemorySampler(process, 0.5) as memory:
        main_run = generator.start(process.port, request, options.duration, connections)
        side_load = generator.run(process.port, side, options.duration, 5)
        load = main_run.finish()
    cpu = process.cpu() - before
    side_metrics = {f"side_{key}": value for key, value in _load_metrics(side_load).items()}
    return {**_load_metrics(load), **side_metrics, **_cpu_memory(cpu, load.requests + side_load.requests, memory)}


def _load_metrics(load) -> dict:
    return {
        "rps": (load.requests - load.status_errors) / load.seconds if load.seconds else 0.0, "p50_ms": load.p50_ms, "p99_ms": load.p99_ms,
        "status_errors": load.status_errors, "socket_errors": load.socket_errors, "requests": load.requests,
    }


def _cpu_memory(cpu: float, requests: int, memory: MemorySampler) -> dict:
    return {
        "cpu_us": cpu * 1e6 / requests if requests else float("nan"),
        "rss_mib": memory.peak_rss / MIB, "pss_mib": memory.peak_pss / MIB,
    }


def upload(process: Process, request: Request, size: int, timeout: float) -> dict:
    """One POST of ``size`` bytes, streamed from a buffer of zeros; memory sampled every 20 ms."""
    _post(process.port, request.path, MIB, timeout)  # warm-up: the handler's code paths loaded
    rss0, pss0 = process.memory()
    before = process.cpu()
    with MemorySampler(process, 0.02) as memory:
        began = time.monotonic()
        status, body = _post(process.port, request.path, size, timeout)
        seconds = time.monotonic() - began
    ok = status == 200 and body.strip() == str(size).encode()
    return {
        "seconds": seconds, "mib_s": size / MIB / seconds,
        "rss_growth_mib": (memory.peak_rss - rss0) / MIB, "pss_growth_mib": (memory.peak_pss - pss0) / MIB,
        "rss_mib": memory.peak_rss / MIB, "cpu_s": process.cpu() - before,
        "status_errors": 0 if ok else 1,
    }


def _post(port: int, path: str, size: int, timeout: float) -> tuple[int, bytes]:
    chunk = bytes(MIB)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        left = size
        while left:
            piece = chunk[: min(left, len(chunk))]
            sock.sendall(piece)
            left -= len(piece)
        response = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, body


def idle(process: Process, request: Request, count: int, timeout: float) -> dict:
    """Open ``count`` connections, one request on each, then leave them idle and read memory."""
    _get_all(process.port, request.path, 3, timeout)  # warm-up
    time.sleep(0.5)
    rss0, pss0 = process.memory()
    socks, answered = _get_all(process.port, request.path, count, timeout, keep=True)
    try:
        time.sleep(1.0)
        rss, pss = process.memory()
        still_open = sum(_is_open(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    return {
        "answered": answered, "open": still_open, "rss_mib": rss / MIB, "pss_mib": pss / MIB,
        "rss_growth_mib": (rss - rss0) / MIB, "pss_growth_mib": (pss - pss0) / MIB,
    }


def _get_all(port: int, path: str, count: int, timeout: float, keep: bool = False):
    """Connect ``count`` sockets one after another, send a GET on each, wait for all answers."""
    socks = []
    payload = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.sendall(payload)
        except OSError:
            continue
        sock.setblocking(False)
        socks.append(sock)
    answered = _await_responses(socks, time.monotonic() + timeout)
    if not keep:
        for sock in socks:
            sock.close()
    return socks, answered


def _await_responses(socks, deadline: float) -> int:
    """Count sockets on which a whole response (headers + Content-Length body) arrived."""
    selector = selectors.DefaultSelector()
    buffers = {}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
        buffers[sock] = b""
    answered = 0
    while buffers and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            buffers[sock] += data
            if not data or _complete(buffers[sock]):
                answered += _complete(buffers[sock])
                selector.unregister(sock)
                del buffers[sock]
    selector.close()
    return answered


def _complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return True


def _is_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
