"""WSGI hosting end to end: a real twistd serving real Flask, Django and raw apps.

Every app is wrapped in ``wsgiref.validate.validator``; the module's server
log must end without a single ``WSGIWarning``.  One server (module scope)
serves most tests; the pool-saturation, deadline and hung-app routes each
have their own pool so tests do not disturb each other.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import PROMPT, ROOT, Server, free_port, raw_request, wait_until, write_site

APPS = str(ROOT / "tests" / "apps")

SITE = f"""
from twisthost import Host, Site, WSGI

P = [{APPS!r}]

site = Site(
    hosts=[
        Host("app.test", routes={{
            "/flask": WSGI("flaskapp:app", pythonpath=P),
            "/dj": WSGI("djangoproject.wsgi:application", pythonpath=P),
            "/env": WSGI("rawapps:environ_app", pythonpath=P),
            "/sleep": WSGI("rawapps:sleep_app", pythonpath=P, threads=2, queue=3),
            "/deadline": WSGI("rawapps:sleep_app", pythonpath=P, timeout=0.5),
            "/endless": WSGI("rawapps:endless_app", pythonpath=P),
            "/big": WSGI("rawapps:big_app", pythonpath=P),
            "/upload": WSGI("rawapps:upload_app", pythonpath=P),
            "/stream": WSGI("rawapps:stream_app", pythonpath=P),
            "/fail": WSGI("rawapps:fail_app", pythonpath=P),
            "/debug": WSGI("rawapps:fail_app", pythonpath=P, debug=True),
            "/limited": WSGI("rawapps:upload_app", pythonpath=P, max_body=1000, body_spool=100),
            "/errors": WSGI("rawapps:errors_app", pythonpath=P),
            "/headers": WSGI("rawapps:headers_app", pythonpath=P),
            "/file": WSGI("rawapps:file_app", pythonpath=P),
            "/hung": WSGI("rawapps:sleep_app", pythonpath=P, threads=1, queue=0),
            "/factory": WSGI("flaskapp:create_app()", pythonpath=P),
        }}),
        Host("flask.test", WSGI("flaskapp:app", pythonpath=P, pool="shared")),
        Host("django.test", WSGI("djangoproject.wsgi:application", pythonpath=P, pool="shared")),
    ],
)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wsgi")
    running = Server(write_site(folder, SITE), free_port())
    yield running
    running.stop()
    log = running.log_path.read_text(errors="replace")
    assert "WSGIWarning" not in log and "AssertionError" not in log, log


def get_json(server, path, host="app.test", **kwargs):
    status, headers, body = server.request(path=path, host=host, **kwargs)
    assert status == 200, body
    return json.loads(body)


# ------------------------------------------------------------------ Flask and Django


def test_flask_under_a_prefix_sees_script_name_and_builds_urls_with_it(server):
    status, _, body = server.request(path="/flask/", host="app.test")
    assert (status, body) == (200, b"hello from flask")
    where = get_json(server, "/flask/where?x=1")
    assert where["script_name"] == "/flask" and where["path_info"] == "/where"
    assert where["url"] == "http://app.test/flask/where"
    assert where["remote_addr"] == "127.0.0.1" and where["scheme"] == "http"


def test_flask_at_root_and_as_a_factory(server):
    where = get_json(server, "/where", host="flask.test")
    assert where["script_name"] == "" and where["path_info"] == "/where"
    assert server.request(path="/factory/", host="app.test")[2] == b"hello from flask"


