"""WSGI answers served by the host's static machinery: X-Accel-Redirect and wsgi.file_wrapper.

A real Flask app answers ``/download/<name>`` with ``X-Accel-Redirect`` to an
internal ``Static``; a raw app returns ``wsgi.file_wrapper(file)``.  The
server runs with the ``sitecustomize`` spy of ``test_static_sendfile`` around
the real ``os.sendfile``, so the tests see which bytes the kernel sent.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_static_sendfile import SPY, download, rss_kib, sendfile_bytes, sent_since, sha
from tls_support import CA, ConfigServer, client_context, h2_request, tls_get

from conftest import ROOT, Server, free_port, wait_until, write_site

APPS = str(ROOT / "tests" / "apps")
BIG = 24 * 1024 * 1024
MID = 300 * 1024
SECRET = b"outside the internal root\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("accel")
    private = base / "private"
    (private / "sub").mkdir(parents=True)
    (private / "big.bin").write_bytes(os.urandom(BIG))
    (private / "report.txt").write_bytes(b"quarterly numbers\n")
    (private / "sub" / "nested.txt").write_bytes(b"nested\n")
    (private / ".secret").write_bytes(SECRET)
    (base / "outside.txt").write_bytes(SECRET)
    (base / "www").mkdir()
    (base / "www" / "mid.bin").write_bytes(os.urandom(MID))
    (base / "www" / "small.txt").write_bytes(b"small\n")
    os.symlink(private / "big.bin", base / "www" / "big.bin")
    (base / "elsewhere").mkdir()
    (base / "elsewhere" / "report.txt").write_bytes(b"another host's file\n")
    (base / "spy").mkdir()
    (base / "spy" / "sitecustomize.py").write_text(SPY.format(log=str(base / "sendfile.log")))
    return base


class AccelUpstream(BaseHTTPRequestHandler):
    """A proxied upstream that answers ``/dl/<name>`` with X-Accel-Redirect, ``/xs/<file path>``
    with X-Sendfile of that path, and a body to drop."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"the upstream's own body, never sent"
        self.send_response(201)
        if self.path.startswith("/xs/"):
            self.send_header("X-Sendfile", self.path[3:])
        else:
            self.send_header("X-Accel-Redirect", "/protected/" + self.path.rpartition("/")[2])
        self.send_header("Content-Disposition", "attachment")
        self.send_header("X-Upstream-Only", "dropped")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), AccelUpstream)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tree, upstream):
    config = write_site(tree, f"""
        from twisthost import WSGI, Host, Proxy, Site, Static
        P = [{APPS!r}]
        site = Site(hosts=[
            Host("files.test", routes={{
                "/": WSGI("accelapp:accel_app", pythonpath=P),
                "/protected": Static("private", internal=True, max_age=60),
                "/public": Static("www"),
                "/wrap": WSGI("accelapp:file_app", pythonpath=P),
                "/validated": WSGI("accelapp:validated_file_app", pythonpath=P),
                "/flask": WSGI("accelapp:flask_app", pythonpath=P),
                "/single": WSGI("accelapp:file_app", pythonpath=P, threads=1),
            }}),
            Host("lonely.test", WSGI("accelapp:accel_app", pythonpath=P)),
            Host("proxied.test", routes={{
                "/": Proxy("http://127.0.0.1:{upstream}"),
                "/protected": Static("private", internal=True),
            }}),
            Host("ignoring.test", routes={{
                "/": Proxy("http://127.0.0.1:{upstream}", accel=False),
                "/protected": Static("private", internal=True),
            }}),
            Host("other.test", routes={{"/protected": Static("elsewhere", internal=True)}}),
        ])
    """)
    running = Server(config, free_port(), env={**os.environ, "PYTHONPATH": str(tree / "spy")})
    yield running
    running.stop()


def get(server, path, method="GET", host="files.test", **headers):
    headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return server.request(method, path, host=host, headers=headers)


def notes(tree) -> list[str]:
    log = tree / "closed.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def closed(tree, tag: str, count: int = 1) -> list[str]:
    """The files closed for requests tagged ``tag``, once ``count`` are (close() may follow the response)."""
    deadline = time.monotonic() + 5
    while True:
        found = sorted(line.rsplit(" ", 1)[0] for line in notes(tree) if line.endswith(" " + tag))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


# --------------------------------------------------------------------------- X-Accel-Redirect


