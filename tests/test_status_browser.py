"""The /status page in a real headless Chromium: it renders, shows every route, colours trouble, refreshes.

Chromium comes from Debian's package (``make test`` installs it when it is
missing and it can; see .ci/system-deps).  The screenshot is kept as a test
artifact under tests/artifacts/ (git-ignored); docs/images/status-page.png
is a copy of it:

    .venv/bin/python -m pytest tests/test_status_browser.py && cp tests/artifacts/status-page.png docs/images/
"""

import json
import re
import shutil
import signal
import subprocess

import pytest

from conftest import ROOT, free_port, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def chromium(tmp_path, *args, url):
    """Run headless Chromium with a fresh profile and the flags this machine needs."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", *args, url],
        capture_output=True, text=True, timeout=90,
    )


def rows_of(dom: str, table_id: str) -> list[str]:
    """The ``<tr ...>...</tr>`` of one table's body, as Chromium serialised them."""
    match = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert match, f"no table {table_id}"
    return re.findall(r"<tr[^>]*>.*?</tr>", match.group(1), re.S)


def admin_json(port: int) -> dict:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=10) as response:
        return json.load(response)


def test_status_page_in_chromium(tmp_path, serve):
    from tls_support import CA
    ca = CA(tmp_path)
    cert, key = ca.issue("shop", ["shop.test"], days=5)  # red: within a week
    blog_cert, blog_key = ca.issue("blog", ["blog.test"], days=20)  # amber: within a month
    (tmp_path / "empty").mkdir()
    admin, nobody = free_port(), free_port()
    apps = ROOT / "tests" / "apps"
    server = serve(f"""
        from twisthost import Site, Host, Redirect, Static, WSGI, Proxy, HealthCheck, TLS
        app = dict(pythonpath=[{str(apps)!r}], threads=2)
        site = Site(
            listen=["tcp:0", TLS("tcp:0:interface=127.0.0.1", cert={str(cert)!r}, key={str(key)!r})],
            hosts=[
                Host("shop.test", routes={{"/": WSGI("rawapps:environ_app", **app), "/old": Redirect("/"),
                                           "/files": Static("empty")}}),
                Host("blog.test", WSGI("rawapps:environ_app", **app), cert={str(blog_cert)!r}, key={str(blog_key)!r}),
                Host("api.test", Proxy("http://127.0.0.1:{nobody}", health=HealthCheck(interval=0.2))),
            ],
            admin="tcp:{admin}:interface=127.0.0.1",
        )
    """)
    for path in ("/", "/", "/old", "/files/missing"):
        server.request(host="shop.test", path=path)
    server.request(host="api.test")  # 502: the upstream is down
    wait_until(lambda: "failed" in admin_json(admin)["sources"]["upstreams"][0]["last_check"],
               what="a failed health check")
    # A reload that fails leaves a red line in "Recent reloads"; the old config keeps serving.
    good = server.config.read_text()
    server.config.write_text("site = 1\n")
    server.signal(signal.SIGHUP)
    wait_until(lambda: admin_json(admin)["reloads"], what="the failed reload")
    server.config.write_text(good)
    url = f"http://127.0.0.1:{admin}/status"

    # The refresh runs every 2 s; 5 s of virtual time lets it run.
    dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", url=url).stdout
    assert "<h1>twisthost status</h1>" in dom
    assert "data-refreshed=" in dom, "the page did not refresh itself"

    routes = rows_of(dom, "routes")
    # Every configured route is listed, blog.test although no request reached it yet.
    assert [re.findall(r"<td>([^<]*)</td>", row)[:2] for row in routes] == [
        ["api.test", "/"], ["blog.test", "/"], ["shop.test", "/"], ["shop.test", "/files"], ["shop.test", "/old"]]
    headings = re.findall(r'<th scope="col"[^>]*>([^<]*)</th>', dom)
    assert {"4xx (1 min)", "5xx (1 min)", "Up", "Memory (RSS)", "Rejected (503)", "Healthy", "Days left"} <= set(headings)
    assert not {"uptime_s", "rss_mib", "rejected_503", "days_left"} & set(headings)
    files = next(row for row in routes if "/files" in row)
    assert "25.0%" not in files and re.search(r">100\.0%</td>.*?>0\.0%</td>", files)  # the 404: a 4xx, not a 5xx
    assert routes[0].startswith('<tr class="bad">')  # api.test: every request a 502

    # Two pools of the same app, told apart by host and route.
    pools = rows_of(dom, "source-pools")
    assert len(pools) == 2 and all("rawapps:environ_app" in row for row in pools)
    assert "<td>shop.test</td><td>/</td>" in pools[0] and "<td>blog.test</td><td>/</td>" in pools[1]

    (upstream,) = rows_of(dom, "source-upstreams")
    assert upstream.startswith('<tr class="bad">') and ">no</td>" in upstream and "True" not in dom
    blog, shop = rows_of(dom, "source-certificates")
    assert shop.startswith('<tr class="bad">') and blog.startswith('<tr class="warn">')
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d UTC</td>", shop)
    (reload_row,) = rows_of(dom, "reloads")
    assert reload_row.startswith('<tr class="bad">') and "failed" in reload_row
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+</td>", reload_row)  # a time zone
    assert re.search(r"as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\-0-9]+", dom)
    assert re.search(r'class="badge bad">4 need action</span> <span class="badge warn">1 to watch', dom)

    for _ in range(3):
        server.request(host="blog.test")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1080", "--hide-scrollbars",
                      "--virtual-time-budget=3000", url=url)
    assert shot.exists() and shot.stat().st_size > 5000, result.stderr[-2000:]
    blog = next(row for row in rows_of(chromium(tmp_path, "--dump-dom", url=url).stdout, "routes")
                if "blog.test" in row)
    assert "<td class=\"num\">3</td>" in blog  # the new traffic shows up
