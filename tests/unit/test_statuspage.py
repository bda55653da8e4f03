"""The /status page's data and rendering, in process: 4xx and 5xx apart, every route listed,
pools named by their routes, words instead of series names, colour where something is wrong."""

from __future__ import annotations

import re
import textwrap
import time

import pytest

from twisthost import statuscli, statuspage
from twisthost.admin import AdminState
from twisthost.metrics import Metrics, RouteWindow, summarize
from twisthost.service import prepare
from twisthost.sources import pool_mounts


def test_4xx_and_5xx_are_counted_apart():
    window = RouteWindow()
    for status in (200, 200, 404, 410, 502):
        window.add(1000.0, 0.001, status)
    summary = window.summary(1000.0)
    assert (summary["client_error_rate"], summary["server_error_rate"]) == (0.4, 0.2)


def test_worker_windows_merge_both_error_counts():
    one, two = RouteWindow(), RouteWindow()
    one.add(1000.0, 0.001, 404)
    two.add(1000.0, 0.001, 503)
    two.add(1000.0, 0.001, 200)
    merged = RouteWindow.merged([one.raw(), two.raw()])
    assert merged.counts[-1] == [1000.0, 3, 1, 1]


def test_routes_without_traffic_are_listed():
    window = RouteWindow()
    window.add(1000.0, 0.001, 200)
    rows = summarize({("a.test", "/"): window}, [("a.test", "/"), ("a.test", "/api"), ("(default)", "/")])
    assert [(r["host"], r["route"], r["total"]) for r in rows] == [
        ("(default)", "/", 0), ("a.test", "/", 1), ("a.test", "/api", 0)]
    assert rows[0]["p50_ms"] is None and rows[0]["series"] == [0] * 30


@pytest.fixture
def prepared(tmp_path):
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    path = tmp_path / "site.py"
    path.write_text(textwrap.dedent("""
        from twisthost import Site, Host, WSGI, Redirect
        site = Site(hosts=[
            Host("a.test", routes={"/": WSGI("app:app"), "/old": Redirect("/")}),
            Host("b.test", routes={"/api": WSGI("app:app"), "/x": WSGI("app:app", pool="shared"),
                                   "/y": WSGI("app:app", pool="shared")}),
        ])
    """))
    return prepare(str(path))


def test_the_status_data_lists_configured_routes(prepared):
    state = AdminState(Metrics(), lambda: prepared, None)
    assert [(r["host"], r["route"]) for r in state.routes()] == [
        ("a.test", "/"), ("a.test", "/old"), ("b.test", "/api"), ("b.test", "/x"), ("b.test", "/y")]


def test_pools_of_one_app_are_named_by_their_routes(prepared):
    rows = prepared.context.status_sources["pools"]()
    assert [(r["host"], r["route"], r["name"]) for r in rows] == [
        ("a.test", "/", "app:app"), ("b.test", "/api", "app:app"), ("b.test, b.test", "/x, /y", "shared")]
    assert len(pool_mounts(prepared.context.mounts)) == 3


@pytest.mark.parametrize("key, value, shown", [
    ("uptime_s", 42, "42 s"), ("uptime_s", 3725, "1 h 2 min"), ("uptime_s", 200000, "2 d 7 h"),
    ("rss_mib", 58.94, "58.9 MiB"), ("queue_wait_max_ms", 0.1234, "0.123 ms"), ("p99_ms", None, "–"),
    ("server_error_rate", 0.25, "25.0%"), ("healthy", True, "yes"), ("healthy", False, "no"),
    ("backup", "no", "no"), ("total", 3, "3"), ("last_check", "", "–"),
])
def test_cells_read_in_their_units(key, value, shown):
    assert statuspage.text(key, value) == shown


def test_column_names_are_words():
    for key in ("uptime_s", "rss_mib", "rejected_503", "timeouts_504", "queue_wait_max_ms", "days_left"):
        assert "_" not in statuspage.title(key)
    assert statuspage.title("rejected_503") == "Rejected (503)"


