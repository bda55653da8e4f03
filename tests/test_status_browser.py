"""The /status page in a real headless Chromium: it renders, shows the hosts, refreshes.

Chromium comes from Debian's package (``make test`` installs it when it is
missing and it can; see tools/system-deps).  The screenshot is kept as a test
artifact under tests/artifacts/ (git-ignored).
"""

import shutil
import subprocess
import time

import pytest

from conftest import ROOT, free_port

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


def test_status_page_in_chromium(tmp_path, serve):
    admin = free_port()
    server = serve(f"""
        from twisthost import Site, Host, Redirect, Resource
        site = Site(
            hosts=[Host("shop.test", Redirect("/to")), Host("blog.test", Redirect("/to"))],
            admin="tcp:{admin}:interface=127.0.0.1",
        )
    """)
    for _ in range(5):
        server.request(host="shop.test")
    url = f"http://127.0.0.1:{admin}/status"

    # The JavaScript refresh runs every 2 s; 5 s of virtual time lets it run.
    dom = chromium(tmp_path, "--dump-dom", "--virtual-time-budget=5000", url=url).stdout
    assert "<h1>twisthost status</h1>" in dom
    assert "shop.test" in dom and "blog.test" not in dom
    assert "data-refreshed=" in dom, "the page did not refresh itself from status.json"

    for _ in range(3):
        server.request(host="blog.test")
    time.sleep(0.2)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,700",
                      "--virtual-time-budget=3000", url=url)
    assert shot.exists() and shot.stat().st_size > 5000, result.stderr[-2000:]
    dom = chromium(tmp_path, "--dump-dom", url=url).stdout
    assert "blog.test" in dom  # the new traffic shows up
