"""Site(workers=N) over real twistd: a master, worker processes, signals, load.

Starting a master and its workers costs seconds, so the tests that leave the
server as they found it (two workers, the same config) share one (``shared``);
the ones that stop it or need other options start their own.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PROMPT, Server, free_port, wait_until, write_site
from test_lifecycle import SLOW, get, hammering, term_with_in_flight_and_stuck
from proxy_upstream import ws_upstream  # noqa: F401  (a fixture: a WebSocket echo server)
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


def serving_pids(port, count=60, concurrency=8, path="/?delay=0.02") -> collections.Counter:
    with ThreadPoolExecutor(concurrency) as pool:
        bodies = list(pool.map(lambda _: get(port, path)[1], range(count)))
    return collections.Counter(int(body.split(b"pid=")[1]) for body in bodies)


def start(serve, options):
    server = serve(workers_site(options))
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    return server


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workers")
    write_site(folder, SLOW, "slow.py")
    server = Server(write_site(folder, workers_site("workers=2")), free_port())
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    yield server
    assert server.stop() == 0


def steady(server) -> set[int]:
    """The two workers of the shared server, once a previous test's changes have settled."""
    wait_until(lambda: len(children(server.proc.pid)) == 2, what="two workers")
    return children(server.proc.pid)


# ------------------------------------------------------------------ on the shared server


def test_a_burst_of_connections_is_shared_by_the_workers(shared):
    """Connections opened together (a client's keep-alive pool, a proxy in front) go to
    both workers, even when they queue up while the workers are busy: the first worker
    to run again does not take them all (twisthost.acceptshare)."""
    workers = steady(shared)
    with ThreadPoolExecutor(2) as pool:
        # A blocked reactor cannot accept, so the second blocker reaches the other
        # worker. The first is free again ~10 ms before the second: enough to take
        # the whole burst unless it leaves the other worker its share (GIVE_UP 50 ms).
        blockers = [pool.submit(get, shared.port, "/?block=0.8")]
        time.sleep(0.2)
        blockers.append(pool.submit(get, shared.port, "/?block=0.61"))
        time.sleep(0.2)
        burst = [http.client.HTTPConnection("127.0.0.1", shared.port, timeout=10) for _ in range(40)]
        for conn in burst:
            conn.connect()  # queued in the kernel until a worker accepts
        assert [blocker.result()[0] for blocker in blockers] == [200, 200]
    pids = collections.Counter()
    for conn in burst:
        conn.request("GET", "/")
        pids[int(conn.getresponse().read().split(b"pid=")[1])] += 1
        conn.close()
    assert set(pids) == workers
    assert min(pids.values()) >= 40 * 0.3, pids  # without the board one worker took ~all


def test_workers_share_the_load_and_the_master_never_serves(shared):
    workers = steady(shared)
    pids = serving_pids(shared.port, count=200, concurrency=16)
    assert set(pids) == workers and shared.proc.pid not in pids
    assert min(pids.values()) >= 200 * 0.1, pids  # each gets a real share


def test_killed_worker_is_replaced_and_no_request_fails(shared):
    victim = sorted(steady(shared))[0]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: len(children(shared.proc.pid) - {victim}) == 2, what="replacement")
    assert time.monotonic() - started < PROMPT  # replaced at once, not after a back-off
    assert set(serving_pids(shared.port)) <= children(shared.proc.pid)
    assert f"worker {victim} died" in shared.log() and "SIGKILL" in shared.log()


def test_ttin_and_ttou_change_the_worker_count(shared):
    steady(shared)
    master = shared.proc.pid
    shared.signal(signal.SIGTTIN)
    wait_until(lambda: len(children(master)) == 3, what="a third worker")
    for left in (2, 1):  # one signal at a time: pending signals of one kind merge
        shared.signal(signal.SIGTTOU)
        wait_until(lambda left=left: len(children(master)) == left, what=f"{left} worker(s)")
    shared.signal(signal.SIGTTOU)  # never below one
    time.sleep(0.5)
    assert len(children(master)) == 1
    assert get(shared.port)[0] == 200
    shared.signal(signal.SIGTTIN)  # as found: two workers
    steady(shared)