@pytest.mark.parametrize("source, row, state", [
    ("upstreams", {"healthy": False}, "bad"),
    ("upstreams", {"healthy": True}, ""),
    ("pools", {"busy": 2, "max_threads": 2, "queued": 16, "queue_limit": 16}, "bad"),  # next one gets 503
    ("pools", {"busy": 2, "max_threads": 2, "queued": 3, "queue_limit": 16}, "warn"),  # requests wait
    ("pools", {"busy": 1, "max_threads": 2, "queued": 0, "queue_limit": 16}, ""),
    ("certificates", {"days_left": -1}, "bad"),
    ("certificates", {"days_left": 7}, "bad"),
    ("certificates", {"days_left": 30}, "warn"),
    ("certificates", {"days_left": 31}, ""),
    ("reloads", {"ok": False}, "bad"),
    ("routes", {"server_error_rate": 0.05}, "bad"),
    ("routes", {"server_error_rate": 0.01}, "warn"),
    ("routes", {"server_error_rate": 0.0}, ""),
    ("processes", {"pid": "1"}, ""),
])
def test_health_colours(source, row, state):
    assert statuspage.health(source, row) == state


SNAPSHOT = {
    "pid": 7, "time": 1_800_000_000.0, "uptime": 3725.0, "config": "/srv/site.py",
    "routes": [{"host": "a.test", "route": "/", "rate": 0.5, "client_error_rate": 0.1, "server_error_rate": 0.0,
                "p50_ms": 1.0, "p99_ms": 2.0, "total": 30, "series": [1] * 30}],
    "sources": {
        "processes": [{"pid": "7", "uptime_s": 3725, "requests": 30, "rss_mib": 41.0}],
        "upstreams": [{"url": "http://u:1", "healthy": False, "backup": "no", "weight": 1, "active": 0,
                       "last_check": "-"}],
        "certificates": [{"file": "/c.pem", "names": "a.test", "expires": "2027-01-15 12:00 UTC", "days_left": 20}],
    },
    "reloads": [{"time": 1_800_000_000.0, "ok": True, "detail": "/srv/site.py"}],
}


@pytest.fixture
def utc(monkeypatch):
    """Times on the page are local, with their zone: render them in a known one."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_page(utc):
    page = statuspage.render(SNAPSHOT)
    assert "uptime_s" not in page and "rss_mib" not in page and "True" not in page and "False" not in page
    assert "up <span id=\"uptime\">1 h 2 min</span>" in page
    assert "as of 2027-01-15 08:00:00 UTC" in page and "<td>2027-01-15 08:00:00 UTC</td>" in page
    assert re.search(r'<table id="source-upstreams">.*<tr class="bad"><td[^>]*>http://u:1</td>', page)
    assert re.search(r'<table id="source-certificates">.*<tr class="warn">', page)
    assert '<span class="badge bad">1 need action</span> <span class="badge warn">1 to watch</span>' in page
    # Dates and numbers stay on one line; only free text may wrap.
    assert "white-space: nowrap" in page and '<td class="wrap">a.test</td>' in page
    assert "<td>2027-01-15 12:00 UTC</td>" in page
    assert "http://" not in page.replace("http://u:1", "")  # self-contained


def test_times_name_their_zone(utc, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    assert statuspage.local_time(1_800_000_000.0) == "2027-01-15 09:00:00 CET"


def test_all_healthy_says_so():
    calm = {**SNAPSHOT, "sources": {}, "reloads": []}
    assert '<p id="summary" class="summary ok">All healthy.</p>' in statuspage.render(calm)


def test_the_terminal_tables_use_the_same_words(utc):
    out = statuscli.render(SNAPSHOT)
    assert out.startswith("pid 7  up 1 h 2 min  config /srv/site.py  as of 2027-01-15 08:00:00 UTC")
    assert re.search(r"Host\s+Route\s+Req/s \(1 min\)\s+4xx \(1 min\)\s+5xx \(1 min\)", out)
    assert re.search(r"a\.test\s+/\s+0\.5\s+10\.0%\s+0\.0%", out)
    assert "Memory (RSS)" in out and "41.0 MiB" in out and "Healthy" in out and " no " in out