def test_big_file_is_sent_byte_exact_with_sendfile_and_static_headers(server, tree):
    before = sendfile_bytes(tree)
    status, headers, size, digest = download(server.port, "/download/big.bin", "files.test")
    assert (status, size) == (200, BIG) and headers["Content-Length"] == str(BIG)
    assert digest == sha((tree / "private" / "big.bin").read_bytes())
    assert sent_since(tree, before, BIG) == BIG
    assert headers["Content-Type"] == "application/octet-stream"  # the file's, not the app's text/html
    assert headers["ETag"] and headers["Last-Modified"] and headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "max-age=60"  # the internal Static's
    assert headers["Content-Disposition"] == 'attachment; filename="big.bin"'
    assert headers["Set-Cookie"].startswith("seen=yes")
    assert "X-App-Only" not in headers and "X-Accel-Redirect" not in headers


def test_small_file_type_and_the_apps_cache_control(server):
    status, headers, body = get(server, "/download/report.txt?private")
    assert (status, body) == (200, b"quarterly numbers\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Cache-Control"] == "private, max-age=5"  # the app set one: it wins
    status, _, body = get(server, "/download/sub/nested.txt")
    assert (status, body) == (200, b"nested\n")


def test_range_through_the_redirect(server, tree):
    data = (tree / "private" / "big.bin").read_bytes()
    status, headers, body = get(server, "/download/big.bin", Range="bytes=1000-2999")
    assert status == 206 and body == data[1000:3000]
    assert headers["Content-Range"] == f"bytes 1000-2999/{BIG}"
    before = sendfile_bytes(tree)
    status, _, size, digest = download(server.port, "/download/big.bin", "files.test",
                                       {"Range": "bytes=-3000000"})
    assert (status, size, digest) == (206, 3_000_000, sha(data[-3_000_000:]))
    assert sent_since(tree, before, 3_000_000) == 3_000_000
    status, headers, body = get(server, "/download/report.txt", Range="bytes=0-1,4-5")
    assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
    assert get(server, "/download/report.txt", Range="bytes=500-")[0] == 416


def test_conditional_requests_through_the_redirect(server):
    etag = get(server, "/download/report.txt")[1]["ETag"]
    status, headers, body = get(server, "/download/report.txt", If_None_Match=etag)
    assert (status, body) == (304, b"") and headers["ETag"] == etag
    assert get(server, "/download/report.txt", If_Match='"other"')[0] == 412
    status, _, body = get(server, "/download/report.txt", Range="bytes=0-3", If_Range='"stale"')
    assert (status, body) == (200, b"quarterly numbers\n")


def test_head_has_the_headers_and_no_body(server, tree):
    before = sendfile_bytes(tree)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("HEAD", "/download/big.bin", headers={"Host": "files.test"})
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert response.headers["Content-Length"] == str(BIG)
        assert response.headers["Content-Disposition"] == 'attachment; filename="big.bin"'
        conn.request("GET", "/download/report.txt", headers={"Host": "files.test"})  # same connection
        assert conn.getresponse().read() == b"quarterly numbers\n"
    finally:
        conn.close()
    assert sendfile_bytes(tree) == before


def test_a_post_answered_with_a_redirect_gets_the_file(server):
    status, _, body = server.request("POST", "/download/report.txt", host="files.test", body=b"a=1")
    assert (status, body) == (200, b"quarterly numbers\n")


def test_a_missing_file_is_a_plain_404_without_the_download_headers(server):
    status, headers, body = get(server, "/download/missing.bin")
    assert status == 404 and body.startswith(b"404 Not Found")
    assert "Content-Disposition" not in headers and "Set-Cookie" not in headers
    _wait_for_log(server, "X-Accel-Redirect to '/protected/missing.bin' for GET /download/missing.bin "
                          "answered 404")


def test_the_internal_route_is_not_reachable_directly(server):
    for path in ("/protected/report.txt", "/protected/big.bin", "/protected/", "/protected"):
        status, _, body = get(server, path)
        assert status == 404 and b"quarterly" not in body


@pytest.mark.parametrize("target", [
    "/public/small.txt",  # a Static, but not internal
    "/hello",  # the app itself
    "/wrap?name=small.txt",
    "protected/report.txt",  # not a path
    "",
    "http://files.test/protected/report.txt",
    "/protected/missing.txt",
    "/protected/.secret",  # hidden names stay hidden
])
def test_targets_outside_an_internal_static_are_404_and_logged(server, target):
    status, headers, body = get(server, "/raw?to=" + _quote(target))
    assert status == 404 and body.startswith(b"404 Not Found"), body
    assert b"small" not in body and "Set-Cookie" not in headers
    _wait_for_log(server, f"X-Accel-Redirect to {target!r}")


