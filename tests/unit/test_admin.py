"""``twisthost.admin``: the admin listener's index page, 404s and ``Server`` header."""

from __future__ import annotations

import re
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import StringTransport

from twisthost.admin import PAGES, AdminSite
from twisthost.service import HostService, prepare

from .inprocess import HOST, PEER, head_of, request


def admin_site(folder, options: str = "") -> AdminSite:
    (folder / "site.py").write_text(textwrap.dedent(f"""
        from twisthost import Host, Redirect, Site
        site = Site(hosts=[Host("site.test", Redirect("/"))], admin="tcp:0:interface=127.0.0.1"{options})
    """))
    service = HostService(prepare(str(folder / "site.py")))
    (site,) = [child.factory for child in service if isinstance(getattr(child, "factory", None), AdminSite)]
    return site


def ask(site: AdminSite, data: bytes) -> bytes:
    channel = site.buildProtocol(PEER)
    transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value()


@pytest.fixture
def site(tmp_path):
    return admin_site(tmp_path)


def test_index_links_every_page(site):
    response = ask(site, request("/"))
    status, fields = head_of(response)
    assert status == 200 and fields[b"content-type"] == [b"text/html; charset=utf-8"]
    links = re.findall(rb'<a href="([^"]+)">', response)
    assert links == [b"/" + path.encode() for path, _ in PAGES]
    assert {b"/healthz", b"/readyz", b"/metrics", b"/status"} <= set(links)
    for link in links:  # and each one answers
        assert head_of(ask(site, request(link.decode())))[0] == 200


@pytest.mark.parametrize("target", ["/", "/healthz", "/metrics", "/nothing", "/status/x", "//"])
def test_no_twisted_version_anywhere(site, target):
    response = ask(site, request(target))
    assert b"TwistedWeb" not in response and b"Twisted" not in response
    assert head_of(response)[1][b"server"] == [b"twisthost"]


@pytest.mark.parametrize("target", ["/nothing", "/status/x", "/metrics/", "//"])
def test_unknown_paths_are_a_plain_404(site, target):
    response = ask(site, request(target))
    status, fields = head_of(response)
    assert status == 404 and fields[b"content-type"] == [b"text/plain; charset=utf-8"]
    assert response.endswith(b"\r\n\r\n404 Not Found\nNot found.\n")


def test_server_header_follows_the_config(tmp_path):
    assert b"server" not in head_of(ask(admin_site(tmp_path, ", server_header=None"), request("/")))[1]


def test_the_index_needs_no_token_but_the_pages_do(tmp_path):
    site = admin_site(tmp_path, ", admin_token='s3cret'")
    response = ask(site, request("/"))
    assert head_of(response)[0] == 200 and b"s3cret" not in response
    assert head_of(ask(site, request("/metrics")))[0] == 401
    assert head_of(ask(site, request("/metrics", "Authorization: Bearer s3cret")))[0] == 200


# --------------------------------------------------------------------------- /metrics


def exposition(folder, hosts: str):
    """The HostService of a site with ``hosts``, and a function returning its /metrics families."""
    (folder / "metrics_apps.py").write_text("def app(environ, start_response):\n    return []\n")
    (folder / "site.py").write_text(
        "from twisthost import WSGI, Host, Proxy, Site\n"
        f"site = Site(hosts=[{hosts}], admin='tcp:0:interface=127.0.0.1')\n")
    service = HostService(prepare(str(folder / "site.py")))
    (site,) = [child.factory for child in service if isinstance(getattr(child, "factory", None), AdminSite)]

    def families() -> dict:
        response = ask(site, request("/metrics"))
        assert head_of(response)[0] == 200
        return {family.name: family
                for family in text_string_to_metric_families(response.partition(b"\r\n\r\n")[2].decode())}
    return service, families


def series(family) -> list:
    return [(sample.name, tuple(sorted(sample.labels.items()))) for sample in family.samples]


SHARED = """
    Host("a.test", Proxy("http://127.0.0.1:9001")),
    Host("b.test", routes={"/": Proxy("http://127.0.0.1:9001"), "/api": Proxy("http://127.0.0.1:9001")}),
    Host("c.test", WSGI("metrics_apps:app", pythonpath=["."])),
    Host("d.test", WSGI("metrics_apps:app", pythonpath=["."])),
"""


def test_no_two_samples_are_one_series(tmp_path):
    """One URL behind three proxies and one app on two hosts: Prometheus refuses an exposition
    with a series twice (and would keep one of the conflicting values at random)."""
    _, families = exposition(tmp_path, SHARED)
    found = families()
    for family in found.values():
        names = series(family)
        assert len(names) == len(set(names)), f"duplicate series in {family.name}"
    healthy = found["twisthost_upstreams_healthy"]
    assert sorted((s.labels["host"], s.labels["route"]) for s in healthy.samples) == [
        ("a.test", "/"), ("b.test", "/"), ("b.test", "/api")]
    assert {s.labels["url"] for s in healthy.samples} == {"http://127.0.0.1:9001"}
    assert sorted(s.labels["host"] for s in found["twisthost_pools_busy"].samples) == ["c.test", "d.test"]


def test_each_proxys_upstream_has_its_own_value(tmp_path):
    service, families = exposition(tmp_path, SHARED)
    table = service.current.root.hosts.lookup("b.test")
    api = next(resource for _, resource, label in table.routes if label == "/api")
    for upstream in api.gateway.upstreams:
        upstream.checked(False, passes=1, fails=1)  # its health check failed
    values = {(s.labels["host"], s.labels["route"]): s.value
              for s in families()["twisthost_upstreams_healthy"].samples}
    assert values == {("a.test", "/"): 1.0, ("b.test", "/"): 1.0, ("b.test", "/api"): 0.0}
