"""``twisthost.cgi``: which request headers become a script's ``HTTP_*`` variables."""

from __future__ import annotations

import pytest
from twisted.internet.testing import StringTransport

from twisthost.service import HostService, prepare

from .inprocess import HOST, PEER

HEADERS = {
    b"Authorization": b"Bearer secret-token",
    b"Proxy-Authorization": b"Basic cHJveHk6cHc=",
    b"Proxy": b"http://evil:1",
    b"X-Custom": b"1",
}


def cgi_folder(tmp_path, options: str):
    (tmp_path / "cgi").mkdir()
    (tmp_path / "site.py").write_text(
        "from twisthost import CGI, Host, Site\n"
        f"site = Site(hosts=[Host('site.test', routes={{'/cgi-bin': CGI('cgi'{options})}})])\n")
    service = HostService(prepare(str(tmp_path / "site.py")))
    (resource,) = [resource for _, resource, _ in service.current.root.hosts.lookup("site.test").routes]
    return service.factory, resource


def environ(site) -> dict:
    """The environment ``CGIFolder.environ`` makes for a request with :data:`HEADERS`."""
    factory, folder = site
    connection = factory.buildProtocol(PEER)
    connection.makeConnection(StringTransport(hostAddress=HOST, peerAddress=PEER))
    channel = connection.channel  # the HTTP/1.1 channel the HTTP-version switch talks to
    request = channel.requestFactory(channel)
    request.method, request.uri, request.clientproto = b"GET", b"/cgi-bin/x", b"HTTP/1.1"
    for name, value in {b"Host": b"site.test", **HEADERS}.items():
        request.requestHeaders.setRawHeaders(name, [value])
    return folder.environ(request, "/x", [b"cgi-bin", b"x"], [])


@pytest.mark.parametrize("options, authorization", [
    ("", None),                                           # off by default, as Apache without CGIPassAuth
    (", pass_authorization=False", None),
    (", pass_authorization=True", b"Bearer secret-token"),
])
def test_authorization_only_when_asked(tmp_path, options, authorization):
    env = environ(cgi_folder(tmp_path, options))
    assert env.get("HTTP_AUTHORIZATION") == authorization
    assert env["HTTP_X_CUSTOM"] == b"1"
    # Never passed, whatever the option says: the proxy's credentials and httpoxy.
    assert "HTTP_PROXY_AUTHORIZATION" not in env and "HTTP_PROXY" not in env
