"""Site(workers=N) over real twistd: a master, worker processes, signals, load."""

from __future__ import annotations

import collections
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import write_site
from test_lifecycle import SLOW, get, hammer
from test_proxy_live import ws_upstream  # noqa: F401  (a fixture: a WebSocket echo server)
from websockets.sync.client import connect as ws_connect


@pytest.fixture
def slow_site(tmp_path):
    write_site(tmp_path, SLOW, "slow.py")
    return tmp_path


def workers_site(options: str = "", factory: str = "make()") -> str:
    return f"""
        from twisthost import Resource, Site
        site = Site(default=Resource("slow:{factory}"), {options})
        """


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return {int(p) for p in listing.read().split()}


def wait_until(predicate, timeout=30.0, what="condition"):
    """Generous: a fresh worker needs a second, much more on a loaded 2-core box."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def serving_pids(port, count=60, concurrency=8, path="/?delay=0.02") -> collections.Counter:
    with ThreadPoolExecutor(concurrency) as pool:
        bodies = list(pool.map(lambda _: get(port, path)[1], range(count)))
    return collections.Counter(int(body.split(b"pid=")[1]) for body in bodies)


def start(serve, options):
    server = serve(workers_site(options))
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    return server


def test_workers_share_the_load_and_the_master_never_serves(serve, slow_site):
    server = start(serve, "workers=2")
    workers = children(server.proc.pid)
    assert len(workers) == 2
    pids = serving_pids(server.port, count=200, concurrency=16)
    assert set(pids) == workers and server.proc.pid not in pids
    assert min(pids.values()) >= 200 * 0.1, pids  # each gets a real share


def test_killed_worker_is_replaced_and_no_request_fails(serve, slow_site):
    server = start(serve, "workers=2")
    victim = sorted(children(server.proc.pid))[0]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: len(children(server.proc.pid) - {victim}) == 2, what="replacement")
    assert time.monotonic() - started < 2
    assert set(serving_pids(server.port)) <= children(server.proc.pid)
    assert f"worker {victim} died" in server.log() and "SIGKILL" in server.log()


def test_ttin_and_ttou_change_the_worker_count(serve, slow_site):
    server = start(serve, "workers=2")
    server.signal(signal.SIGTTIN)
    wait_until(lambda: len(children(server.proc.pid)) == 3, what="a third worker")
    for left in (2, 1):  # one signal at a time: pending signals of one kind merge
        server.signal(signal.SIGTTOU)
        wait_until(lambda left=left: len(children(server.proc.pid)) == left, what=f"{left} worker(s)")
    server.signal(signal.SIGTTOU)  # never below one
    time.sleep(0.5)
    assert len(children(server.proc.pid)) == 1
    assert get(server.port)[0] == 200


@pytest.mark.slow
def test_reloads_under_load_replace_workers_without_errors(serve, slow_site):
    server = start(serve, "workers=2")
    site_py = slow_site / "site.py"
    first = children(server.proc.pid)
    stop, results = threading.Event(), []
    threads = [threading.Thread(target=hammer, args=(server.port, stop, results)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for number in range(2):
            old, new = ("make()", "make_v2()") if number % 2 == 0 else ("make_v2()", "make()")
            site_py.write_text(site_py.read_text().replace(old, new))
            server.signal(signal.SIGHUP)
            wait_until(lambda n=number: server.log().count("reloaded ") == n + 1, what="reload")
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    errors = [r for r in results if r[0] != 200]
    assert not errors, errors[:5]
    assert {b"v1", b"v2"} <= {marker for _, marker in results}
    wait_until(lambda: len(children(server.proc.pid)) == 2, what="old workers gone")
    assert not children(server.proc.pid) & first


def test_broken_config_on_hup_keeps_the_running_workers(serve, slow_site):
    server = start(serve, "workers=2")
    before = children(server.proc.pid)
    site_py = slow_site / "site.py"
    site_py.write_text(site_py.read_text().replace('Resource("slow:make()")', 'Resource("slow:nothing()")'))
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in server.log(), what="reload failure")
    assert f"{site_py}:2: error: module 'slow' has no attribute 'nothing'" in server.log()
    assert children(server.proc.pid) == before
    assert get(server.port)[1].startswith(b"v1")


def test_max_requests_recycles_a_worker_without_failed_requests(serve, slow_site):
    server = start(serve, "workers=1, max_requests=100")
    first = children(server.proc.pid)
    statuses = collections.Counter(get(server.port, "/")[0] for _ in range(150))
    assert statuses == {200: 150}
    wait_until(lambda: children(server.proc.pid) and not children(server.proc.pid) & first,
               what="recycled worker")
    assert "reached max_requests (100)" in server.log()


def test_term_with_workers_finishes_in_flight_requests(serve, slow_site):
    server = start(serve, "workers=2, graceful_timeout=10")
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(get, server.port, "/?delay=1") for _ in range(20)]
        time.sleep(0.4)
        server.signal(signal.SIGTERM)
        statuses = [f.result()[0] for f in futures]
    assert statuses == [200] * 20
    assert server.proc.wait(5) == 0


def test_stuck_request_with_workers_exits_within_graceful_timeout(serve, slow_site):
    server = start(serve, "workers=2, graceful_timeout=1")
    stuck = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stuck.sendall(b"GET /?delay=-1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 1 + 1.0
    assert stuck.recv(100) == b""  # aborted at the deadline, not left hanging
    stuck.close()


def test_proxied_websocket_survives_a_reload_and_its_old_worker_then_exits(serve, slow_site, ws_upstream):
    server = serve(f"""
        from twisthost import Host, Proxy, Resource, Site
        site = Site(hosts=[Host("ws.test", Proxy("{ws_upstream}"))], default=Resource("slow:make()"),
                    workers=2, graceful_timeout=30)
        """)
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    first = children(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        with ws_connect(f"ws://ws.test:{server.port}/chat", sock=sock, open_timeout=5) as ws:
            ws.send("before")
            assert ws.recv(timeout=5) == "before"
            server.signal(signal.SIGHUP)
            wait_until(lambda: "reloaded " in server.log(), what="reload")
            wait_until(lambda: len(children(server.proc.pid) - first) == 2, what="new workers")
            # The idle old worker is gone; the tunnel's one drains, the tunnel still works.
            wait_until(lambda: len(children(server.proc.pid) & first) == 1, what="idle old worker gone")
            ws.send("after reload")
            assert ws.recv(timeout=5) == "after reload"
    # The tunnel ended: its worker stops long before graceful_timeout.
    wait_until(lambda: not children(server.proc.pid) & first, timeout=10, what="old worker gone")
    assert server.log().count("stopped (exit status 0)") == 2
