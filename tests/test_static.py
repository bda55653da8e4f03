"""Static files over real sockets: safety, validators, ranges, encodings, index/fallback.

One twistd serves a fixture tree under several hosts, each a ``Static`` with
other options; raw sockets are used wherever http.client or curl would
normalise the path (traversal).
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import subprocess
import time

import pytest

from conftest import Server, free_port, raw_request, write_site

TEN = b"0123456789"
CSS = b"body { color: #333; }\n" * 100  # 2200 bytes, compressible
JS = b"function hello(name) { return 'hello ' + name; }\n" * 80
SECRET = b"TOP-SECRET-OUTSIDE"
DOT_SECRET = b"DOTFILE-SECRET"
SITE = """
from twisthost import Host, Site, Static
site = Site(hosts=[
    Host("plain.test", Static("www")),
    Host("open.test", Static("www", listing=True, dotfiles=True, follow_symlinks=True)),
    Host("list.test", Static("www", listing=True)),
    Host("spa.test", Static("www", fallback="index.html", not_found="404.html")),
    Host("cache.test", Static("www", max_age=60, gzip=False, precompressed=[],
                              cache={"*.css": "max-age=31536000, immutable", "sub/*": "no-cache"})),
    Host("hidden.test", Static("www", internal=True)),
    Host("mounted.test", routes={"/assets": Static("www")}),
])
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("static")
    www = base / "www"
    for folder in ("sub/deeper", "nodir", ".git", ".well-known"):
        (www / folder).mkdir(parents=True)
    files = {
        "index.html": b"<h1>home</h1>\n",
        "404.html": b"<h1>custom not found</h1>\n",
        "ten.bin": TEN,
        "empty.txt": b"",
        "style.css": CSS,
        "style.css.gz": gzip.compress(CSS, mtime=0),
        "style.css.br": b"BROTLI-SIDECAR-BYTES",
        "app.js": JS,
        "tiny.js": b"var x = 1;\n",
        "data.unknownext": b"\x00\x01binary",
        "archive.tar.gz": gzip.compress(b"tar bytes"),
        "image.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 2000,
        ".env": DOT_SECRET,
        ".git/config": DOT_SECRET,
        ".well-known/acme.txt": b"challenge-token",
        "sub/index.html": b"<p>sub index</p>\n",
        "sub/deeper/index.html": b"<p>deeper index</p>\n",
        "nodir/<b>x&y.txt": b"listed",
        "nodir/.hidden": b"hidden",
        "%2e%2e": b"literal percent name",
    }
    for name, data in files.items():
        (www / name).write_bytes(data)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    os.symlink(base / "outside" / "secret.txt", www / "link_out.txt")
    os.symlink(base / "outside", www / "dir_out")
    os.symlink(www / "index.html", www / "link_in.html")
    os.symlink(www / ".git", www / "nodir" / "innocent")  # a link into a dot-folder
    os.symlink(base / "outside", www / "nodir" / "away")
    return base


@pytest.fixture(scope="module")
def server(tree):
    running = Server(write_site(tree, SITE), free_port())
    yield running
    running.stop()


def get(server, path, host="plain.test", method="GET", **headers):
    return server.request(method, path, host=host, headers={k.replace("_", "-"): v for k, v in headers.items()})


