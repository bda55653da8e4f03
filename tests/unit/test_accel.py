"""``twisthost.accel``: which response header hands an answer to an internal ``Static``,
as a WSGI head (``target_of``) and as an upstream's head (``proxy_client.Head``)."""

from __future__ import annotations

import pytest

from twisthost.accel import HEADER, SENDFILE, target_of
from twisthost.config import Proxy
from twisthost.proxy_client import Head
from twisthost.proxy_headers import ResponseRules, response_head
from twisthost.request import FastHeaders


@pytest.mark.parametrize("headers, found", [
    ([(b"Content-Type", b"text/plain")], None),
    ([(b"X-Sendfile", b"/srv/a")], (SENDFILE, b"/srv/a")),
    ([(b"x-sendFILE", b"/srv/a")], (SENDFILE, b"/srv/a")),
    ([(b"X-Accel-Redirect", b"/p/a")], (HEADER, b"/p/a")),
    ([(b"X-Sendfile", b"/srv/a"), (b"X-Accel-Redirect", b"/p/a")], (HEADER, b"/p/a")),  # accel wins
    ([(b"X-Accel-Redirect", b"/p/a"), (b"X-Sendfile", b"/srv/a")], (HEADER, b"/p/a")),
    ([(b"X-Sendfile", b"/srv/a"), (b"X-Sendfile", b"/srv/b")], (SENDFILE, b"/srv/a")),  # the first
    ([(b"X-Sendfile2", b"/srv/a"), (b"X-Sendfil", b"/srv/a")], None),  # lighttpd's X-Sendfile2 (ranges): no
])
def test_target_of(headers, found):
    assert target_of(headers) == found


def upstream_head(*lines: bytes) -> Head:
    return Head(b"\r\n".join([b"HTTP/1.1 200 OK", *lines, b"Content-Length: 4"]))


@pytest.mark.parametrize("lines, found", [
    ((b"X-Sendfile: /srv/a ",), (SENDFILE, b"/srv/a")),
    ((b"X-Sendfile: /srv/a", b"X-Accel-Redirect: /p/a"), (HEADER, b"/p/a")),
    ((b"X-Accel-Redirect: /p/a", b"X-Sendfile: /srv/a"), (HEADER, b"/p/a")),
    ((b"X-Other: 1",), None),
])
def test_an_upstream_head_names_the_same_hand_off(lines, found):
    assert upstream_head(*lines).accel == found


def test_with_accel_off_neither_header_crosses_to_the_client():
    rules = ResponseRules(Proxy("http://127.0.0.1:9", accel=False))
    head = upstream_head(b"X-Sendfile: /srv/private/secret.txt", b"X-Accel-Redirect: /p/a", b"X-Kept: 1")
    sent = response_head(b"HTTP/1.1 200 OK\r\n", FastHeaders(), head, rules, b"Content-Length: 4\r\n")
    assert b"/srv/private" not in sent and b"/p/a" not in sent and b"X-Kept: 1\r\n" in sent
