"""One serving process over real twistd: graceful stop, reload, USR1, systemd notify, hooks."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import PROMPT, ROOT, TWISTD, config_error, free_port, wait_for_port, wait_until, write_site
from proxy_upstream import ws_upstream  # noqa: F401  (a fixture: a WebSocket echo server)
from tls_support import CA, ConfigServer, client_context, tls_get
from twisthost.service import prepare
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

APPS = ROOT / "tests" / "apps"

# An asynchronous resource: answers after ?delay= seconds (never, for a negative delay),
# with the pid and a marker of the config generation that built it; and a WSGI app that
# sleeps ?s= seconds in its thread.  Slow requests leave a byte in started.txt (in the
# server's folder) as they start, so a test knows they are in flight.
SLOW = '''
import os, time
from urllib.parse import parse_qs
from twisted.internet import reactor, task
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

class Slow(Resource):
    isLeaf = True

    def __init__(self, marker):
        super().__init__()
        self.marker = marker

    def render_GET(self, request):
        time.sleep(float(request.args.get(b"block", [b"0"])[0]))  # holds up this process's reactor
        delay = float(request.args.get(b"delay", [b"0"])[0])
        if delay:
            started()
        if delay < 0:
            return NOT_DONE_YET
        def answer():
            if not request._disconnected:
                request.write(b"%s pid=%d\\n" % (self.marker.encode(), os.getpid()))
                request.finish()
        task.deferLater(reactor, delay, answer)
        return NOT_DONE_YET

def make(marker="v1"):
    return Slow(marker)

def make_v2():
    return Slow("v2")

def sleep_app(environ, start_response):
    started()
    time.sleep(float(parse_qs(environ["QUERY_STRING"])["s"][0]))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]

def started():
    with open("started.txt", "a") as out:
        out.write(".")
'''


def in_flight(server) -> int:
    """Slow requests started so far on ``server`` (see SLOW)."""
    path = server.config.parent / "started.txt"
    return len(path.read_text()) if path.exists() else 0


def site_source(extra: str = "", factory: str = "make()") -> str:
    return f"""
        from twisthost import Resource, Site
        site = Site(default=Resource("slow:{factory}"){extra})
        """


@pytest.fixture
def slow_site(tmp_path):
    write_site(tmp_path, SLOW, "slow.py")
    return tmp_path


def get(port, path="/", timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def term_with_in_flight_and_stuck(server, grace: float, path: str, stuck: str) -> None:
    """TERM with 20 in-flight 1 s requests and one stuck forever.

    The 20 get their 200s, the stuck one is cut at graceful_timeout, the
    process exits 0 soon after graceful_timeout (the stuck request would hold
    it forever) and accepts nothing more.
    """
    before = in_flight(server)
    blocked = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    blocked.sendall(f"GET {stuck} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(get, server.port, path) for _ in range(20)]
        wait_until(lambda: in_flight(server) == before + 21, what="21 requests in flight")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        statuses = [f.result()[0] for f in futures]
        assert server.proc.wait(grace + PROMPT + 10) == 0
    assert time.monotonic() - started < grace + PROMPT, server.log()
    assert statuses == [200] * 20
    assert closed_without_answer(blocked)  # cut at the deadline, not left hanging
    assert "graceful timeout: closing 1 connection(s)" in server.log()
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_term_finishes_in_flight_requests_and_cuts_a_stuck_one_at_the_deadline(serve, slow_site):
    server = serve(site_source(", graceful_timeout=2"))
    term_with_in_flight_and_stuck(server, 2, "/?delay=1", "/?delay=-1")


def test_term_closes_idle_keep_alive_connections_at_once(serve, slow_site):
    server = serve(site_source(", graceful_timeout=20"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read().startswith(b"v1")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(5) == 0
    assert time.monotonic() - started < 5  # an idle connection does not hold the stop
    conn.close()


def test_a_connection_accepted_just_before_term_still_gets_its_request_answered(serve, slow_site):
    server = serve(site_source(", graceful_timeout=10"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        time.sleep(0.2)  # accepted by the server, the request not sent yet (a TLS handshake, say)
        server.signal(signal.SIGTERM)
        wait_for_text(server.log_path, "stopping: letting requests finish")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in answer
    assert server.proc.wait(5) == 0


def read_until_closed(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_int_stops_at_once_despite_in_flight_requests(serve, slow_site):
    server = serve(site_source(", graceful_timeout=30"))
    stuck = socket.create_connection(("127.0.0.1", server.port))
    stuck.sendall(b"GET /?delay=-1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.proc.wait(30) == 0
    assert time.monotonic() - started < PROMPT  # not the graceful_timeout=30 a TERM would grant
    stuck.close()


# A WSGI app on its own thread pool, sleeping ?s= seconds.
WSGI_SITE = """
    from twisthost import Site, WSGI
    site = Site(default=WSGI("slow:sleep_app", threads=21), {options})
    """


def wait_ready(server, workers: int, timeout=30.0) -> None:
    """With workers, until all are up (a fresh worker needs seconds on a loaded 2-core box)."""
    if workers > 1:
        wait_for_text(server.log_path, "worker(s) ready", timeout)


@pytest.mark.parametrize("workers", [1, 2])
def test_term_with_wsgi_finishes_in_flight_requests_and_cuts_a_stuck_thread(serve, tmp_path, workers):
    write_site(tmp_path, SLOW, "slow.py")
    server = serve(WSGI_SITE.format(options=f"workers={workers}, graceful_timeout=2"))
    wait_ready(server, workers)
    term_with_in_flight_and_stuck(server, 2, "/?s=1", "/?s=3600")  # a thread sleeps "forever"


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: two worker starts
def test_long_wsgi_stream_spans_a_reload(serve, tmp_path, workers):
    server = serve(f"""
        from twisthost import Site, WSGI
        site = Site(default=WSGI("rawapps:endless_app", pythonpath=[{str(APPS)!r}]),
                    workers={workers}, graceful_timeout=30)
        """)
    wait_ready(server, workers)
    marker = tmp_path / "closed"
    stream = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stream.sendall(f"GET /?marker={marker}&gap=0.02 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert stream.recv(65536).startswith(b"HTTP/1.1 200")
    server.signal(signal.SIGHUP)
    wait_for_text(server.log_path, "reloaded", timeout=30)
    received = 0
    until = time.monotonic() + 1.0  # still flowing a second after the reload
    while time.monotonic() < until:
        chunk = stream.recv(65536)
        assert chunk, "the stream was cut by the reload"
        received += len(chunk)
    assert received > 1000
    stream.close()
    wait_for_text(marker, "closed", timeout=10)  # the app saw the client leave
    assert "abandoned" not in server.log()  # its pool was not stopped under it
    if workers > 1:  # the old worker was waiting for the stream only
        wait_for_text(server.log_path, "stopped (exit status 0)", timeout=10)


def test_proxied_websocket_keeps_working_during_a_stop_until_graceful_timeout(serve, ws_upstream):
    server = serve(f"""
        from twisthost import Proxy, Site
        site = Site(default=Proxy("{ws_upstream}"), graceful_timeout=1.5)
        """)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        with ws_connect(f"ws://ws.test:{server.port}/chat", sock=sock, open_timeout=5) as ws:
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            wait_for_text(server.log_path, "stopping: letting requests finish")
            ws.send("while stopping")
            assert ws.recv(timeout=5) == "while stopping"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=30)  # closed by the server at the deadline
            # At graceful_timeout=1.5: not before, and not at a later timer (the idle ones are 60 s).
            assert 1.5 - 0.2 < time.monotonic() - started < 1.5 + PROMPT
    assert server.proc.wait(5) == 0
    assert "graceful timeout: closing 1 connection(s)" in server.log()


# Application code that would keep a stopping process alive: a non-daemon thread
# (joined at interpreter exit) or a render blocking the reactor thread itself.
HOLDERS = '''
import threading, time
from twisted.web.resource import Resource

def with_a_thread():
    """Like an app starting a scheduler when it is created (in the main thread)."""
    threading.Thread(target=time.sleep, args=(3600,), name="app-background").start()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return app

class Blocking(Resource):
    isLeaf = True

    def render_GET(self, request):
        open("blocking", "w").close()
        time.sleep(3600)
'''


@pytest.mark.parametrize("service", ['WSGI("holders:with_a_thread()")', 'Resource("holders:Blocking()")'])
def test_app_code_holding_the_process_cannot_stop_it_exiting(serve, tmp_path, service):
    write_site(tmp_path, HOLDERS, "holders.py")
    server = serve(f"""
        from twisthost import Resource, Site, WSGI
        site = Site(default={service}, graceful_timeout=0.5)
        """)
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    if "Blocking" in service:  # the thread app holds the process from its start
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: (tmp_path / "blocking").exists(), what="the reactor to block")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc.wait(30) == 1  # forced: not a clean stop
    assert time.monotonic() - started < 0.5 + 0.75 + PROMPT  # the app code would hold it forever
    assert "still running 1.25s after the stop began" in server.log()
    client.close()


def closed_without_answer(sock) -> bool:
    """The server ended the connection (EOF, or a reset if it aborted it) and sent nothing."""
    with sock:
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


@contextlib.contextmanager
def hammering(port, clients: int = 4):
    """Requests on fresh connections from ``clients`` threads while the block runs.

    Yields the list of (status or error, first word of the body); on exit the
    threads stop and no answer may be other than 200.
    """
    stop, results = threading.Event(), []

    def hammer():
        while not stop.is_set():
            try:
                status, body = get(port, timeout=5)
                results.append((status, body.split(b" ")[0]))
            except Exception as error:  # every failure counts
                results.append((repr(error), b""))

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    errors = [r for r in results if r[0] != 200]
    assert not errors, errors[:5]


def test_five_reloads_under_load_fail_no_request(serve, slow_site):
    server = serve(site_source())
    site_py = slow_site / "site.py"
    with hammering(server.port) as results:
        for number in range(5):
            time.sleep(0.3)
            site_py.write_text(site_py.read_text().replace(
                "make()" if number % 2 == 0 else "make_v2()",
                "make_v2()" if number % 2 == 0 else "make()"))
            server.signal(signal.SIGHUP)
        time.sleep(0.5)
    assert len(results) > 50
    assert {b"v1", b"v2"} <= {marker for _, marker in results}
    assert server.log().count("reloaded ") == 5


def test_broken_config_on_hup_keeps_the_old_one(serve, slow_site):
    server = serve(site_source())
    site_py = slow_site / "site.py"
    site_py.write_text(site_py.read_text() + "oops = Site(workers=0)\n")
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reload failed" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"{site_py}:3: error: Site(workers=...) must be in 1..1024" in server.log()
    assert get(server.port)[1].startswith(b"v1")


def test_reload_opens_and_closes_listeners(slow_site):
    # Without --listen (which pins the listeners), so the config's listen= applies.
    first, second = free_port(), free_port()
    site_py = write_site(slow_site, site_source(f", listen=['tcp:{first}:interface=127.0.0.1']"))
    with open(slow_site / "own.log", "wb") as log:
        proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(site_py)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=slow_site)
        try:
            wait_for_port(first, proc)
            site_py.write_text(site_py.read_text().replace(str(first), str(second)))
            proc.send_signal(signal.SIGHUP)
            wait_for_port(second, proc)
            assert get(second)[0] == 200
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", first), timeout=1).close()
        finally:
            proc.terminate()
            assert proc.wait(10) == 0


TLS_SITE = """
    from twisthost import TLS, Resource, Site
    site = Site(listen=[TLS("tcp:{port}:interface=127.0.0.1", cert="{cert}.pem", key="{cert}.key")],
                default=Resource("slow:make()"), workers={workers})
    """


@pytest.mark.parametrize("workers", [1, 2])
def test_changing_a_tls_certificate_keeps_the_port_open(slow_site, workers):
    ca = CA(slow_site)
    ca.issue("first", ["a.test"])
    ca.issue("second", ["a.test"], common_name="second")
    port = free_port()
    site_py = write_site(slow_site, TLS_SITE.format(port=port, cert="first", workers=workers))
    server = ConfigServer(site_py, [port])
    try:
        wait_ready(server, workers)
        context = client_context(ca)
        assert tls_get(port, context, "a.test").cert_name == "a.test"
        stop, failures, fetched = threading.Event(), [], []

        def fetch_until_stopped():
            while not stop.is_set():
                try:
                    fetched.append(tls_get(port, context, "a.test").cert_name)
                except Exception as error:  # a refused or reset connection counts
                    failures.append(repr(error))

        fetcher = threading.Thread(target=fetch_until_stopped)
        fetcher.start()
        try:
            time.sleep(0.3)
            write_site(slow_site, TLS_SITE.format(port=port, cert="second", workers=workers))
            server.signal(signal.SIGHUP)
            wait_for_text(server.log_path, "reloaded", timeout=30)
            time.sleep(0.3)
        finally:
            stop.set()
            fetcher.join()
        assert not failures, failures[:3]
        assert fetched[-1] == "second" and "a.test" in fetched
        assert tls_get(port, context, "a.test").cert_name == "second"
        assert "closed listener" not in server.log()
    finally:
        assert server.stop() == 0


def test_a_port_switching_from_tls_to_plain_is_reopened(slow_site):
    ca = CA(slow_site)
    ca.issue("first", ["a.test"])
    port = free_port()
    site_py = write_site(slow_site, TLS_SITE.format(port=port, cert="first", workers=1))
    server = ConfigServer(site_py, [port])
    try:
        assert tls_get(port, client_context(ca), "a.test").cert_name == "a.test"
        site_py.write_text(site_py.read_text().replace(
            'TLS("tcp:{port}:interface=127.0.0.1", cert="first.pem", key="first.key")'.format(port=port),
            f'"tcp:{port}:interface=127.0.0.1"'))
        server.signal(signal.SIGHUP)
        wait_for_text(server.log_path, f"reload: listening on tcp:{port}")
        assert get(port)[1].startswith(b"v1")  # plain HTTP on the same port
        assert "cannot listen" not in server.log()
    finally:
        assert server.stop() == 0


def wait_for_text(path, text, timeout=5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}")


def test_usr1_reopens_the_twistd_log_file(slow_site):
    port = free_port()
    site_py = write_site(slow_site, site_source())
    logfile = slow_site / "server.log"
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", f"--logfile={logfile}", "twisthost",
                             "--config", str(site_py), "--listen", f"tcp:{port}:interface=127.0.0.1"],
                            cwd=slow_site)
    try:
        wait_for_port(port, proc)
        proc.send_signal(signal.SIGHUP)
        wait_for_text(logfile, "reloaded")
        rotated = slow_site / "server.log.1"
        os.rename(logfile, rotated)  # what logrotate does
        proc.send_signal(signal.SIGUSR1)
        wait_for_text(logfile, "reopened log files")
        proc.send_signal(signal.SIGHUP)
        wait_for_text(logfile, "reloaded")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert rotated.read_text().count("reloaded") == 1
    assert logfile.read_text().count("reloaded") == 1


def test_sd_notify_ready_reloading_stopping(serve, slow_site, tmp_path):
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    try:
        server = serve(site_source(), env={**os.environ, "NOTIFY_SOCKET": address})
        ready = listener.recv(4096).decode()
        assert "READY=1" in ready and f"MAINPID={server.proc.pid}" in ready
        server.signal(signal.SIGHUP)
        reloading = listener.recv(4096).decode()
        assert "RELOADING=1" in reloading and "MONOTONIC_USEC=" in reloading
        assert listener.recv(4096) == b"READY=1"
        server.signal(signal.SIGTERM)
        assert listener.recv(4096) == b"STOPPING=1"
        assert server.proc.wait(5) == 0
    finally:
        listener.close()


HOOKS = '''
import os
from twisthost import Resource, Site

def record(name):
    def hook(arg):
        detail = arg.path.decode() if hasattr(arg, "path") else type(arg).__name__
        with open("hooks.txt", "a") as out:
            out.write(f"{name} {detail}\\n")
    return hook

NAMES = ["on_starting", "when_ready", "post_worker_init", "on_reload", "on_exit", "pre_request", "post_request"]
site = Site(default=Resource("slow:make()"), hooks={name: record(name) for name in NAMES})
'''


def test_hooks_run_at_their_moments(serve, slow_site):
    server = serve(HOOKS)
    assert get(server.port, "/hello")[0] == 200
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reloaded" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stop() == 0
    lines = (slow_site / "hooks.txt").read_text().splitlines()
    assert lines == [
        "on_starting Site", "post_worker_init Site", "when_ready Site",
        "pre_request /hello", "post_request /hello", "on_reload Site", "on_exit Site",
    ]


def test_failing_hook_is_logged_and_serving_goes_on(serve, slow_site):
    server = serve("""
        from twisthost import Resource, Site
        def boom(request):
            raise RuntimeError("hook exploded")
        site = Site(default=Resource("slow:make()"), hooks={"pre_request": boom})
        """)
    assert get(server.port)[0] == 200
    assert "hook pre_request raised" in server.log() and "hook exploded" in server.log()


@pytest.mark.parametrize("options, message", [
    ("workers=0", "Site(workers=...) must be in 1..1024, got 0"),
    ("workers='many'", "Site(workers=...) expects an integer, got str 'many'"),
    ("graceful_timeout=-1", "Site(graceful_timeout=...) must be in 0..86400, got -1"),
    ("max_requests=1.5", "Site(max_requests=...) expects an integer"),
    ("max_requests_jitter=10", "Site(max_requests_jitter=...) needs max_requests"),
    ("max_rss=-5", "Site(max_rss=...) must be in 0..inf, got -5"),
    ("hooks=[print]", "Site(hooks=...) expects a dict of hook name to function"),
    ("hooks={'on_start': print}", "Site(hooks=...) has an unknown hook 'on_start'"),
    ("hooks={'on_exit': 'print'}", "Site(hooks=...) 'on_exit' must be a function"),
])
def test_lifecycle_option_mistakes_point_at_the_line(tmp_path, options, message):
    text = config_error(tmp_path, f"""
        from twisthost import Redirect, Site

        site = Site(default=Redirect("/"), {options})
        """, build=True)
    assert f"{tmp_path / 'site.py'}:3:" in text and message in text


def test_workers_auto_means_one_per_cpu(tmp_path):
    path = write_site(tmp_path, """
        from twisthost import Redirect, Site
        site = Site(default=Redirect("/"), workers="auto")
        """)
    site = prepare(str(path)).site
    assert site.workers == (os.cpu_count() or 1) and site.uses_master() == (site.workers > 1)
