"""ASGI hosting end to end: a real twistd serving a real FastAPI app, a real Starlette app and
raw ASGI apps, spoken to over sockets by http.client, httpx and the ``websockets`` client.

One server (module scope) serves most tests; start-up failures and the lifespan shutdown have
servers of their own.  The isolation test holds an ASGI app's loop blocked (``time.sleep``
inside ``async def``) until the test releases it, and checks that a static file, a WSGI app
and another ASGI app on the same server answer meanwhile: ordering, not timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import websockets

from conftest import BIN, PROMPT, ROOT, TWISTD, Server, free_port, wait_until, write_site

APPS = str(ROOT / "tests" / "apps")

SITE = f"""
from twisthost import ASGI, WSGI, Host, Site, Static

P = [{APPS!r}]

site = Site(
    admin="tcp:{{admin}}:interface=127.0.0.1",
    hosts=[
        Host("asgi.test", routes={{
            "/": ASGI("asgiapps:api_checked", pythonpath=P),
            "/star": ASGI("asgiapps:star_checked", pythonpath=P),
            "/factory": ASGI("asgiapps:create_star()", pythonpath=P),
            "/dj": ASGI("djangoproject.asgi:application", pythonpath=P),
            "/blocked": ASGI("asgiapps:blocking", pythonpath=P),
            "/scope": ASGI("asgiapps:scope_checked", pythonpath=P, max_body=1000),
            "/early": ASGI("asgiapps:fail_early", pythonpath=P),
            "/late": ASGI("asgiapps:fail_late", pythonpath=P),
            "/hang": ASGI("asgiapps:hang", pythonpath=P, request_timeout=1),
            "/wsgi": WSGI("asgiapps:wsgi_app", pythonpath=P),
            "/static": Static("static"),
        }}),
    ],
)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asgi")
    (folder / "static").mkdir()
    (folder / "static" / "hello.txt").write_text("static hello\n")
    admin = free_port()
    running = Server(write_site(folder, SITE.replace("{admin}", str(admin))), free_port())
    running.admin_port = admin
    running.folder = folder
    yield running
    assert running.stop() == 0, running.log()
    log = running.log()
    # The loop's leftover tasks (the hung request) are cancelled at stop, not destroyed pending.
    assert "Task was destroyed but it is pending" not in log and "never retrieved" not in log, log
    assert "ASGISpecViolation" not in log, log  # the checker around the FastAPI, Starlette and raw apps


def get(server, path, **kwargs):
    return server.request(path=path, host="asgi.test", timeout=PROMPT, **kwargs)


def ws_url(server, path: str) -> str:
    return f"ws://asgi.test:{server.port}{path}"


def ws_connect(server, path: str, **kwargs):
    """The ``websockets`` client on 127.0.0.1, sending ``Host: asgi.test``."""
    return websockets.connect(ws_url(server, path), host="127.0.0.1", port=server.port,
                              open_timeout=PROMPT, **kwargs)


# ------------------------------------------------------------------ FastAPI over HTTP


def test_fastapi_json(server):
    status, headers, body = get(server, "/items/42?q=twisted")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"item_id": 42, "q": "twisted"}
    status, _, body = get(server, "/items/not-a-number")
    assert status == 422 and b"int" in body  # FastAPI's own validation answer


def test_fastapi_streaming_response_arrives_in_chunks(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PROMPT)
    conn.request("GET", "/stream?n=20", headers={"Host": "asgi.test"})
    response = conn.getresponse()
    assert response.status == 200 and response.headers["transfer-encoding"] == "chunked"
    assert response.read() == b"".join(f"chunk {i}\n".encode() for i in range(20))
    conn.close()


