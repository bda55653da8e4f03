"""TLS listeners: SNI selection, defaults, versions, ciphers, resumption, redirects, HSTS.

One twistd (module scope) serves hosts a.test and *.b.test with their own
certificates and a default certificate, on a TLS port and a plain one;
clients are Python's ``ssl`` and ``http.client``.
"""

from __future__ import annotations

import http.client
import json
import ssl

import pytest
from tls_support import CA, ConfigServer, client_context, tls_get

from conftest import free_port, write_site

ECHO_APP = """
import json
from twisted.web.resource import Resource
from twisthost.tls import ssl_environ

class Echo(Resource):
    isLeaf = True

    def render(self, request):
        environ = ssl_environ(request)
        environ.pop("SSL_CLIENT_CERT", None)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({
            "proto": request.clientproto.decode(),
            "path": request.uri.decode(),
            "body": request.content.read().decode("latin-1"),
            "ssl": environ,
        }).encode()

echo = Echo()
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = CA(folder)
    ca.issue("a", ["a.test"])
    ca.issue("b", ["*.b.test"])
    ca.issue("default", ["default.test"])
    (folder / "app.py").write_text(ECHO_APP)
    return ca


@pytest.fixture(scope="module")
def server(pki):
    plain, secure = free_port(), free_port()
    config = write_site(pki.folder, f"""
        from twisthost import HSTS, TLS, Host, Resource, Site
        site = Site(
            listen=["tcp:{plain}:interface=127.0.0.1",
                    TLS("tcp:{secure}:interface=127.0.0.1", cert="default.pem", key="default.key")],
            hosts=[
                Host("a.test", Resource("app:echo"), cert="a.pem", key="a.key",
                     https_redirect=True, hsts=HSTS(include_subdomains=True)),
                Host("*.b.test", Resource("app:echo"), cert="b.pem", key="b.key"),
            ],
            default=Resource("app:echo"),
        )
    """)
    running = ConfigServer(config, [plain, secure])
    running.plain, running.secure = plain, secure
    yield running
    running.stop()


# --------------------------------------------------------------------------- SNI


@pytest.mark.parametrize("sni, expected", [
    ("a.test", "a.test"),
    ("A.Test", "a.test"),
    ("x.b.test", "*.b.test"),
    ("x.y.b.test", "default.test"),  # a wildcard covers one label only
    ("b.test", "default.test"),
    ("unknown.test", "default.test"),
    (None, "default.test"),  # no SNI at all
])
def test_sni_picks_the_certificate_of_the_host(server, sni, expected):
    fetched = tls_get(server.secure, client_context(None), sni, host=sni or "a.test")
    assert fetched.response.startswith(b"HTTP/1.1 200"), fetched.response[:200]
    assert fetched.cert_name == expected


def test_certificates_verify_for_their_names(server, pki):
    for name in ("a.test", "x.b.test", "default.test"):
        fetched = tls_get(server.secure, client_context(pki), name)
        assert fetched.response.startswith(b"HTTP/1.1 200")
    with pytest.raises(ssl.SSLCertVerificationError, match="x.y.b.test"):
        tls_get(server.secure, client_context(pki), "x.y.b.test")


# --------------------------------------------------------------------------- versions, resumption


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused_by_the_server(server):
    context = client_context(None, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it; the server must say no
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        tls_get(server.secure, context, "a.test")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("sni", ["a.test", "x.b.test", None])
def test_sessions_resume(server, version, sni):
    context = client_context(None, maximum_version=version)
    first = tls_get(server.secure, context, sni, host=sni or "a.test")
    assert first.version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    again = tls_get(server.secure, context, sni, host=sni or "a.test", session=first.session)
    assert again.session_reused
    assert again.cert_name == first.cert_name
    assert again.response.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("cipher, accepted", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", True),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", True),
    ("ECDHE-ECDSA-AES128-SHA", False),  # CBC: Twisted's default takes it, Mozilla intermediate not
    ("ECDHE-ECDSA-AES256-SHA384", False),
])
def test_tls_1_2_ciphers_are_mozilla_intermediate(server, cipher, accepted):
    context = client_context(None, maximum_version=ssl.TLSVersion.TLSv1_2)
    context.set_ciphers(cipher)
    if accepted:
        assert tls_get(server.secure, context, "a.test").response.startswith(b"HTTP/1.1 200")
    else:
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            tls_get(server.secure, context, "a.test")


def test_ssl_environ_describes_the_connection(server):
    fetched = tls_get(server.secure, client_context(None), "x.b.test")
    body = json.loads(fetched.response.partition(b"\r\n\r\n")[2])
    assert body["ssl"]["HTTPS"] == "on"
    assert body["ssl"]["SSL_TLS_SNI"] == "x.b.test"
    assert body["ssl"]["SSL_PROTOCOL"] == "TLSv1.3"
    assert body["ssl"]["SSL_CLIENT_VERIFY"] == "NONE"
    status, _, plain = server.request(path="/", host="x.b.test")
    assert status == 200 and json.loads(plain)["ssl"] == {}


# --------------------------------------------------------------------------- redirect, HSTS


def plain_request(server, method, path, host):
    conn = http.client.HTTPConnection("127.0.0.1", server.plain, timeout=10)
    try:
        conn.request(method, path, body=b"x" if method == "POST" else None, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("path", ["/", "/x/y?z=1&w=%20", "/dir/"])
def test_plain_http_is_redirected_to_https_keeping_path_and_query(server, method, path):
    status, headers, _ = plain_request(server, method, path, "a.test:1234")
    assert status == 308
    assert headers["Location"] == f"https://a.test:{server.secure}{path}"
    assert "Strict-Transport-Security" not in headers


def test_acme_challenges_and_other_hosts_stay_on_plain_http(server):
    status, headers, body = plain_request(server, "GET", "/.well-known/acme-challenge/token", "a.test")
    assert status == 200 and json.loads(body)["path"] == "/.well-known/acme-challenge/token"
    assert plain_request(server, "GET", "/", "x.b.test")[0] == 200


def test_hsts_only_over_https_and_only_for_its_host(server):
    fetched = tls_get(server.secure, client_context(None), "a.test")
    head = fetched.response.partition(b"\r\n\r\n")[0].lower()
    assert b"strict-transport-security: max-age=31536000; includesubdomains\r\n" in head + b"\r\n"
    other = tls_get(server.secure, client_context(None), "x.b.test")
    assert b"strict-transport-security" not in other.response.partition(b"\r\n\r\n")[0].lower()


def test_https_from_a_trusted_proxy_is_not_redirected(tmp_path, pki):
    """Behind a TLS-terminating proxy, X-Forwarded-Proto from a trusted peer counts as https."""
    plain = free_port()
    config = write_site(pki.folder, f"""
        from twisthost import Host, Resource, Site
        site = Site(listen=["tcp:{plain}:interface=127.0.0.1"], trusted_proxies=["127.0.0.1"],
                    hosts=[Host("a.test", Resource("app:echo"), https_redirect=True, hsts=600)])
    """, name="proxied.py")
    running = ConfigServer(config, [plain])
    try:
        status, headers, _ = running.request(host="a.test", headers={"X-Forwarded-Proto": "https"})
        assert status == 200 and headers["Strict-Transport-Security"] == "max-age=600"
        status, headers, _ = running.request(host="a.test", path="/p?q")
        assert status == 308 and headers["Location"] == "https://a.test/p?q"  # no TLS listener: 443
    finally:
        running.stop()
