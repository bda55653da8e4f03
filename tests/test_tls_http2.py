"""HTTP/2 over TLS (ALPN) for every service type, with ``curl --http2`` and the ``h2`` library.

Also the per-listener switches: ``http2=False`` serves HTTP/1.1 only and
``min_version="1.3"`` refuses TLS 1.2.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess

import pytest
from tls_support import CA, ConfigServer, client_context, h2_request, tls_get

from conftest import free_port, write_site

ECHO_APP = """
import json
from twisted.web.resource import Resource

class Echo(Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"proto": request.clientproto.decode(), "method": request.method.decode(),
                           "prepath": b"/".join(request.prepath).decode(),
                           "body": request.content.read().decode("latin-1")}).encode()

echo = Echo()
"""

WSGI_APP = """
import json

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    out = json.dumps({"proto": environ["SERVER_PROTOCOL"], "method": environ["REQUEST_METHOD"],
                      "script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"],
                      "scheme": environ["wsgi.url_scheme"], "body": body.decode("latin-1")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
"""

BIG = bytes(range(256)) * 1024  # 256 KiB: several times HTTP/2's initial flow-control window


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("h2")
    ca = CA(folder)
    ca.issue("a", ["a.test"])
    (folder / "app.py").write_text(ECHO_APP)
    (folder / "wsgiapp.py").write_text(WSGI_APP)
    (folder / "files").mkdir()
    (folder / "files" / "big.bin").write_bytes(BIG)
    (folder / "files" / "hello.txt").write_text("hello over h2\n")
    h2_port, h1_port = free_port(), free_port()
    config = write_site(folder, f"""
        from twisthost import TLS, WSGI, Host, Redirect, Resource, Site, Static
        site = Site(
            listen=[TLS("tcp:{h2_port}:interface=127.0.0.1", cert="a.pem", key="a.key"),
                    TLS("tcp:{h1_port}:interface=127.0.0.1", cert="a.pem", key="a.key",
                        http2=False, min_version="1.3")],
            hosts=[Host("a.test", routes={{
                "/": Resource("app:echo"),
                "/files": Static("files"),
                "/go": Redirect("https://elsewhere.test/base", status=307),
                "/wsgi": WSGI("wsgiapp:app"),
            }})],
        )
    """)
    running = ConfigServer(config, [h2_port, h1_port])
    running.h2_port, running.h1_port, running.ca = h2_port, h1_port, ca
    yield running
    running.stop()


# --------------------------------------------------------------------------- the h2 library


def test_h2_get_and_post_through_a_resource(server):
    status, headers, body = h2_request(server.h2_port, "a.test", "GET", "/x?y=1")
    assert status == 200 and json.loads(body) == {"proto": "HTTP/2", "method": "GET", "prepath": "", "body": ""}
    status, _, body = h2_request(server.h2_port, "a.test", "POST", "/x", b"posted over h2")
    assert status == 200 and json.loads(body)["body"] == "posted over h2"


def test_h2_get_and_post_through_wsgi(server):
    status, _, body = h2_request(server.h2_port, "a.test", "GET", "/wsgi/p/q")
    assert status == 200, body
    assert json.loads(body) == {"proto": "HTTP/2", "method": "GET", "script_name": "/wsgi",
                                "path_info": "/p/q", "scheme": "https", "body": ""}
    payload = b"form=1&" + b"x" * 100_000  # larger than one flow-control window
    status, _, body = h2_request(server.h2_port, "a.test", "POST", "/wsgi/submit", payload,
                                 headers=[("content-type", "application/x-www-form-urlencoded")])
    assert status == 200 and json.loads(body)["body"] == payload.decode()


def test_h2_static_files_whole_and_ranged(server):
    status, headers, body = h2_request(server.h2_port, "a.test", "GET", "/files/big.bin")
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
    status, headers, body = h2_request(server.h2_port, "a.test", "GET", "/files/big.bin",
                                       headers=[("range", "bytes=1000-1999")])
    assert status == 206 and body == BIG[1000:2000]
    status, _, _ = h2_request(server.h2_port, "a.test", "GET", "/files/missing")
    assert status == 404


def test_h2_redirect(server):
    status, headers, _ = h2_request(server.h2_port, "a.test", "GET", "/go/more?q=1")
    assert status == 307 and headers["location"] == "https://elsewhere.test/base/more?q=1"


# --------------------------------------------------------------------------- curl


def curl(server, *args: str, port=None) -> subprocess.CompletedProcess:
    port = port or server.h2_port
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(server.ca.path), "--resolve", f"a.test:{port}:127.0.0.1",
         "-w", "\n%{http_version} %{http_code}", *args],
        capture_output=True, timeout=30, check=True,
    )


pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command")


@pytest.mark.parametrize("path, expected", [
    ("/", b'"proto": "HTTP/2"'),
    ("/wsgi/", b'"proto": "HTTP/2"'),
    ("/files/hello.txt", b"hello over h2\n"),
])
def test_curl_http2_get(server, path, expected):
    out = curl(server, "--http2", f"https://a.test:{server.h2_port}{path}").stdout
    body, _, status = out.rpartition(b"\n")
    assert status == b"2 200" and expected in body


def test_curl_http2_post_and_big_download(server, tmp_path):
    out = curl(server, "--http2", "--data-binary", "@-", f"https://a.test:{server.h2_port}/wsgi/up",
               "-o", str(tmp_path / "echo")).stdout
    assert out.strip() == b"2 200"
    out = curl(server, "--http2", f"https://a.test:{server.h2_port}/files/big.bin",
               "-o", str(tmp_path / "big")).stdout
    assert out.strip() == b"2 200" and (tmp_path / "big").read_bytes() == BIG


# --------------------------------------------------------------------------- per-listener switches


def test_http2_false_serves_http_1_1_only(server):
    out = curl(server, "--http2", f"https://a.test:{server.h1_port}/", port=server.h1_port).stdout
    assert out.rpartition(b"\n")[2] == b"1.1 200"
    fetched = tls_get(server.h1_port, client_context(server.ca, alpn=["h2", "http/1.1"]), "a.test")
    assert fetched.alpn == "http/1.1" and fetched.response.startswith(b"HTTP/1.1 200")
    h2_only = client_context(server.ca, alpn=["h2"])  # no protocol in common: served without ALPN
    fetched = tls_get(server.h1_port, h2_only, "a.test")
    assert fetched.alpn is None and fetched.response.startswith(b"HTTP/1.1 200")


def test_min_version_1_3_refuses_tls_1_2(server):
    tls12 = client_context(server.ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        tls_get(server.h1_port, tls12, "a.test")
    assert tls_get(server.h2_port, tls12, "a.test").version == "TLSv1.2"
    assert tls_get(server.h1_port, client_context(server.ca), "a.test").version == "TLSv1.3"