def test_fastapi_upload_file_with_httpx(server):
    data = os.urandom(300_000)  # past body_spool: the body is spooled to a file, then streamed to the app
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers={"Host": "asgi.test"},
                      timeout=PROMPT) as client:
        response = client.post("/upload", files={"file": ("report.bin", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    assert response.json() == {"filename": "report.bin", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}


def test_starlette_under_a_prefix_sees_root_path_and_lifespan_state(server):
    status, _, body = get(server, "/star/")
    assert status == 200
    assert json.loads(body) == {"app": "starlette", "root_path": "/star", "path": "/star/",
                                "state": "hello from lifespan"}


def test_an_app_factory_is_called_once_at_build(server):
    status, _, body = get(server, "/factory/")
    assert status == 200 and json.loads(body)["root_path"] == "/factory"


def test_django_async_view_under_a_prefix(server):
    """Django's ASGIHandler raises on the lifespan scope: under 'auto' that is no lifespan, fine."""
    status, _, body = get(server, "/dj/async/")
    assert status == 200, body
    assert json.loads(body) == {"async": True, "path": "/dj/async/", "script_name": "/dj", "method": "GET"}
    status, _, body = get(server, "/dj/")
    assert (status, body) == (200, b"hello from django at /dj/")
    assert "ASGI('djangoproject.asgi:application') does not support the lifespan protocol" in server.log()


def test_the_raw_scope_over_a_socket(server):
    status, _, body = get(server, "/scope/x%2Fy?a=1", method="POST", body=b"0123456789")
    scope = json.loads(body)
    assert status == 200
    assert scope["path"] == "/scope/x/y" and scope["raw_path"] == "/scope/x%2Fy" and scope["root_path"] == "/scope"
    assert scope["query_string"] == "a=1" and scope["method"] == "POST" and scope["http_version"] == "1.1"
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", server.port]
    assert ["host", "asgi.test"] in scope["headers"]
    assert scope["events"] == [{"type": "http.request", "size": 10, "more_body": False}]


def test_max_body_is_413(server):
    status, _, body = get(server, "/scope/", method="POST", body=b"x" * 1001)
    assert status == 413


def test_an_app_error_before_the_start_is_the_uniform_500(server):
    status, headers, body = get(server, "/early")
    assert status == 500 and body == b"500 Internal Server Error\n"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    wait_until(lambda: "boom before the response" in server.log(), PROMPT, "the traceback in the log")
    assert "ASGI('asgiapps:fail_early'): application error (GET /early)" in server.log()


def test_an_app_error_after_the_start_cuts_the_body(server):
    with pytest.raises(http.client.IncompleteRead):
        get(server, "/late")
    wait_until(lambda: "ASGI('asgiapps:fail_late'): application error after the response started"
               in server.log(), PROMPT, "the log line")


def test_request_timeout_is_504_with_the_stack_logged(server):
    status, _, body = get(server, "/hang")
    assert status == 504 and b"did not answer in time" in body
    wait_until(lambda: "passed its 1s request_timeout" in server.log(), PROMPT, "the log line")
    assert "asyncio.sleep(3600)" in server.log()  # where the task was stuck


# ------------------------------------------------------------------ WebSocket


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, PROMPT * 3))


def test_fastapi_websocket_chat_text_binary_subprotocol_and_close_code(server):
    async def chat():
        async with ws_connect(server, "/ws/chat", subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            await ws.send("hello")
            assert await ws.recv() == "echo: hello"
            await ws.send(b"\x00\x01\x02")
            assert await ws.recv() == b"\x02\x01\x00"
            await ws.send("close-4001")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert run(chat()) == (4001, "asked to")


def test_a_websocket_closed_before_accept_is_403(server):
    async def denied():
        with pytest.raises(websockets.exceptions.InvalidHandshake) as refused:
            async with ws_connect(server, "/ws/deny"):
                pass
        return str(refused.value)

    assert "403" in run(denied())


def test_starlette_websocket_and_many_messages(server):
    async def echo():
        async with ws_connect(server, "/star/ws") as ws:
            for i in range(200):
                await ws.send(f"message {i}")
            return [await ws.recv() for _ in range(200)]

    assert run(echo()) == [f"MESSAGE {i}" for i in range(200)]


def test_a_bad_websocket_handshake_is_refused_and_the_server_goes_on(server):
    status, headers, _ = get(server, "/ws/chat", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 426 and headers["sec-websocket-version"] == "13"
    status, _, _ = get(server, "/ws/chat", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"})
    assert status == 400
    assert get(server, "/items/1")[0] == 200


# ------------------------------------------------------------------ isolation


def test_a_blocked_asgi_loop_does_not_delay_static_wsgi_or_other_asgi_apps(server):
    """``/blocked`` sleeps (time.sleep(2), again and again) inside ``async def`` until released.

    While it is provably in flight (it cannot finish before the test creates the release
    file), a static file, a WSGI app and another ASGI app on the same server must answer.
    """
    base = str(server.folder / "isolation")
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(server.request, "GET", f"/blocked/?{base}", "asgi.test", None, None, 90)
        wait_until(lambda: os.path.exists(base + ".sleeping"), PROMPT, "the app to start sleeping")
        answers = {
            "static": get(server, "/static/hello.txt"),
            "wsgi": get(server, "/wsgi/"),
            "other asgi": get(server, "/items/7"),
            "starlette": get(server, "/star/"),
        }
        assert not blocked.done(), "the blocked request finished before it was released"
        assert answers["static"][0] == 200 and answers["static"][2] == b"static hello\n"
        assert answers["wsgi"][0] == 200 and answers["wsgi"][2] == b"wsgi"
        assert answers["other asgi"][0] == 200 and json.loads(answers["other asgi"][2])["item_id"] == 7
        assert answers["starlette"][0] == 200
        Path(base + ".release").touch()
        status, _, body = blocked.result(timeout=60)
    assert (status, body) == (200, b"unblocked")


# ------------------------------------------------------------------ observability and check


def test_metrics_and_status_list_the_asgi_apps(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.admin_port, timeout=PROMPT)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'twisthost_asgi_completed{host="asgi.test",name="asgiapps:api_checked",route="/"}' in text
    assert 'twisthost_asgi_max_concurrency{host="asgi.test",name="asgiapps:api_checked",route="/"} 1000.0' in text
    assert 'twisthost_requests_total{' in text and 'route="/star"' in text
    conn = http.client.HTTPConnection("127.0.0.1", server.admin_port, timeout=PROMPT)
    conn.request("GET", "/status")
    page = conn.getresponse().read().decode()
    conn.close()
    assert "ASGI apps" in page and "asgiapps:create_star()" in page and "asgiapps:star_checked" in page


def test_twisthost_check_lists_the_asgi_routes(server):
    result = subprocess.run([str(BIN / "twisthost"), "check", str(server.folder / "site.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "/factory  -> ASGI('asgiapps:create_star()'" in result.stdout
    assert "/hang     -> ASGI('asgiapps:hang', pythonpath=" in result.stdout and "request_timeout=1.0" in result.stdout


# ------------------------------------------------------------------ lifespan


LIFESPAN_SITE = f"""
from twisthost import ASGI, Host, Site
site = Site(hosts=[Host("a.test", ASGI({{target!r}}, pythonpath=[{APPS!r}]))])
"""


@pytest.mark.parametrize("target, words", [
    ("asgiapps:failing_startup", "lifespan startup failed: the database is not there"),
    ("asgiapps:raising_startup", "lifespan startup failed: the app raised ConnectionError: cannot reach the database"),
])
def test_a_failed_startup_stops_twistd_with_status_1_naming_the_app(tmp_path, target, words):
    """Also under lifespan='auto': an app that raised after it received lifespan.startup speaks
    lifespan and failed (uvicorn's 'auto' would call that 'unsupported' and serve anyway)."""
    config = write_site(tmp_path, LIFESPAN_SITE.format(target=target))
    port = free_port()
    result = subprocess.run(
        [TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config),
         "--listen", f"tcp:{port}:interface=127.0.0.1"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"{config}:2: error: ASGI({target!r}): {words}" in output, output


def test_lifespan_state_reaches_requests_and_shutdown_runs_at_stop(tmp_path):
    marker = tmp_path / "shutdown.txt"
    config = write_site(tmp_path, LIFESPAN_SITE.format(target="asgiapps:with_lifespan"))
    running = Server(config, free_port(), env={**os.environ, "ASGI_SHUTDOWN_FILE": str(marker)})
    try:
        status, _, body = running.request(path="/", host="a.test", timeout=PROMPT)
        assert (status, body) == (200, b"from-startup")
    finally:
        code = running.stop()
    assert code == 0, running.log()
    assert marker.read_text() == "shutdown ran"


def test_a_reload_whose_app_fails_its_startup_keeps_the_running_config(tmp_path):
    config = write_site(tmp_path, LIFESPAN_SITE.format(target="asgiapps:with_lifespan"))
    running = Server(config, free_port())
    try:
        assert running.request(path="/", host="a.test", timeout=PROMPT)[2] == b"from-startup"
        write_site(tmp_path, LIFESPAN_SITE.format(target="asgiapps:failing_startup"))
        running.signal(signal.SIGHUP)
        wait_until(lambda: "reload failed, keeping the running config" in running.log(), PROMPT * 3,
                   "the failed reload in the log")
        assert "lifespan startup failed: the database is not there" in running.log()
        assert running.request(path="/", host="a.test", timeout=PROMPT)[:3:2] == (200, b"from-startup")
    finally:
        assert running.stop() == 0, running.log()


def test_open_websockets_get_1001_at_stop_and_the_stop_does_not_wait_for_them(tmp_path):
    config = write_site(tmp_path, f"""
        from twisthost import ASGI, Host, Site
        site = Site(graceful_timeout=60, hosts=[Host("a.test", ASGI("asgiapps:api", pythonpath=[{APPS!r}]))])
    """)
    running = Server(config, free_port())

    async def open_then_stop():
        async with websockets.connect(f"ws://a.test:{running.port}/ws/chat", host="127.0.0.1",
                                      port=running.port, open_timeout=PROMPT) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo: hi"
            running.signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    try:
        assert run(open_then_stop()) == 1001
        running.proc.wait(PROMPT * 3)  # well before graceful_timeout=60
    finally:
        code = running.stop()
    assert code == 0, running.log()


# ------------------------------------------------------------------ HTTP/2


def test_http2_requests_reach_the_app_as_http_scopes(tmp_path):
    """Over TLS with ALPN h2 the request is Twisted's HTTP/2 stream; the app sees http_version "2"."""
    from tls_support import CA, ConfigServer, h2_request

    ca = CA(tmp_path)
    ca.issue("a", ["a.test"])
    port = free_port()
    config = write_site(tmp_path, f"""
        from twisthost import ASGI, TLS, Host, Site
        P = [{APPS!r}]
        site = Site(listen=[TLS("tcp:{port}:interface=127.0.0.1", cert="a.pem", key="a.key")],
                    hosts=[Host("a.test", routes={{"/": ASGI("asgiapps:api", pythonpath=P),
                                                  "/scope": ASGI("asgiapps:scope_app", pythonpath=P)}})])
    """)
    running = ConfigServer(config, [port])
    try:
        payload = b"y" * 100_000  # more than one HTTP/2 flow-control window
        status, _, body = h2_request(port, "a.test", "POST", "/scope/p?q=1", payload)
        scope = json.loads(body)
        assert status == 200 and scope["http_version"] == "2" and scope["scheme"] == "https"
        assert scope["path"] == "/scope/p" and scope["root_path"] == "/scope" and scope["query_string"] == "q=1"
        assert scope["body_len"] == len(payload)
        status, _, body = h2_request(port, "a.test", "GET", "/stream?n=50")
        assert status == 200 and body == b"".join(f"chunk {i}\n".encode() for i in range(50))
    finally:
        running.stop()


def _raw_websocket(server, path: str):
    """A socket that completed the opening handshake by hand; the bytes read past the 101."""
    import socket as socketlib

    sock = socketlib.create_connection(("127.0.0.1", server.port), timeout=PROMPT)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: asgi.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, rest


def _close_code(sock, rest: bytes) -> int:
    """Read frames until the server's close frame; its status code."""
    data = rest
    while True:
        if len(data) >= 4 and data[0] & 0x0F == 0x8:
            return int.from_bytes(data[2:4], "big")
        chunk = sock.recv(4096)
        assert chunk, f"closed without a close frame: {data!r}"
        data += chunk


@pytest.mark.parametrize("frame, code", [
    (b"\x81\x05hello", 1002),  # unmasked text frame from a client (RFC 6455 5.1)
    (b"\x83\x80\x00\x00\x00\x00", 1002),  # reserved opcode 0x3, masked
    (b"\x89\xfe\x00\x80" + b"\x00" * 4 + b"p" * 128, 1002),  # a ping longer than 125 bytes
])
def test_bad_frames_over_a_socket_close_1002_and_nothing_else_is_affected(server, frame, code):
    sock, rest = _raw_websocket(server, "/ws/chat")
    with sock:
        sock.sendall(frame)
        assert _close_code(sock, rest) == code
    assert get(server, "/items/3")[0] == 200

    async def still_chatting():
        async with ws_connect(server, "/ws/chat") as ws:
            await ws.send("after")
            return await ws.recv()

    assert run(still_chatting()) == "echo: after"


def test_an_oversize_message_over_a_socket_closes_1009(tmp_path):
    config = write_site(tmp_path, f"""
        from twisthost import ASGI, Host, Site
        site = Site(hosts=[Host("asgi.test", ASGI("asgiapps:api", pythonpath=[{APPS!r}], max_message=1024))])
    """)
    running = Server(config, free_port())
    try:
        async def too_big():
            async with websockets.connect(f"ws://asgi.test:{running.port}/ws/chat", host="127.0.0.1",
                                          port=running.port, open_timeout=PROMPT, max_size=None) as ws:
                await ws.send("small")
                assert await ws.recv() == "echo: small"
                await ws.send("x" * 2048)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                return closed.value.rcvd.code

        assert run(too_big()) == 1009
        assert "over max_message=1024 bytes" in running.log()
    finally:
        assert running.stop() == 0, running.log()


def test_http_and_websocket_requests_are_in_the_access_log(tmp_path):
    config = write_site(tmp_path, f"""
        from twisthost import ASGI, Host, Site
        site = Site(access_log="access.log",
                    hosts=[Host("asgi.test", ASGI("asgiapps:api", pythonpath=[{APPS!r}]))])
    """)
    running = Server(config, free_port())
    try:
        assert running.request(path="/items/9", host="asgi.test", timeout=PROMPT)[0] == 200

        async def chat():
            async with ws_connect(running, "/ws/chat") as ws:
                await ws.send("logged")
                return await ws.recv()

        assert run(chat()) == "echo: logged"
        log = tmp_path / "access.log"
        wait_until(lambda: log.exists() and '"GET /ws/chat HTTP/1.1" 101 ' in log.read_text(), PROMPT,
                   "the WebSocket's line in the access log")
        text = log.read_text()
        assert '"GET /items/9 HTTP/1.1" 200 ' in text
        assert '"GET /ws/chat HTTP/1.1" 101 12 ' in text  # the payload bytes sent: "echo: logged"
    finally:
        assert running.stop() == 0, running.log()