def raw(server, target: bytes, host=b"plain.test") -> bytes:
    return raw_request(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# --------------------------------------------------------------------------- basics


def test_file_with_validators_and_safe_headers(server):
    status, headers, body = get(server, "/index.html")
    assert status == 200 and body == b"<h1>home</h1>\n"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', headers["ETag"])
    assert headers["Last-Modified"].endswith(" GMT")
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Length"] == str(len(body))
    assert "Cache-Control" not in headers


def test_head_is_get_without_body(server):
    _, got, _ = get(server, "/style.css")
    status, headers, body = get(server, "/style.css", method="HEAD")
    assert status == 200 and body == b""
    same = ("Content-Type", "Content-Length", "ETag", "Last-Modified", "Vary", "Accept-Ranges")
    assert {h: headers[h] for h in same} == {h: got[h] for h in same}


@pytest.mark.parametrize("path, expected", [
    ("/data.unknownext", "application/octet-stream"),
    ("/archive.tar.gz", "application/gzip"),
    ("/app.js", "text/javascript; charset=utf-8"),
    ("/image.png", "image/png"),
])
def test_content_types(server, path, expected):
    status, headers, _ = get(server, path)
    assert status == 200 and headers["Content-Type"] == expected
    assert "Content-Encoding" not in headers  # a .tar.gz is not a gzip-encoded tar


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405(server, method):
    status, headers, _ = get(server, "/index.html", method=method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_mounted_below_a_prefix(server):
    assert get(server, "/assets/ten.bin", host="mounted.test")[2] == TEN
    status, headers, _ = get(server, "/assets", host="mounted.test")
    assert status == 301 and headers["Location"] == "/assets/"
    assert get(server, "/assets/", host="mounted.test")[2] == b"<h1>home</h1>\n"


# --------------------------------------------------------------------------- conditional requests


@pytest.fixture(scope="module")
def validators(server):
    _, headers, _ = get(server, "/ten.bin")
    return headers["ETag"], headers["Last-Modified"]


OLD = "Mon, 01 Jan 2001 00:00:00 GMT"
FUTURE = "Fri, 01 Jan 2100 00:00:00 GMT"


@pytest.mark.parametrize("headers, expected", [
    ({"If-None-Match": "{etag}"}, 304),
    ({"If-None-Match": '"other"'}, 200),
    ({"If-None-Match": '"a", {etag}, "b"'}, 304),
    ({"If-None-Match": "*"}, 304),
    ({"If-None-Match": "W/{etag}"}, 304),  # weak comparison
    ({"If-Modified-Since": "{lm}"}, 304),
    ({"If-Modified-Since": FUTURE}, 304),
    ({"If-Modified-Since": OLD}, 200),
    ({"If-Modified-Since": "yesterday-ish"}, 200),
    ({"If-None-Match": '"other"', "If-Modified-Since": "{lm}"}, 200),  # INM wins over IMS
    ({"If-Match": "{etag}"}, 200),
    ({"If-Match": '"other"'}, 412),
    ({"If-Match": "*"}, 200),
    ({"If-Match": "W/{etag}"}, 412),  # strong comparison
    ({"If-Unmodified-Since": OLD}, 412),
    ({"If-Unmodified-Since": FUTURE}, 200),
    ({"If-Match": "{etag}", "If-Unmodified-Since": OLD}, 200),  # IUS ignored when If-Match given
    ({"If-Match": '"other"', "If-None-Match": "{etag}"}, 412),  # If-Match is evaluated first
    ({"If-Match": "{etag}", "If-None-Match": "{etag}"}, 304),
])
def test_conditional_matrix(server, validators, headers, expected):
    etag, lm = validators
    filled = {k: v.format(etag=etag, lm=lm) for k, v in headers.items()}
    status, got, body = server.request("GET", "/ten.bin", host="plain.test", headers=filled)
    assert status == expected
    if expected == 304:
        assert body == b"" and got["ETag"] == etag and "Content-Length" not in got
    if expected == 200:
        assert body == TEN


def test_304_head(server, validators):
    status, headers, body = get(server, "/ten.bin", method="HEAD", If_None_Match=validators[0])
    assert status == 304 and body == b""


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("range_, body, content_range", [
    ("bytes=0-3", b"0123", "bytes 0-3/10"),
    ("bytes=-3", b"789", "bytes 7-9/10"),
    ("bytes=-100", TEN, "bytes 0-9/10"),  # Twisted's File answers 500
    ("bytes=7-", b"789", "bytes 7-9/10"),
    ("bytes=5-100", b"56789", "bytes 5-9/10"),
    ("bytes=9-9", b"9", "bytes 9-9/10"),
    ("bytes = 2-3", b"23", "bytes 2-3/10"),
    ("bytes=0-1,20-30", b"01", "bytes 0-1/10"),  # the one satisfiable range
])
def test_single_ranges(server, range_, body, content_range):
    status, headers, got = get(server, "/ten.bin", Range=range_)
    assert (status, got, headers["Content-Range"]) == (206, body, content_range)
    assert headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("range_", ["bytes=10-", "bytes=-0", "bytes=20-30,40-"])
def test_unsatisfiable_ranges_are_416(server, range_):
    status, headers, _ = get(server, "/ten.bin", Range=range_)
    assert status == 416 and headers["Content-Range"] == "bytes */10"


@pytest.mark.parametrize("range_", [
    "bytes=abc", "bytes=5-3", "items=0-1", "bytes=--5", "bytes=1_0-2", "bytes=+1-2", "bytes=",
    "bytes=-", ",".join(["bytes=0-0"] + ["1-1"] * 16),
])
def test_malformed_or_abusive_ranges_get_the_whole_file(server, range_):
    status, headers, body = get(server, "/ten.bin", Range=range_)
    assert (status, body) == (200, TEN) and "Content-Range" not in headers


def test_multiple_ranges_are_multipart(server):
    status, headers, body = get(server, "/ten.bin", Range="bytes=0-1,4-5,-2")
    assert status == 206
    boundary = re.fullmatch(r'multipart/byteranges; boundary="?([^"]+)"?', headers["Content-Type"]).group(1)
    assert int(headers["Content-Length"]) == len(body)
    parts = body.split(b"--" + boundary.encode())[1:-1]
    got = [(re.search(rb"(?i)content-range: (.*)\r\n", p).group(1), p.split(b"\r\n\r\n", 1)[1][:-2]) for p in parts]
    assert got == [(b"bytes 0-1/10", b"01"), (b"bytes 4-5/10", b"45"), (b"bytes 8-9/10", b"89")]


def test_if_range(server, validators):
    etag, lm = validators
    assert get(server, "/ten.bin", Range="bytes=0-0", If_Range=etag)[0] == 206
    assert get(server, "/ten.bin", Range="bytes=0-0", If_Range=lm)[0] == 206
    assert get(server, "/ten.bin", Range="bytes=0-0", If_Range='"stale"')[:3:2] == (200, TEN)
    assert get(server, "/ten.bin", Range="bytes=0-0", If_Range=OLD)[:3:2] == (200, TEN)


def test_range_ignored_for_head_and_empty_files(server):
    status, headers, _ = get(server, "/ten.bin", method="HEAD", Range="bytes=0-1")
    assert status == 200 and headers["Content-Length"] == "10"
    assert get(server, "/empty.txt", Range="bytes=0-1")[:3:2] == (200, b"")


# --------------------------------------------------------------------------- compression


@pytest.mark.parametrize("accept, coding, body", [
    ("br", "br", b"BROTLI-SIDECAR-BYTES"),
    ("gzip, deflate, br", "br", b"BROTLI-SIDECAR-BYTES"),  # server order breaks ties
    ("gzip, br;q=0.5", "gzip", gzip.compress(CSS, mtime=0)),
    ("br;q=0, gzip", "gzip", gzip.compress(CSS, mtime=0)),
    ("x-gzip", "gzip", gzip.compress(CSS, mtime=0)),
    ("*", "br", b"BROTLI-SIDECAR-BYTES"),
    ("*;q=0", None, CSS),
    ("zstd", None, CSS),  # no .zst sidecar and gzip not accepted
    ("identity", None, CSS),
    (None, None, CSS),
])
def test_precompressed_sidecars_follow_accept_encoding(server, accept, coding, body):
    headers = {"Accept-Encoding": accept} if accept else {}
    status, got, data = server.request("GET", "/style.css", host="plain.test", headers=headers)
    assert status == 200 and data == body
    assert got.get("Content-Encoding") == coding
    assert got["Vary"] == "Accept-Encoding" and got["Content-Type"] == "text/css; charset=utf-8"


def test_sidecars_have_their_own_etag(server):
    identity = get(server, "/style.css")[1]["ETag"]
    brotli = get(server, "/style.css", Accept_Encoding="br")[1]["ETag"]
    assert identity != brotli
    assert get(server, "/style.css", Accept_Encoding="br", If_None_Match=brotli)[0] == 304
    assert get(server, "/style.css", If_None_Match=brotli)[0] == 200


def test_gzip_on_the_fly_for_text_without_sidecar(server):
    status, headers, body = get(server, "/app.js", Accept_Encoding="gzip")
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == JS and len(body) < len(JS)
    assert headers["ETag"].startswith('W/"') and "Accept-Ranges" not in headers
    assert headers["Vary"] == "Accept-Encoding"
    assert get(server, "/app.js", Accept_Encoding="gzip", If_None_Match=headers["ETag"])[0] == 304
    head = get(server, "/app.js", method="HEAD", Accept_Encoding="gzip")[1]
    assert head["Content-Length"] == str(len(body))


def test_no_gzip_for_ranges_small_files_or_binary(server):
    status, headers, body = get(server, "/app.js", Accept_Encoding="gzip", Range="bytes=0-7")
    assert (status, body, headers.get("Content-Encoding")) == (206, JS[:8], None)
    assert "Content-Encoding" not in get(server, "/tiny.js", Accept_Encoding="gzip")[1]
    png = get(server, "/image.png", Accept_Encoding="gzip")[1]
    assert "Content-Encoding" not in png and "Vary" not in png


def test_curl_compressed_end_to_end(server, tmp_path):
    for path, expected in (("/app.js", JS), ("/style.css", CSS)):
        out = tmp_path / "out"
        result = subprocess.run(  # gzip only: the .br sidecar here is not real brotli
            ["curl", "-sS", "--compressed", "-H", "Accept-Encoding: gzip", "-o", str(out),
             "-w", "%{http_code}", "-H", "Host: plain.test",
             f"http://127.0.0.1:{server.port}{path}"], capture_output=True, text=True, timeout=20)
        assert result.stdout == "200" and out.read_bytes() == expected


# --------------------------------------------------------------------------- traversal and hidden files


@pytest.mark.parametrize("target", [
    b"/../outside/secret.txt",
    b"/%2e%2e/outside/secret.txt",
    b"/%2E%2E/outside/secret.txt",
    b"/sub/%2e%2e/%2e%2e/outside/secret.txt",
    b"/..%2foutside%2fsecret.txt",
    b"/%2e%2e%2foutside%2fsecret.txt",
    b"/..\\outside\\secret.txt",
    b"/..%5coutside%5csecret.txt",
    b"/%252e%252e/outside/secret.txt",  # double encoding stays literal
    b"/%252e%252e%252foutside%252fsecret.txt",
    b"/index.html%00.png",
    b"/%00",
    b"/./index.html/../../outside/secret.txt",
    b"/link_out.txt",
    b"/dir_out/secret.txt",
    b"/.env",
    b"/.git/config",
    b"/.git/",
    b"/sub/../.env",
    b"/%2eenv",
    b"/nodir/innocent/config",  # a symlink into a dot-folder
    b"/%ff%fe",
])
@pytest.mark.parametrize("host", [b"plain.test", b"spa.test"])
def test_traversal_and_hidden_files_are_refused(server, target, host):
    response = raw(server, target, host)
    assert status_of(response) in (400, 404), response[:200]
    assert SECRET not in response and DOT_SECRET not in response
    assert b"<h1>home</h1>" not in response  # a fallback must not paper over an attack
    assert get(server, "/ten.bin")[2] == TEN  # and the server is fine


def test_double_encoded_name_is_a_literal_file_name(server):
    response = raw(server, b"/%252e%252e")
    assert status_of(response) == 200 and response.endswith(b"literal percent name")


def test_well_known_and_links_inside_root_are_served(server):
    assert get(server, "/.well-known/acme.txt")[:3:2] == (200, b"challenge-token")
    assert get(server, "/link_in.html")[:3:2] == (200, b"<h1>home</h1>\n")


def test_opt_ins_serve_dotfiles_and_outside_links(server):
    assert get(server, "/.env", host="open.test")[2] == DOT_SECRET
    assert get(server, "/link_out.txt", host="open.test")[2] == SECRET
    assert status_of(raw(server, b"/%2e%2e/outside/secret.txt", b"open.test")) == 400


# --------------------------------------------------------------------------- folders, index, fallback


def test_folder_redirect_keeps_query_and_never_goes_offsite(server):
    status, headers, _ = get(server, "/sub?x=1&y=2")
    assert status == 301 and headers["Location"] == "/sub/?x=1&y=2"
    response = raw(server, b"//sub")
    assert status_of(response) == 301 and b"\r\nLocation: /sub/\r\n" in response


def test_nested_index_files(server):
    assert get(server, "/sub/")[2] == b"<p>sub index</p>\n"
    assert get(server, "/sub/deeper/")[2] == b"<p>deeper index</p>\n"
    assert get(server, "/")[2] == b"<h1>home</h1>\n"
    assert get(server, "/ten.bin/")[0] == 404


def test_no_listing_by_default(server):
    status, _, body = get(server, "/nodir/")
    assert status == 404 and b"x&" not in body


def test_listing_opt_in_escapes_and_hides(server):
    status, headers, body = get(server, "/nodir/", host="list.test")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    assert b"&lt;b&gt;x&amp;y.txt" in body and b"<b>x" not in body
    assert b'href="%3Cb%3Ex%26y.txt"' in body
    for hidden in (b".hidden", b"innocent", b"away"):
        assert hidden not in body
    assert get(server, "/", host="list.test")[2] == b"<h1>home</h1>\n"  # index wins


def test_listing_shows_what_the_opt_ins_allow(server):
    body = get(server, "/nodir/", host="open.test")[2]
    for name in (b".hidden", b"innocent", b"away"):
        assert name in body


def test_spa_fallback_and_custom_404(server):
    status, headers, body = get(server, "/users/42/settings", host="spa.test")
    assert (status, body) == (200, b"<h1>home</h1>\n") and "ETag" in headers
    status, headers, body = get(server, "/missing.js", host="spa.test")
    assert (status, body) == (404, b"<h1>custom not found</h1>\n")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert get(server, "/ten.bin", host="spa.test")[2] == TEN


# --------------------------------------------------------------------------- cache-control, internal


@pytest.mark.parametrize("path, expected", [
    ("/style.css", "max-age=31536000, immutable"),
    ("/sub/index.html", "no-cache"),
    ("/sub/", "no-cache"),
    ("/ten.bin", "max-age=60"),
])
def test_cache_control_rules(server, path, expected):
    status, headers, _ = get(server, path, host="cache.test")
    assert status == 200 and headers["Cache-Control"] == expected


def test_cache_control_on_304(server):
    etag = get(server, "/ten.bin", host="cache.test")[1]["ETag"]
    status, headers, _ = get(server, "/ten.bin", host="cache.test", If_None_Match=etag)
    assert status == 304 and headers["Cache-Control"] == "max-age=60"


def test_internal_static_is_not_reachable(server):
    assert get(server, "/ten.bin", host="hidden.test")[0] == 404
    assert get(server, "/", host="hidden.test")[0] == 404


# --------------------------------------------------------------------------- keep-alive


def test_keep_alive_mixes_small_big_and_304(server, validators):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            for path, headers, status in (("/ten.bin", {}, 200), ("/style.css", {}, 200),
                                          ("/ten.bin", {"If-None-Match": validators[0]}, 304),
                                          ("/ten.bin", {"Range": "bytes=1-2"}, 206)):
                conn.request("GET", path, headers={"Host": "plain.test", **headers})
                response = conn.getresponse()
                response.read()
                assert response.status == status
    finally:
        conn.close()


def test_file_changes_are_seen_at_once(tree, server):
    path = tree / "www" / "changing.txt"
    path.write_bytes(b"one")
    first = get(server, "/changing.txt")
    time.sleep(0.01)
    path.write_bytes(b"two!")
    second = get(server, "/changing.txt")
    assert (first[2], second[2]) == (b"one", b"two!") and first[1]["ETag"] != second[1]["ETag"]


def test_same_size_rewrites_are_seen_fresh_and_settled(tree, server):
    """Small bodies are cached per (inode, mtime, ctime, size); none may go stale."""
    path = tree / "www" / "same-size.txt"
    path.write_bytes(b"AAAA")
    fresh = get(server, "/same-size.txt")[2]
    path.write_bytes(b"BBBB")  # likely inside the same file-time tick: must not be cached yet
    assert (fresh, get(server, "/same-size.txt")[2]) == (b"AAAA", b"BBBB")
    time.sleep(2.2)  # past staticfile.FactsCache.SETTLE: now cached
    assert [get(server, "/same-size.txt")[2] for _ in range(2)] == [b"BBBB", b"BBBB"]
    path.write_bytes(b"CCCC")
    assert get(server, "/same-size.txt")[2] == b"CCCC"
    replacement = tree / "www" / "same-size.new"
    replacement.write_bytes(b"DDDD")
    os.replace(replacement, path)
    status, headers, body = get(server, "/same-size.txt", method="HEAD")
    assert (status, headers["Content-Length"], get(server, "/same-size.txt")[2]) == (200, "4", b"DDDD")
