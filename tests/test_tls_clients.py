"""Client certificates (mutual TLS): required and optional, and what the app sees of them.

``ssl_environ(request)`` is what WSGI and resources use to read the verified
subject (``SSL_CLIENT_S_DN``, like mod_ssl and cheroot); it must work over
HTTP/1.1 and HTTP/2 alike.
"""

from __future__ import annotations

import json
import ssl

import pytest
from tls_support import CA, ConfigServer, client_context, h2_request, tls_get

from conftest import free_port, write_site

ENVIRON_APP = """
import json
from twisted.web.resource import Resource
from twisthost.tls import ssl_environ

class Show(Resource):
    isLeaf = True

    def render(self, request):
        return json.dumps(ssl_environ(request)).encode()

show = Show()
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mtls")
    servers, clients, strangers = CA(folder, "server CA"), CA(folder, "client CA"), CA(folder, "other CA")
    servers.issue("a", ["a.test"])
    alice = clients.issue("alice", common_name="alice", client=True)
    mallory = strangers.issue("mallory", common_name="mallory", client=True)
    (folder / "app.py").write_text(ENVIRON_APP)
    return {"folder": folder, "servers": servers, "clients": clients, "alice": alice, "mallory": mallory}


@pytest.fixture(scope="module")
def server(pki):
    required, optional = free_port(), free_port()
    config = write_site(pki["folder"], f"""
        from twisthost import TLS, Host, Resource, Site
        site = Site(
            listen=[TLS("tcp:{required}:interface=127.0.0.1", cert="a.pem", key="a.key",
                        client_ca="client-CA.pem"),
                    TLS("tcp:{optional}:interface=127.0.0.1", cert="a.pem", key="a.key",
                        client_ca="client-CA.pem", verify_client="optional")],
            hosts=[Host("a.test", Resource("app:show"))],
        )
    """)
    running = ConfigServer(config, [required, optional])
    running.required, running.optional = required, optional
    yield running
    running.stop()


def environ_of(fetched) -> dict:
    head, _, body = fetched.response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return json.loads(body)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("listener", ["required", "optional"])
def test_a_trusted_client_certificate_is_verified_and_shown(server, pki, listener, version):
    context = client_context(pki["servers"], cert=pki["alice"], maximum_version=version)
    environ = environ_of(tls_get(getattr(server, listener), context, "a.test"))
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert environ["SSL_CLIENT_S_DN"] == "CN=alice,O=twisthost tests"
    assert environ["SSL_CLIENT_S_DN_CN"] == "alice"
    assert environ["SSL_CLIENT_I_DN"] == "CN=client CA,O=twisthost tests"
    assert environ["SSL_CLIENT_CERT"] == pki["alice"][0].read_text()
    assert int(environ["SSL_CLIENT_M_SERIAL"], 16) > 0
    assert environ["SSL_CLIENT_V_END"].endswith(" GMT")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_required_refuses_a_client_without_certificate(server, pki, version):
    context = client_context(pki["servers"], maximum_version=version)
    with pytest.raises((ssl.SSLError, ConnectionError), match="(?i)certificate|handshake|reset"):
        tls_get(server.required, context, "a.test")


def test_optional_admits_a_client_without_certificate(server, pki):
    environ = environ_of(tls_get(server.optional, client_context(pki["servers"]), "a.test"))
    assert environ["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in environ


@pytest.mark.parametrize("listener", ["required", "optional"])
def test_a_certificate_from_another_ca_is_refused(server, pki, listener):
    context = client_context(pki["servers"], cert=pki["mallory"])
    with pytest.raises((ssl.SSLError, ConnectionError), match="(?i)unknown ca|certificate|reset"):
        tls_get(getattr(server, listener), context, "a.test")


def test_the_subject_is_available_over_http2(server, pki):
    context = client_context(pki["servers"], cert=pki["alice"], alpn=["h2"])
    status, _, body = h2_request(server.required, "a.test", context=context)
    assert status == 200 and json.loads(body)["SSL_CLIENT_S_DN"] == "CN=alice,O=twisthost tests"


def test_the_server_names_the_accepted_cas(server, pki):
    """Browsers offer only certificates from the CAs the server lists in its request."""
    import subprocess

    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.optional}", "-servername", "a.test",
         "-tls1_2"], input=b"", capture_output=True, timeout=20).stdout
    assert b"Acceptable client certificate CA names" in out
    assert b"CN = client CA" in out.partition(b"Acceptable client certificate CA names")[2][:300]