def test_broken_config_on_hup_keeps_the_running_workers(shared):
    before = steady(shared)
    site_py = shared.config
    good = site_py.read_text()
    failures = shared.log().count("reload failed")
    try:
        site_py.write_text(good.replace('Resource("slow:make()")', 'Resource("slow:nothing()")'))
        shared.signal(signal.SIGHUP)
        wait_until(lambda: shared.log().count("reload failed") > failures, what="reload failure")
    finally:
        site_py.write_text(good)
    assert f"{site_py}:2: error: module 'slow' has no attribute 'nothing'" in shared.log()
    assert children(shared.proc.pid) == before
    assert get(shared.port)[1].startswith(b"v1")


@pytest.mark.slow
def test_reloads_under_load_replace_workers_without_errors(shared):
    first = steady(shared)
    site_py = shared.config
    reloads = shared.log().count("reloaded ")
    with hammering(shared.port) as results:
        for old, new in (("make()", "make_v2()"), ("make_v2()", "make()")):  # and back as found
            site_py.write_text(site_py.read_text().replace(old, new))
            shared.signal(signal.SIGHUP)
            reloads += 1
            wait_until(lambda n=reloads: shared.log().count("reloaded ") == n, what="reload")
            time.sleep(0.3)
    assert {b"v1", b"v2"} <= {marker for _, marker in results}
    wait_until(lambda: len(children(shared.proc.pid)) == 2, what="old workers gone")
    assert not children(shared.proc.pid) & first


# ------------------------------------------------------------------ on servers of their own


def test_max_requests_recycles_a_worker_without_failed_requests(serve, slow_site):
    server = start(serve, "workers=1, max_requests=100")
    first = children(server.proc.pid)
    statuses = collections.Counter(get(server.port, "/")[0] for _ in range(150))
    assert statuses == {200: 150}
    wait_until(lambda: children(server.proc.pid) and not children(server.proc.pid) & first,
               what="recycled worker")
    assert "reached max_requests (100)" in server.log()


def test_term_finishes_in_flight_requests_and_cuts_a_stuck_one_at_the_deadline(serve, slow_site):
    server = start(serve, "workers=2, graceful_timeout=2")
    term_with_in_flight_and_stuck(server, 2, "/?delay=1", "/?delay=-1")


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
            # The idle old worker is gone; the tunnel's one drains, the tunnel still works.
            wait_until(lambda: len(children(server.proc.pid) & first) == 1, what="idle old worker gone")
            ws.send("after reload")
            assert ws.recv(timeout=5) == "after reload"
    # The tunnel ended: its worker stops long before graceful_timeout.
    wait_until(lambda: not children(server.proc.pid) & first, timeout=10, what="old worker gone")
    assert server.log().count("stopped (exit status 0)") == 2


def test_a_hook_thread_cannot_keep_the_master_alive(serve, slow_site):
    server = serve("""
        import threading, time
        from twisthost import Resource, Site

        def start_a_thread(site):  # user code in the master, with a non-daemon thread
            threading.Thread(target=time.sleep, args=(3600,), name="hook-thread").start()

        site = Site(default=Resource("slow:make()"), workers=2, graceful_timeout=0.25,
                    hooks={"on_starting": start_a_thread})
        """)
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(30) == 1  # forced: not a clean stop
    assert time.monotonic() - started < 0.25 + 2 + 0.75 + PROMPT  # the hook's thread sleeps an hour
    assert server.log().count("stopped (exit status 0)") == 2  # the workers stopped cleanly first
    assert "still running 3s after the stop began (threads: MainThread, hook-thread" in server.log()
