"""``twisthost.static``: percent-escapes in a request path, on the lane and the usual path."""

from __future__ import annotations

import pytest

from twisthost.static import bad_escape

from .inprocess import InProcessSite, head_of, request


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("static")
    (folder / "www").mkdir()
    (folder / "www" / "100%.txt").write_bytes(b"a literal percent")
    (folder / "www" / "ok.txt").write_bytes(b"fine")
    return InProcessSite(folder, """
        from twisthost import Host, Site, Static
        site = Site(hosts=[Host("site.test", routes={"/": Static("www"), "/in": Static("www", internal=True)})])
    """)


# A Range header sends the request down the usual path (the lane takes whole files only).
USUAL = "Range: bytes=0-3"


@pytest.mark.parametrize("target", [b"/100%.txt", b"/%zz", b"/ok.txt%", b"/ok.txt%2", b"/%G0/ok.txt",
                                    b"/100%.txt?x=1"])
@pytest.mark.parametrize("headers", [(), (USUAL,)], ids=["lane", "usual"])
def test_bad_escape_is_400(site, target, headers):
    status, _ = head_of(site.exchange(request(target.decode(), *headers)))
    assert status == 400


@pytest.mark.parametrize("target, body", [
    ("/100%25.txt", b"a literal percent"),   # the escape of '%' names the file
    ("/ok%2etxt", b"fine"),                   # any hex case of a valid escape
    ("/ok.txt?q=100%", b"fine"),              # the query is not the path
])
@pytest.mark.parametrize("headers", [(), (USUAL,)], ids=["lane", "usual"])
def test_good_escapes_are_served(site, target, body, headers):
    response = site.exchange(request(target, *headers))
    status, _ = head_of(response)
    assert status in (200, 206) and body.startswith(response.partition(b"\r\n\r\n")[2])


def test_an_internal_static_still_hides_before_judging_the_path(site):
    assert head_of(site.exchange(request("/in/100%.txt")))[0] == 404


@pytest.mark.parametrize("target, bad", [
    (b"/", False), (b"/%41", False), (b"/%4a%4A", False), (b"/a?%", False),
    (b"/%", True), (b"/%4", True), (b"/%4g", True), (b"/%%41", True), (b"/a%20b%", True),
])
def test_bad_escape(target, bad):
    assert bad_escape(target) is bad