@pytest.mark.parametrize("target", [
    "/protected/../outside.txt",
    "/protected/%2e%2e/outside.txt",
    "/protected/..%2foutside.txt",
    "/protected/sub/..%5c..%5coutside.txt",
    "/protected/sub/../../outside.txt",
    "/protected/%00/report.txt",
])
def test_traversal_in_the_target_is_refused(server, target):
    status, _, body = get(server, "/raw?to=" + _quote(target))
    assert status == 400 and SECRET not in body and b"quarterly" not in body
    _wait_for_log(server, f"X-Accel-Redirect to {target!r}")


def test_only_the_requests_own_host_is_searched(server):
    """lonely.test has no internal Static; other.test's is not used for it."""
    status, _, body = get(server, "/download/report.txt", host="lonely.test")
    assert status == 404 and b"another host" not in body


def test_a_proxied_upstream_can_redirect_too(server, tree):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/dl/report.txt", headers={"Host": "proxied.test", "Range": "bytes=0-8"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (206, b"quarterly")
        assert response.headers["Content-Disposition"] == "attachment"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "X-Upstream-Only" not in response.headers
        conn.request("GET", "/dl/missing.txt", headers={"Host": "proxied.test"})  # same connection
        response = conn.getresponse()
        assert response.status == 404 and b"upstream" not in response.read()
    finally:
        conn.close()
    _wait_for_log(server, "X-Accel-Redirect to '/protected/missing.txt' for GET /dl/missing.txt answered 404")


def test_a_proxy_with_accel_off_relays_the_upstream_answer_without_the_header(server):
    status, headers, body = get(server, "/dl/report.txt", host="ignoring.test")
    assert (status, body) == (201, b"the upstream's own body, never sent")
    assert headers["X-Upstream-Only"] == "dropped" and headers["Content-Disposition"] == "attachment"
    assert "X-Accel-Redirect" not in headers  # the internal path is not shown either


# --------------------------------------------------------------------------- X-Sendfile


def sendfile(server, path, host="files.test", **headers):
    return get(server, "/sendfile?path=" + _quote(str(path)), host=host, **headers)


def test_x_sendfile_serves_a_file_under_an_internal_root(server, tree):
    status, headers, body = sendfile(server, tree / "private" / "report.txt")
    assert (status, body) == (200, b"quarterly numbers\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8" and headers["ETag"]
    assert headers["Content-Disposition"] == "attachment" and headers["Cache-Control"] == "max-age=60"
    assert "X-Sendfile" not in headers and "X-App-Only" not in headers
    status, headers, body = sendfile(server, tree / "private" / "sub" / "nested.txt", Range="bytes=0-2")
    assert (status, body) == (206, b"nes") and "X-Sendfile" not in headers


def test_x_sendfile_of_a_big_file_rides_sendfile(server, tree):
    before = sendfile_bytes(tree)
    status, headers, size, digest = download(
        server.port, "/sendfile?path=" + _quote(str(tree / "private" / "big.bin")), "files.test")
    assert (status, size, digest) == (200, BIG, sha((tree / "private" / "big.bin").read_bytes()))
    assert sent_since(tree, before, BIG) == BIG and "X-Sendfile" not in headers


@pytest.mark.parametrize("name", [
    "outside.txt",                    # outside every root
    "www/small.txt",                  # under a Static that is not internal
    "www/big.bin",                    # a link into the internal root, named outside it
    "elsewhere/report.txt",           # another host's internal root
    "private/../outside.txt",         # traversal, however it would resolve
    "private/sub/../report.txt",
    "private/./report.txt",
    "private",                        # the root itself, and folders: a file is named
    "private/",
    "private/sub",
    "relative",                       # not an absolute path: 'private/report.txt' from the server's folder
    "empty",
])
def test_x_sendfile_outside_the_internal_roots_is_500_and_logged(server, tree, name):
    path = {"relative": "private/report.txt", "empty": ""}.get(name, f"{tree}/{name}")
    status, headers, body = sendfile(server, path)
    assert status == 500 and body.startswith(b"500 Internal Server Error"), body
    assert SECRET not in body and b"quarterly" not in body and b"small" not in body
    assert "X-Sendfile" not in headers and "Content-Disposition" not in headers
    _wait_for_log(server, f"X-Sendfile to {path!r} for GET /sendfile?path=")


@pytest.mark.parametrize("name", ["private/.secret", "private/missing.txt", "private/sub/%2e%2e"])
def test_x_sendfile_under_the_root_is_judged_by_the_static(server, tree, name):
    status, headers, body = sendfile(server, f"{tree}/{name}")
    assert status == 404 and SECRET not in body and "X-Sendfile" not in headers
    _wait_for_log(server, f"X-Sendfile to {str(tree / name)!r}")


def test_x_sendfile_only_searches_the_requests_own_host(server, tree):
    status, _, body = sendfile(server, tree / "elsewhere" / "report.txt", host="lonely.test")
    assert status == 500 and b"another host" not in body


def test_x_accel_redirect_wins_over_x_sendfile(server, tree):
    status, headers, body = get(server, "/sendfile?path=" + _quote(str(tree / "outside.txt"))
                                + "&to=/protected/report.txt")
    assert (status, body) == (200, b"quarterly numbers\n") and "X-Sendfile" not in headers


def test_a_proxied_upstream_can_x_sendfile_and_accel_off_hides_it(server, tree):
    path = f"/xs{tree}/private/report.txt"
    status, headers, body = get(server, path, host="proxied.test")
    assert (status, body) == (200, b"quarterly numbers\n") and "X-Sendfile" not in headers
    status, headers, body = get(server, f"/xs{tree}/outside.txt", host="proxied.test")
    assert status == 500 and SECRET not in body and "X-Sendfile" not in headers
    status, headers, body = get(server, path, host="ignoring.test")
    assert (status, body) == (201, b"the upstream's own body, never sent")
    assert "X-Sendfile" not in headers and headers["X-Upstream-Only"] == "dropped"


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text, safe="")


