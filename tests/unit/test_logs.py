"""``twisthost.logs``: the ``vhost_combined`` access-log format (Apache's)."""

from __future__ import annotations

import re

import pytest

from twisthost.logs import check_format

from .inprocess import HOST, InProcessSite, request

# Apache: %v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"
LINE = re.compile(
    rb'^(?P<vhost>\S+):(?P<port>\d+|-) (?P<remote>\S+) - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    rb'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"\n$')


def logging_site(folder, default: str) -> InProcessSite:
    (folder / "www").mkdir()
    (folder / "www" / "a.txt").write_bytes(b"hello")
    served = InProcessSite(folder, f"""
        from twisthost import Host, Site, Static
        site = Site(access_log="access.log", log_format="vhost_combined", hosts=[
            Host("files.test", Static("www"), aliases=["alias.test"]),
        ], default={default})
    """)
    served.log = folder / "access.log"
    return served


@pytest.fixture
def site(tmp_path):
    return logging_site(tmp_path, "Host(Static('www'))")


def logged(site, data: bytes) -> dict:
    """The one access-log line ``data`` left, parsed."""
    size = site.log.stat().st_size if site.log.exists() else 0
    site.exchange(data)
    with open(site.log, "rb") as file:
        file.seek(size)
        lines = file.readlines()
    assert len(lines) == 1, lines
    match = LINE.match(lines[0])
    assert match, lines[0]
    return match.groupdict()


@pytest.mark.parametrize("headers", [(), ("Range: bytes=0-1",)], ids=["lane", "usual"])
def test_the_line_starts_with_the_host_and_port_that_answered(site, headers):
    line = logged(site, request("/a.txt", "Referer: http://r/", 'User-Agent: curl "8"', *headers,
                                host="alias.test"))
    assert line["vhost"] == b"files.test"  # the Host's name, as Apache's %v is the ServerName
    assert line["port"] == b"%d" % HOST.port
    assert line["remote"] == b"127.0.0.1" and line["request"] == b"GET /a.txt HTTP/1.1"
    assert line["referer"] == b"http://r/" and line["agent"] == b"curl \\x228\\x22"
    assert line["status"] in (b"200", b"206")


def test_the_default_host(site):
    assert logged(site, request("/a.txt", host="other.test"))["vhost"] == b"(default)"


def test_no_host_matched(tmp_path):
    unmatched = logged(logging_site(tmp_path, "None"), request("/a.txt", host="other.test"))
    assert (unmatched["vhost"], unmatched["status"]) == (b"-", b"404")


def test_it_is_a_known_format():
    assert check_format("vhost_combined") is None
    assert check_format("vhost_combine") is not None
