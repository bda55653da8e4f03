"""The reverse proxy end to end: real twistd, real upstream servers, real clients.

One twistd serves many ``*.test`` hosts, each a ``Proxy`` with other options,
in front of the reporting upstreams of ``proxy_upstream.py``; the site
trusts ``127.0.0.2`` as a proxy, so tests play a trusted peer by connecting
from that address and an untrusted one from 127.0.0.1.
"""

from __future__ import annotations

import collections
import http.client
import json
import socket
import threading
import time

import pytest
from conftest import PROMPT, Server, config_error, free_port, wait_until, write_site
from proxy_upstream import Upstream, hanging_server



@pytest.fixture(scope="module")
def ups():
    servers = {name: Upstream(name) for name in ("a", "b", "c", "d")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def hang():
    sock, port = hanging_server()
    yield f"http://127.0.0.1:{port}"
    sock.close()


@pytest.fixture(scope="module")
def proxy(ups, hang, tmp_path_factory):
    a, b, c = ups["a"].url, ups["b"].url, ups["c"].url
    dead = f"http://127.0.0.1:{free_port()}"
    folder = tmp_path_factory.mktemp("proxy")
    config = write_site(folder, f"""
        from twisthost import Site, Host, Proxy
        site = Site(
            trusted_proxies=["127.0.0.2"],
            hosts=[
                Host("one.test", Proxy("{a}")),
                Host("keep.test", Proxy("{c}")),
                Host("brief.test", Proxy("{ups["d"].url}", keepalive_timeout=0.5)),
                Host("few.test", Proxy("{ups["d"].url}", keepalive=1)),
                Host("rr.test", Proxy(["{a}", "{b}"], weights={{"{a}": 3}})),
                Host("lc.test", Proxy(["{a}", "{b}"], balance="least_conn")),
                Host("r2.test", Proxy(["{a}", "{b}"], balance="random_two")),
                Host("ip.test", Proxy(["{a}", "{b}"], balance="ip_hash")),
                Host("uri.test", Proxy(["{a}", "{b}"], balance="uri_hash")),
                Host("rules.test", Proxy("{a}", host="inner.test", via=True,
                     headers_up={{"X-Api-Key": "k1", "User-Agent": None}},
                     headers_down={{"X-Kept": None, "X-Added": "yes"}})),
                Host("prefix.test", routes={{
                    "/api": Proxy("{a}/base", strip_prefix=True),
                    "/keep": Proxy("{a}"),
                }}),
                Host("hang.test", Proxy("{hang}", response_timeout=1)),
                Host("backup.test", Proxy("{dead}", backup=["{b}"])),
                Host("dead.test", Proxy("{dead}", unavailable_status=503, max_fails=1, fail_timeout=30)),
            ],
        )
    """)
    server = Server(config, free_port())
    yield server
    server.stop()


def get(server, host, path="/", method="GET", headers=None, body=None, source="127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def seen(body: bytes) -> dict:
    """The upstream's report; ``headers`` as a list of (name, value) plus a lower-case dict of lists."""
    record = json.loads(body)
    multi = collections.defaultdict(list)
    for name, value in record["headers"]:
        multi[name.lower()].append(value)
    record["h"] = multi
    return record


def test_keepalive_reuses_one_upstream_connection(proxy, ups):
    before = ups["c"].accepts
    conns = set()
    for _ in range(20):
        response, body = get(proxy, "keep.test", "/k")
        assert response.status == 200
        conns.add(seen(body)["conn"])
    assert ups["c"].accepts - before == 1
    assert len(conns) == 1


def test_idle_connection_closed_after_keepalive_timeout_is_replaced(proxy, ups):
    before = ups["d"].accepts
    assert get(proxy, "brief.test", "/")[0].status == 200
    time.sleep(1.5)  # keepalive_timeout=0.5 closed the idle connection meanwhile
    assert get(proxy, "brief.test", "/")[0].status == 200
    assert ups["d"].accepts - before == 2


def test_connections_beyond_keepalive_stay_a_moment_for_the_next_burst(proxy, ups):
    d = ups["d"]

    def burst():
        results = []
        threads = [threading.Thread(target=lambda: results.append(get(proxy, "few.test", "/slow")[0].status))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200] * 3

    before = d.accepts
    burst()
    assert d.accepts - before == 3
    burst()  # right after: the two beyond keepalive=1 are still open
    assert d.accepts - before == 3
    time.sleep(2.5)  # SURPLUS_IDLE (1 s) later only keepalive=1 is left
    burst()
    assert d.accepts - before == 5


def test_chunked_upload_reaches_upstream_as_one_request_with_content_length(proxy, ups):
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"hello " + smuggled
    raw = (
        b"POST /upload HTTP/1.1\r\nHost: one.test\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    before = len(ups["a"].requests)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    new = ups["a"].requests[before:]
    assert [r["target"] for r in new] == ["/upload"]
    h = {k.lower(): v for k, v in new[0]["headers"]}
    assert "transfer-encoding" not in h
    assert h["content-length"] == str(len(body))
    assert new[0]["body"] == body.decode()


def test_multi_valued_headers_survive_both_ways(proxy):
    response, body = get(proxy, "one.test", "/cookies", headers={"Cookie": "x=1"})
    assert response.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert response.headers.get_all("Vary") == ["Accept", "Cookie"]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.putrequest("GET", "/c", skip_host=True)
    for header, value in [("Host", "one.test"), ("Cookie", "x=1"), ("Cookie", "y=2"), ("Accept", "a"), ("Accept", "b")]:
        conn.putheader(header, value)
    conn.endheaders()
    record = seen(conn.getresponse().read())
    conn.close()
    assert record["h"]["cookie"] == ["x=1", "y=2"]
    assert record["h"]["accept"] == ["a", "b"]


def test_hop_by_hop_headers_are_dropped_both_ways(proxy):
    response, body = get(proxy, "one.test", "/hop", headers={
        "Connection": "X-Private, keep-alive", "X-Private": "secret", "Keep-Alive": "timeout=9",
        "TE": "trailers", "Proxy-Authorization": "Basic eA==", "X-Public": "ok",
    })
    h = seen(body)["h"]
    for name in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert name not in h, name
    assert h["x-public"] == ["ok"]
    assert h["connection"] != ["X-Private, keep-alive"]
    for name in ("X-Secret-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert response.headers.get(name) is None, name
    assert response.headers["X-Kept"] == "yes"


def test_host_preserved_and_forwarded_headers_replaced_for_untrusted_peer(proxy):
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
             "X-Forwarded-Host": "evil.test", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6"}
    response, body = get(proxy, "one.test", "/who", headers=spoof)
    h = seen(body)["h"]
    assert h["host"] == ["one.test"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["one.test"]
    assert h["forwarded"] == ['for=127.0.0.1;proto=http;host="one.test"']
    assert h["x-real-ip"] == ["127.0.0.1"]


def test_forwarded_headers_extended_for_trusted_peer(proxy):
    response, body = get(proxy, "one.test", "/who", source="127.0.0.2", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.test",
    })
    h = seen(body)["h"]
    assert h["x-forwarded-for"] == ["6.6.6.6, 127.0.0.2"]
    assert h["x-forwarded-proto"] == ["https"]
    assert h["x-forwarded-host"] == ["public.test"]
    assert h["x-real-ip"] == ["6.6.6.6"]
    assert h["forwarded"] == ['for=127.0.0.2;proto=http;host="one.test"']


def test_host_override_header_rules_and_via(proxy):
    response, body = get(proxy, "rules.test", "/r", headers={"User-Agent": "ua", "X-Api-Key": "client"})
    h = seen(body)["h"]
    assert h["host"] == ["inner.test"]
    assert h["x-api-key"] == ["k1"]
    assert "user-agent" not in h
    assert h["via"] == ["1.1 twisthost"]
    assert response.headers["X-Added"] == "yes"
    assert response.headers.get("X-Kept") is None
    assert response.headers["Via"] == "1.1 twisthost"


def test_strip_prefix_and_base_path(proxy):
    _, body = get(proxy, "prefix.test", "/api/users/7?q=1%202")
    assert seen(body)["target"] == "/base/users/7?q=1%202"
    _, body = get(proxy, "prefix.test", "/keep/x%2Fy")
    assert seen(body)["target"] == "/keep/x%2Fy"


def test_head_and_no_body_statuses(proxy):
    response, body = get(proxy, "one.test", "/h", method="HEAD")
    assert response.status == 200 and body == b""
    assert int(response.headers["Content-Length"]) > 0
    response, body = get(proxy, "one.test", "/status/204")
    assert response.status == 204 and body == b""
    response, body = get(proxy, "one.test", "/status/404")
    assert response.status == 404 and seen(body)["target"] == "/status/404"


def _upstreams_of(proxy, host, n, **kwargs):
    return collections.Counter(seen(get(proxy, host, f"/n{i}", **kwargs)[1])["upstream"] for i in range(n))


def test_weighted_round_robin(proxy):
    assert _upstreams_of(proxy, "rr.test", 40) == {"a": 30, "b": 10}


def test_least_conn_and_random_two_use_both_fairly(proxy):
    # Sequential requests: nothing is in flight, so least_conn rotates evenly
    # and random_two is a fair coin (200 tries: 100 +- 5 sigma).
    assert _upstreams_of(proxy, "lc.test", 20) == {"a": 10, "b": 10}
    counts = _upstreams_of(proxy, "r2.test", 200)
    assert 65 <= counts["a"] <= 135 and counts["a"] + counts["b"] == 200


def test_least_conn_avoids_the_busy_upstream(proxy, ups):
    # A long response held open on one upstream: the next requests go to the other.
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/stream?size=200000000", headers={"Host": "lc.test"})
    slow = conn.getresponse()
    busy = None
    for name in ("a", "b"):
        if any(r["target"].startswith("/stream") for r in ups[name].requests[-3:]):
            busy = name
    assert busy is not None
    counts = _upstreams_of(proxy, "lc.test", 6)
    conn.close()
    slow.close()
    assert counts == {({"a", "b"} - {busy}).pop(): 6}


def test_ip_hash_is_sticky_per_client(proxy):
    choices = {}
    for i in range(12):
        client = f"10.0.0.{i}"
        got = _upstreams_of(proxy, "ip.test", 3, source="127.0.0.2", headers={"X-Forwarded-For": client})
        assert len(got) == 1, got  # sticky
        choices[client] = next(iter(got))
    assert set(choices.values()) == {"a", "b"}


def test_uri_hash_is_sticky_per_uri(proxy):
    # The upstreams' URLs carry random ports, so the hash spreads URIs differently on each
    # run: with 12 URIs, all landing on one upstream happens in 1 run of ~2,000; with 40, never.
    by_uri = {}
    for i in range(40):
        got = {seen(get(proxy, "uri.test", f"/u{i}")[1])["upstream"] for _ in range(3)}
        assert len(got) == 1
        by_uri[i] = got.pop()
    assert set(by_uri.values()) == {"a", "b"}


def test_dead_primary_falls_back_to_backup_even_for_post(proxy):
    response, body = get(proxy, "backup.test", "/p", method="POST", body=b"data")
    assert response.status == 200
    record = seen(body)
    assert record["upstream"] == "b" and record["body"] == "data"


def test_nothing_available_gives_small_page(proxy):
    statuses = [get(proxy, "dead.test", "/")[0].status for _ in range(2)]
    # first try: connection refused -> 502; then marked down -> the configured 503
    assert statuses == [502, 503]
    response, body = get(proxy, "dead.test", "/")
    assert body.startswith(b"503 Service Unavailable") and b"Traceback" not in body
    assert len(body) < 200


def test_hanging_upstream_gives_504_in_time(proxy):
    import time

    start = time.monotonic()
    response, body = get(proxy, "hang.test", "/")
    elapsed = time.monotonic() - start
    assert response.status == 504
    assert 0.5 <= elapsed < PROMPT  # at response_timeout=1, not the 60 s default (the upstream never answers)


def test_many_concurrent_clients_are_all_answered(proxy):
    results = []

    def worker():
        for i in range(10):
            response, body = get(proxy, "rr.test", f"/c{i}")
            results.append(response.status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 80


@pytest.mark.parametrize(
    "source, message",
    [
        ('Proxy("ftp://x")', "is not a URL"),
        ('Proxy([])', "needs at least one upstream"),
        ('Proxy("http://a:1", balance="round-robin")', "did you mean 'round_robin'"),
        ('Proxy("http://a:1", weights={"http://b:1": 2})', "which is not an upstream"),
        ('Proxy("http://a:1", weights={"http://a:1": 0})', "integer 1..1000"),
        ('Proxy(["http://a:1", "http://a:1"])', "listed twice"),
        ('Proxy("http://a:1", headers_up={"Bad Name": "x"})', "is not a header name"),
        ('Proxy("http://a:1", headers_down={"X": "a\\r\\nb"})', "one-line string"),
        ('Proxy("http://a:1", health="/healthz")', "expects HealthCheck"),
        ('Proxy("http://a:1", unavailable_status=500)', "502 or 503"),
        ('Proxy("http://a:1", response_timeout=0)', "response_timeout"),
        ('Proxy("http://a:1", ca="missing.pem")', "does not exist"),
        ('Proxy("http://a:1", health=HealthCheck("healthz"))', "must start with '/'"),
        ('Proxy("http://a:1", health=HealthCheck(passes=0))', "passes"),
        ('Proxy("http://a:1", retry=2)', "did you mean retries=?"),
        ('Proxy("http://a:1", accel="off")', "Proxy(accel=...) expects True or False"),
    ],
)
def test_config_mistakes_point_at_the_line(tmp_path, source, message):
    text = config_error(tmp_path, f"""
        from twisthost import Site, Host, Proxy, HealthCheck

        site = Site(hosts=[
            Host("a.test",
                 {source}),
        ])
    """)
    assert "site.py:5" in text
    assert message in text


def test_health_checks_ask_the_proxys_host_and_leave_no_log_lines(tmp_path):
    """As the demo does: a Proxy to this same server, host= naming one of its sites. The checks
    must reach that site (not the default host, whose numbers they used to inflate) and not log
    Twisted's "Starting factory"/"Stopping factory" for each check's connection."""
    from prometheus_client.parser import text_string_to_metric_families

    port, admin = free_port(), free_port()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "healthz").write_text("ok\n")
    config = write_site(tmp_path, f"""
        from twisthost import Site, Host, Proxy, HealthCheck, Static
        site = Site(hosts=[
            Host("app.test", Static("www")),
            Host("proxy.test", Proxy("http://127.0.0.1:{port}", host="app.test",
                                     health=HealthCheck("/healthz", interval=0.1))),
        ], default=Host(Static("www")), admin="tcp:{admin}:interface=127.0.0.1")
    """)
    server = Server(config, port)
    try:
        def requests_by_host() -> dict:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
            conn.close()
            found = collections.Counter()
            for family in text_string_to_metric_families(body):
                for sample in family.samples:
                    if sample.name == "twisthost_requests_total":
                        found[sample.labels["host"]] += sample.value
            return found

        wait_until(lambda: requests_by_host()["app.test"] >= 10, what="10 health checks of app.test")
        assert requests_by_host()["(default)"] == 0
        checks = [line for line in server.log().splitlines() if "_HTTP11ClientFactory" in line]
        assert checks == []  # was "Starting factory" and "Stopping factory" per check
    finally:
        server.stop()
