"""``twisthost.vhost``: an answer of the host's guard (the https redirect) is the route's request:
counted and logged with its host and route, and given an ``X-Request-Id``."""

from __future__ import annotations

import re

import pytest

from .inprocess import InProcessSite, head_of, request


@pytest.fixture
def site(tmp_path):
    (tmp_path / "www").mkdir()
    return InProcessSite(tmp_path, """
        from twisthost import Host, Redirect, Site, Static
        site = Site(listen=["tcp:8080"], hosts=[
            Host("secure.test", https_redirect=True, routes={"/": Static("www"), "/api": Redirect("/")}),
        ])
    """)


def counted(site) -> dict:
    return {(s.labels["host"], s.labels["route"], s.labels["status"]): s.value
            for family in site.service.metrics.registry.collect() for s in family.samples
            if s.name == "twisthost_requests_total"}


@pytest.mark.parametrize("target, route", [("/", "/"), ("/x/y", "/"), ("/api/v1?q=1", "/api")])
def test_the_https_redirect_is_counted_with_its_host_and_route(site, target, route):
    status, fields = head_of(site.exchange(request(target, host="secure.test")))
    assert status == 308 and fields[b"location"] == [b"https://secure.test" + target.encode()]
    assert counted(site) == {("secure.test", route, "3xx"): 1.0}


def test_the_https_redirect_has_a_request_id(site):
    fields = head_of(site.exchange(request("/", host="secure.test")))[1]
    assert re.fullmatch(rb"[0-9a-f]{32}", fields[b"x-request-id"][0])
    given = head_of(site.exchange(request("/", "X-Request-Id: abc-123", host="secure.test")))[1]
    assert given[b"x-request-id"] == [b"abc-123"]  # the client's, as for any routed request