def _wait_for_log(server, text: str) -> None:
    wait_until(lambda: text in server.log(), what=f"{text!r} in the log")


# --------------------------------------------------------------------------- wsgi.file_wrapper


def test_file_wrapper_goes_out_with_sendfile_and_is_closed(server, tree):
    before = sendfile_bytes(tree)
    status, headers, size, digest = download(server.port, "/wrap?name=big.bin&tag=whole", "files.test")
    assert (status, size) == (200, BIG) and headers["Content-Length"] == str(BIG)
    assert digest == sha((tree / "private" / "big.bin").read_bytes())
    assert sent_since(tree, before, BIG) == BIG
    assert closed(tree, "whole") == ["closed www/big.bin read=0"]


def test_flask_send_file_rides_sendfile(server, tree):
    before = sendfile_bytes(tree)
    status, headers, size, digest = download(server.port, "/flask/file/mid.bin", "files.test")
    assert (status, size, digest) == (200, MID, sha((tree / "www" / "mid.bin").read_bytes()))
    assert sent_since(tree, before, MID) == MID


def test_file_wrapper_sends_exactly_the_apps_content_length_from_its_offset(server, tree):
    data = (tree / "private" / "big.bin").read_bytes()
    before = sendfile_bytes(tree)
    status, headers, size, digest = download(
        server.port, "/wrap?name=big.bin&offset=1000&length=5000000", "files.test")
    assert (status, size, digest) == (200, 5_000_000, sha(data[1000:5_001_000]))
    assert sent_since(tree, before, 5_000_000) == 5_000_000
    status, _, size, digest = download(server.port, "/wrap?name=mid.bin&offset=100000", "files.test")
    assert (status, digest) == (200, sha((tree / "www" / "mid.bin").read_bytes()[100_000:]))


def test_a_content_length_past_the_end_of_the_file_aborts_the_connection(server, tree):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", f"/wrap?name=mid.bin&length={MID + 10}&tag=short", headers={"Host": "files.test"})
        response = conn.getresponse()
        assert response.headers["Content-Length"] == str(MID + 10)
        with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):  # aborted: RST
            response.read()
    finally:
        conn.close()
    assert closed(tree, "short") == ["closed www/mid.bin read=0"]


def test_small_files_bytesio_and_validated_apps_are_iterated(server, tree):
    mid = (tree / "www" / "mid.bin").read_bytes()
    before = sendfile_bytes(tree)
    assert get(server, "/wrap?name=small.txt&tag=iterated")[::2] == (200, b"small\n")
    assert get(server, "/wrap?name=bytesio")[::2] == (200, b"z" * 200_000)
    status, _, size, digest = download(server.port, "/validated?name=mid.bin&tag=iterated", "files.test")
    assert (status, digest) == (200, sha(mid))
    assert sendfile_bytes(tree) == before
    assert closed(tree, "iterated", 2) == [f"closed www/mid.bin read={MID}", "closed www/small.txt read=6"]


