"""``twisthost.health``: the Host header active health checks are sent with."""

from __future__ import annotations

import pytest
from conftest import ROOT

from twisthost.service import prepare


def checker_of(prepared, host: str):
    """The health checker of the one Proxy mounted at ``/`` of ``host``."""
    table = prepared.root.hosts.lookup(host)
    (proxy,) = [resource for _, resource, label in table.routes if label == "/"]
    return proxy.gateway.checker


@pytest.mark.parametrize("options, expected", [
    ("health=HealthCheck()", None),                                    # the upstream's host:port
    ("health=HealthCheck(), host='app.test'", b"app.test"),            # the Host the proxy sends
    ("health=HealthCheck(host='check.test'), host='app.test'", b"check.test"),  # the check's own
    ("health=HealthCheck(), host='b\u00fccher.test'", "b\u00fccher.test".encode("idna")),
])
def test_the_checks_host(tmp_path, options, expected):
    (tmp_path / "site.py").write_text(
        "from twisthost import HealthCheck, Host, Proxy, Site\n"
        f"site = Site(hosts=[Host('p.test', Proxy('http://127.0.0.1:9', {options}))])\n")
    checker = checker_of(prepare(str(tmp_path / "site.py")), "p.test")
    assert checker.host == expected


def test_the_demos_checks_ask_the_site_it_proxies_not_the_default_host():
    checker = checker_of(prepare(str(ROOT / "examples" / "site.py")), "proxy.localhost")
    assert checker.host == b"app.localhost"
