"""Requests the connection refuses are in the access log and counted by host, as nginx logs them.

A malformed or oversized request never reaches a service, but an operator
still needs to see it: the host's log when its Host header named a
configured host, the site's log otherwise, with ``-`` for what is unknown.
"""

from __future__ import annotations

import time
import urllib.request

from conftest import free_port, raw_request


def lines(path, count: int) -> list[str]:
    """The log's lines once there are ``count`` (the log is flushed about once a second)."""
    deadline = time.monotonic() + 10
    while True:
        found = path.read_text().splitlines() if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_refused_requests_are_logged_where_their_host_is(serve, tmp_path):
    admin = free_port()
    server = serve(f"""
        from twisthost import Host, Redirect, Site
        site = Site(
            hosts=[Host("a.test", Redirect("/to"), access_log="a.log")],
            access_log="site.log",
            max_request_line=256,
            admin="tcp:{admin}:interface=127.0.0.1",
        )
    """)
    assert raw_request(server.port, b"GET /x HTTP/1.1\r\nHost: a.test\r\nContent-Type: a\r\n"
                                    b"Content-Type: b\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_request(server.port, b"GET /" + b"y" * 300 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414 ")
    assert raw_request(server.port, b"GET /z HTTP/1.1\r\nHost: <script>\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    (host_line,) = lines(tmp_path / "a.log", 1)
    assert '"GET /x HTTP/1.1" 400 ' in host_line
    site_lines = lines(tmp_path / "site.log", 2)
    assert any('"-" 414 ' in line for line in site_lines), site_lines
    assert any('"GET /z HTTP/1.1" 400 ' in line for line in site_lines), site_lines
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'twisthost_requests_refused_total{status="400"} 2.0' in metrics
    assert 'twisthost_requests_refused_total{status="414"} 1.0' in metrics
    counted = [line for line in metrics.splitlines()
               if line.startswith("twisthost_requests_total{") and 'host="a.test"' in line and 'status="4xx"' in line]
    assert counted and counted[0].endswith(" 1.0"), counted