def test_head_of_a_file_wrapper_reads_nothing(server, tree):
    before = sendfile_bytes(tree)
    status, headers, body = get(server, "/wrap?name=big.bin&tag=head", method="HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(BIG))
    assert sendfile_bytes(tree) == before
    assert closed(tree, "head") == ["closed www/big.bin read=0"]


def test_clients_leaving_mid_transfer_close_the_files(server, tree):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /wrap?name=big.bin&tag=left HTTP/1.1\r\nHost: files.test\r\n\r\n")
            sock.recv(1 << 16)
    assert closed(tree, "left", 3) == ["closed www/big.bin read=0"] * 3
    assert not [line for line in notes(tree) if line.startswith("leaked")]


def test_stalled_downloads_hold_neither_a_thread_nor_memory(server):
    """The file is the reactor's once handed over: a one-thread app keeps answering."""
    before = rss_kib(server.proc.pid)
    stalled = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /single?name=big.bin HTTP/1.1\r\nHost: files.test\r\n\r\n")
        stalled.append(sock)
    try:
        time.sleep(1.0)
        assert get(server, "/single?name=small.txt")[::2] == (200, b"small\n")
        grown = rss_kib(server.proc.pid) - before
        assert grown < 24 * 1024, f"server grew by {grown} KiB for stalled clients"
    finally:
        for sock in stalled:
            sock.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server(tree):
    servers, clients = CA(tree, "server CA"), CA(tree, "client CA")
    servers.issue("site", ["a.test"])
    alice = clients.issue("alice", common_name="alice", client=True)
    plain, secure = free_port(), free_port()
    config = write_site(tree, f"""
        from twisthost import TLS, WSGI, Host, Site
        P = [{APPS!r}]
        site = Site(
            listen=["tcp:{plain}:interface=127.0.0.1",
                    TLS("tcp:{secure}:interface=127.0.0.1", cert="site.pem", key="site.key",
                        client_ca="client-CA.pem", verify_client="optional")],
            hosts=[Host("a.test", routes={{
                "/env": WSGI("rawapps:environ_app", pythonpath=P),
                "/wrap": WSGI("accelapp:file_app", pythonpath=P),
            }})],
        )
    """, name="tls_site.py")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(tree / "spy"))
        running = ConfigServer(config, [plain, secure])
    running.secure, running.servers, running.alice = secure, servers, alice
    yield running
    running.stop()


def test_wsgi_sees_the_client_certificate(tls_server):
    context = client_context(tls_server.servers, cert=tls_server.alice)
    head, _, body = tls_get(tls_server.secure, context, "a.test", path="/env").response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    environ = json.loads(body)
    assert environ["SSL_CLIENT_S_DN"] == "CN=alice,O=twisthost tests"
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS" and environ["HTTPS"] == "on"
    assert environ["SSL_TLS_SNI"] == "a.test" and environ["wsgi.url_scheme"] == "https"
    anonymous = json.loads(tls_get(tls_server.secure, client_context(tls_server.servers), "a.test",
                                   path="/env").response.partition(b"\r\n\r\n")[2])
    assert anonymous["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in anonymous
    status, _, plain = tls_server.request("GET", "/env", host="a.test")
    assert status == 200 and not [key for key in json.loads(plain) if key.startswith(("SSL_", "HTTPS"))]


def test_file_wrapper_over_tls_and_http2_is_iterated(tls_server, tree):
    mid = (tree / "www" / "mid.bin").read_bytes()
    before = sendfile_bytes(tree)
    fetched = tls_get(tls_server.secure, client_context(tls_server.servers), "a.test",
                      path=f"/wrap?name=mid.bin&length={MID}&tag=tls")  # with a length: not chunked
    head, _, body = fetched.response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == mid
    assert sendfile_bytes(tree) == before
    assert closed(tree, "tls") == [f"closed www/mid.bin read={MID}"]
    context = client_context(tls_server.servers, alpn=["h2"])
    status, _, body = h2_request(tls_server.secure, "a.test", path="/wrap?name=mid.bin", context=context)
    assert (status, body) == (200, mid) and sendfile_bytes(tree) == before
    assert tls_server.request("GET", "/wrap?name=mid.bin", host="a.test")[2] == mid
    assert sent_since(tree, before, MID) == MID  # the spy is live: plain TCP took sendfile
