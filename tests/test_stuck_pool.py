"""A WSGI pool stuck past its deadlines gets its process replaced, over real twistd.

Each test blocks the only thread of one route's pool forever (``threads=1``,
``timeout=0.5``), so that pool has been all overdue since the 504.  After
``graceful_timeout`` the process is replaced: under workers the master starts
a new worker and drains the old one; a single process stops gracefully and
exits 75.  Requests on another route, in flight meanwhile, are answered.
The ``/held`` route waits for a ``release`` file, so the test decides when
it returns; waits are on events (log lines, files) with generous bounds.
"""

from __future__ import annotations

import os
import socket
import threading

from conftest import free_port, wait_until, write_site

APP = '''
import os, threading, time

forever = threading.Event()


def app(environ, start_response):
    path = environ["SCRIPT_NAME"] + environ["PATH_INFO"]
    if path == "/stuck":
        open(f"stuck-{os.getpid()}", "w").close()
        forever.wait()  # never set: the thread is stuck for good
    elif path == "/held":
        open(f"held-{os.getpid()}-{threading.get_ident()}", "w").close()
        for _ in range(1200):  # a minute at most
            if os.path.exists("release"):
                break
            time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid={os.getpid()}".encode()]
'''

SITE = """
from twisthost import Site, Host, WSGI
site = Site(graceful_timeout={grace}, {options} default=Host("localhost", routes={{
    "/stuck": WSGI("stuckapp:app", threads=1, timeout=0.5),
    "/": WSGI("stuckapp:app"),
}}))
"""


def get(port: int, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def in_background(port: int, path: str) -> dict:
    """GET ``path`` in a thread; the returned dict gets ``status`` and ``body`` (or ``error``)."""
    result: dict = {}

    def run():
        try:
            result["status"], result["body"] = get(port, path)
        except Exception as error:  # noqa: BLE001  (reported by the test's asserts)
            result["error"] = repr(error)

    result["thread"] = threading.Thread(target=run, daemon=True)
    result["thread"].start()
    return result


def finished(result: dict, timeout: float = 60.0) -> dict:
    result["thread"].join(timeout)
    assert not result["thread"].is_alive(), "the request never ended"
    return result


def pid_of(body: bytes) -> int:
    return int(body.split(b"pid=")[1])


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return False
    except OSError:
        return True


def start(serve, tmp_path, grace: float, options: str = ""):
    write_site(tmp_path, APP, "stuckapp.py")
    return serve(SITE.format(grace=grace, options=options))


def test_a_stuck_pool_in_a_worker_gets_the_worker_replaced_gracefully(serve, tmp_path):
    server = start(serve, tmp_path, grace=5, options="workers=2,")
    wait_until(lambda: "worker(s) ready" in server.log(), 60, "workers ready")
    first = {pid_of(get(server.port, "/")[1]) for _ in range(4)}

    stuck = in_background(server.port, "/stuck")
    assert finished(stuck)["status"] == 504
    (marker,) = wait_until(lambda: list(tmp_path.glob("stuck-*")), 30, "the stuck request to run")
    old = int(marker.name.split("-")[1])

    # Requests on the other route, held in flight across the replacement,
    # until one of them runs in the stuck worker.
    held = []
    for _ in range(30):
        held.append(in_background(server.port, "/held"))
        count = len(held)
        wait_until(lambda: len(list(tmp_path.glob("held-*"))) >= count, 30, "the held request to run")
        if list(tmp_path.glob(f"held-{old}-*")):
            break
    assert list(tmp_path.glob(f"held-{old}-*")), "no request reached the stuck worker"

    wait_until(lambda: f"worker {old} reached stuck pool stuckapp:app" in server.log(), 60, "the recycle request")
    # The old worker drains: it got TERM once its replacement was ready.
    wait_until(lambda: "stopping: letting requests finish" in server.log(), 60, "the old worker's graceful stop")
    status, body = get(server.port, "/")
    assert status == 200  # the other route answers meanwhile
    (tmp_path / "release").touch()
    for result in held:
        assert finished(result).get("status") == 200, result
    assert any(pid_of(result["body"]) == old for result in held)  # finished in the draining worker

    wait_until(lambda: f"worker {old} stopped" in server.log(), 60, "the old worker to exit")
    log = server.log()
    assert f"worker {old} outlived its graceful timeout" not in log
    assert "thread wsgi-stuckapp:app-0 has been past its deadline (GET /stuck)" in log
    assert "forever.wait()" in log  # the stuck thread's stack
    assert "asking the master to replace worker" in log
    new = wait_until(lambda: {pid_of(get(server.port, "/")[1]) for _ in range(8)} - first - {old}, 60,
                     "a new worker answering")
    assert new and old not in new
    assert server.proc.poll() is None  # the master stays


def test_a_stuck_pool_in_a_single_process_stops_it_gracefully_with_status_75(serve, tmp_path):
    server = start(serve, tmp_path, grace=5)
    assert finished(in_background(server.port, "/stuck"))["status"] == 504
    held = in_background(server.port, "/held")
    wait_until(lambda: list(tmp_path.glob("held-*")), 30, "the held request to run")

    wait_until(lambda: "exiting with status 75" in server.log(), 60, "the stuck pool's stop")
    # Listeners close first; the held request is still in flight.
    wait_until(lambda: refuses_connections(server.port), 30, "the listener to close")
    assert held["thread"].is_alive()
    (tmp_path / "release").touch()
    assert finished(held).get("status") == 200, held
    assert server.proc.wait(60) == 75
    log = server.log()
    assert "stuck pool stuckapp:app: every thread has been past its deadline for 5s; stopping gracefully" in log
    assert "has been past its deadline (GET /stuck)" in log and "forever.wait()" in log


def test_replace_when_stuck_false_keeps_the_process(serve, tmp_path):
    write_site(tmp_path, APP, "stuckapp.py")
    server = serve(SITE.format(grace=0.5, options="").replace("timeout=0.5)", "timeout=0.5, replace_when_stuck=False)"))
    assert finished(in_background(server.port, "/stuck"))["status"] == 504
    # More /stuck requests queue behind the stuck thread (each 504s at its deadline, still
    # queued) until the pool is full and answers 503: by then (9 x 0.5 s) graceful_timeout
    # has long passed, and the process keeps serving.
    wait_until(lambda: get(server.port, "/stuck")[0] == 503, 60, "the full pool's 503")
    status, _ = get(server.port, "/")
    assert status == 200 and server.proc.poll() is None
    assert "every thread has been past its deadline" not in server.log()
