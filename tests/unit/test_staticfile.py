"""``twisthost.staticfile``: what a 304 carries (RFC 9110 15.4.5)."""

from __future__ import annotations

import gzip

import pytest

from .inprocess import InProcessSite, head_of, request

CSS = b"body { color: #333; }\n" * 100


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("staticfile")
    (folder / "www").mkdir()
    (folder / "www" / "style.css").write_bytes(CSS)
    (folder / "www" / "style.css.gz").write_bytes(gzip.compress(CSS, mtime=0))
    (folder / "www" / "plain.bin").write_bytes(b"0123456789")
    return InProcessSite(folder, """
        from twisthost import Host, Site, Static
        site = Site(hosts=[Host("site.test", Static("www", max_age=60))])
    """)


def validators(site, target: str, *headers: str) -> dict:
    status, fields = head_of(site.exchange(request(target, *headers)))
    assert status in (200, 206)
    return fields


@pytest.mark.parametrize("target, headers", [
    ("/plain.bin", ()),                                  # the cached whole-file path
    ("/style.css", ("Accept-Encoding: gzip",)),          # a sidecar: FileResponse, Content-Encoding
    ("/style.css", ("Accept-Encoding: gzip", "Range: bytes=0-1")),
])
def test_304_has_no_content_type_or_encoding_but_keeps_cache_updates(site, target, headers):
    fresh = validators(site, target, *headers)
    assert b"content-type" in fresh
    etag = fresh[b"etag"][0].decode()
    status, fields = head_of(site.exchange(request(target, *headers, f"If-None-Match: {etag}")))
    assert status == 304
    assert b"content-type" not in fields and b"content-encoding" not in fields
    assert fields[b"etag"] == fresh[b"etag"] and fields[b"cache-control"] == [b"max-age=60"]
    assert fields.get(b"vary") == fresh.get(b"vary")


def test_412_is_unchanged(site):
    status, fields = head_of(site.exchange(request("/plain.bin", 'If-Match: "other"')))
    assert status == 412 and fields[b"content-type"][0].startswith(b"text/plain")