def test_flask_form_post_and_streaming(server):
    status, _, body = server.request(
        "POST", "/flask/echo", host="app.test", body=b"name=Ada&x=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and json.loads(body)["form"] == {"name": "Ada", "x": "1"}
    status, headers, body = server.request(path="/flask/stream", host="app.test")
    assert status == 200 and body == b"".join(f"line {i}\n".encode() for i in range(5))
    assert headers["Transfer-Encoding"] == "chunked"


def test_django_under_a_prefix_and_at_root(server):
    status, _, body = server.request(path="/dj/", host="app.test")
    assert (status, body) == (200, b"hello from django at /dj/")
    where = get_json(server, "/dj/where/")
    assert where["script_name"] == "/dj" and where["path"] == "/dj/where/"
    assert where["path_info"] == "/where/" and where["absolute"] == "http://app.test/dj/where/"
    status, _, body = server.request(path="/", host="django.test")
    assert (status, body) == (200, b"hello from django at /")


def test_django_form_post_urlencoded_multipart_and_chunked(server):
    status, _, body = server.request(
        "POST", "/dj/form/", host="app.test", body=b"name=Grace",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, body) == (200, b"hello Grace (10 bytes)")
    boundary = "XyZ"
    multipart = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nLinus\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    status, _, body = server.request(
        "POST", "/form/", host="django.test", body=multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 200 and body.startswith(b"hello Linus")
    # A chunked upload: Django only reads CONTENT_LENGTH bytes, which we set from the buffered body.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/dj/form/", body=iter([b"name=", b"Chunky"]), encode_chunked=True,
                 headers={"Host": "app.test", "Content-Type": "application/x-www-form-urlencoded",
                          "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"hello Chunky (11 bytes)")
    conn.close()


# ------------------------------------------------------------------ environ


def test_environ_is_pep3333_with_raw_uri_and_buffered_length(server):
    env = get_json(server, "/env/a%20b/c?q=%41&r=2")
    assert env["SCRIPT_NAME"] == "/env" and env["PATH_INFO"] == "/a b/c"
    assert env["QUERY_STRING"] == "q=%41&r=2"
    assert env["REQUEST_URI"] == env["RAW_URI"] == "/env/a%20b/c?q=%41&r=2"
    assert env["SERVER_NAME"] == "app.test" and env["SERVER_PORT"] == "80"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["REQUEST_METHOD"] == "GET"
    assert env["wsgi.input_terminated"] is True and "CONTENT_LENGTH" not in env
    env = get_json(server, "/env", body=b"12345", headers={"Content-Type": "text/plain"})
    assert env["CONTENT_LENGTH"] == "5" and env["CONTENT_TYPE"] == "text/plain"
    assert env["body_length"] == 5 and "HTTP_CONTENT_LENGTH" not in env


def test_headers_with_underscores_cannot_spoof_dashed_ones(server):
    reply = raw_request(server.port, (
        b"GET /env HTTP/1.1\r\nHost: app.test\r\nX-Auth-User: alice\r\nX_Auth_User: mallory\r\n"
        b"Connection: close\r\n\r\n"
    ))
    env = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert env["HTTP_X_AUTH_USER"] == "alice"
    assert "mallory" not in reply.decode()


def test_forwarded_headers_ignored_without_trusted_proxies(server):
    env = get_json(server, "/env", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"


def test_forwarded_headers_believed_from_a_trusted_proxy(serve):
    trusted = serve(SITE.replace("site = Site(", "site = Site(trusted_proxies=['127.0.0.1'],"))
    env = get_json(trusted, "/env", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"
    assert env["SERVER_PORT"] == "443"
    where = get_json(trusted, "/flask/where", headers={"Forwarded": "for=198.51.100.7;proto=https"})
    assert where["remote_addr"] == "198.51.100.7" and where["url"].startswith("https://app.test/flask/")


# ------------------------------------------------------------------ response path


def test_streaming_response_is_chunked_and_complete(server):
    status, headers, body = server.request(path="/stream", host="app.test")
    assert status == 200 and body == b"part 0;part 1;part 2;part 3;part 4;"


def test_app_server_and_date_headers_win_and_repeated_headers_stay(server):
    status, headers, body = server.request(path="/headers", host="app.test")
    assert status == 200 and body == b"ok"
    assert headers.get_all("Server") == ["my-app/1.0"]
    assert headers.get_all("Date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    status, headers, body = server.request("HEAD", "/headers", host="app.test")
    assert status == 200 and body == b"" and headers["Content-Length"] == "2"


def test_file_wrapper_serves_the_file(server):
    status, _, body = server.request(path="/file", host="app.test")
    assert status == 200 and body == Path(APPS, "rawapps.py").read_bytes()


def test_wsgi_errors_go_to_the_log(server):
    assert server.request(path="/errors", host="app.test")[2] == b"logged"
    wait_until(lambda: "a message for wsgi.errors" in server.log())


def test_exception_before_headers_is_a_500_without_traceback(server):
    status, headers, body = server.request(path="/fail?when=before", host="app.test")
    assert status == 500 and b"boom" not in body and b"Traceback" not in body
    status, _, body = server.request(path="/debug?when=before", host="app.test")
    assert status == 500 and b"RuntimeError: boom before headers" in body
    wait_until(lambda: "boom before headers" in server.log())


def test_exception_after_headers_closes_the_connection(server):
    reply = raw_request(server.port, b"GET /fail?when=after HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and b"first chunk;" in reply
    assert not reply.endswith(b"0\r\n\r\n")  # no terminating chunk: the client sees it broke
    wait_until(lambda: "boom after headers" in server.log())


def test_client_leaving_mid_stream_calls_close(server, tmp_path):
    marker = tmp_path / "closed"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"GET /endless?marker={marker} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_until(lambda: marker.exists() and marker.read_text() == "closed")


def test_slow_reader_does_not_make_the_server_buffer_the_response(server):
    """64 MiB streamed to a client that does not read for a while: RSS stays bounded."""
    before = rss_kib(server)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big?mb=64 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        time.sleep(1.5)
        grown = rss_kib(server) - before
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    assert grown < 24 * 1024, f"RSS grew {grown} KiB while the client was not reading"
    assert received > 64 << 20


# ------------------------------------------------------------------ limits and queueing


def test_413_by_content_length_before_the_body_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /limited HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 413") and b"100 Continue" not in reply
    status, _, body = server.request("POST", "/limited", host="app.test", body=b"z" * 1000)
    assert (status, body) == (200, b"1000")  # at the limit is fine (and spooled to a file)


def test_413_when_a_chunked_body_crosses_the_limit(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"POST /limited HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            sock.sendall(b"200\r\n" + b"c" * 0x200 + b"\r\n")
        reply = read_all(sock)  # returns when the server closes the connection
    assert reply.startswith(b"HTTP/1.1 413") and b"Connection: close" in reply
    reply = raw_request(server.port, b"POST /limited HTTP/1.1\r\nHost: app.test\r\n"
                        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        b"384\r\n" + b"c" * 900 + b"\r\n0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n900")


def test_big_upload_is_spooled_not_held_in_memory(server):
    """200 MiB multipart-sized upload: RSS grows by less than 16 MiB."""
    before = rss_kib(server)
    size = 200 << 20
    piece = b"u" * (1 << 20)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/upload", body=iter([piece] * (size // len(piece))),
                 headers={"Host": "app.test", "Content-Length": str(size),
                          "Content-Type": "multipart/form-data; boundary=b"})
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, str(size).encode())
    conn.close()
    assert rss_kib(server) - before < 16 * 1024


def test_full_pool_and_queue_answer_503_at_once(server):
    """threads=2, queue=3: of 8 simultaneous requests exactly 5 run, 3 get 503."""
    def one(_):
        started = time.monotonic()
        status, headers, _ = server.request(path="/sleep?s=1.5", host="app.test", timeout=20)
        return status, headers.get("Retry-After"), time.monotonic() - started

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 5 + [503] * 3
    assert all(retry_after == "1" for status, retry_after, _ in results if status == 503)
    # Refused at once: each 503 came before even the first admitted request (1.5 s of sleep)
    # was answered; queued, it would have come after two of them.
    first_200 = min(took for status, _, took in results if status == 200)
    assert all(took < first_200 for status, _, took in results if status == 503)


def test_deadline_answers_504_and_logs_the_stuck_stack(server):
    started = time.monotonic()
    status, _, body = server.request(path="/deadline?s=12", host="app.test", timeout=30)
    # At the 0.5 s deadline, not when the app returns (12 s).
    assert status == 504 and time.monotonic() - started < PROMPT
    wait_until(lambda: "sleepy_stuck_here" in server.log())
    assert "passed its 0.5s deadline" in server.log()
    status, _, body = server.request(path="/deadline?s=0", host="app.test")
    assert (status, body) == (200, b"slept")


def test_hung_app_does_not_slow_other_routes(server):
    """The /hung pool (1 thread, no queue) is stuck; Flask and Django answer at once."""
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(server.request, path="/hung?s=6", host="app.test", timeout=30)
        time.sleep(0.3)
        assert server.request(path="/hung?s=0", host="app.test")[0] == 503
        for path, host in [("/flask/", "app.test"), ("/", "django.test"), ("/stream", "app.test")]:
            assert server.request(path=path, host=host)[0] == 200
            assert not stuck.done()  # answered while /hung is still stuck, not after it
        assert stuck.result()[0] == 200


# ------------------------------------------------------------------ stopping


STOP_SITE = f"""
from twisthost import Host, Site, WSGI

site = Site(graceful_timeout={{grace}}, hosts=[
    Host("app.test", WSGI("rawapps:sleep_app", pythonpath=[{APPS!r}], threads=10)),
])
"""


def test_a_burst_of_blocking_requests_runs_in_parallel(serve):
    """Requests that reach the reactor in one turn still get a thread each, not a queue."""
    server = serve(STOP_SITE.format(grace=30))
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(10)]
    try:
        started = time.monotonic()
        for sock in socks:  # back to back: most land in the same reactor turn
            sock.sendall(b"GET /?s=5 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        replies = [read_all(sock) for sock in socks]
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert all(reply.startswith(b"HTTP/1.1 200 ") for reply in replies)
    assert elapsed < 9  # 10 threads: about 5 s; queued behind one another it is 10 s or more


def test_sigterm_lets_in_flight_requests_finish(serve):
    server = serve(STOP_SITE.format(grace=30))
    with ThreadPoolExecutor(10) as pool:
        replies = [pool.submit(server.request, path="/?s=1", host="app.test") for _ in range(10)]
        time.sleep(0.4)
        stopping = time.monotonic()
        server.proc.terminate()
        results = [reply.result() for reply in replies]
    assert [status for status, _, _ in results] == [200] * 10
    server.proc.wait(10)
    assert time.monotonic() - stopping < 5


def test_sigterm_with_a_stuck_request_exits_after_the_deadline(serve):
    server = serve(STOP_SITE.format(grace=1))
    with ThreadPoolExecutor(1) as pool:
        pool.submit(server.request, path="/?s=60", host="app.test", timeout=30)
        time.sleep(0.4)
        stopping = time.monotonic()
        server.proc.terminate()
        server.proc.wait(15)
    assert time.monotonic() - stopping < 1 + 2 + 3  # grace + pool stop grace + slack


# ------------------------------------------------------------------ helpers


def read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def rss_kib(server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
