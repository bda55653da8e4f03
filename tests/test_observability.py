"""Access logs, request ids, the admin listener, metrics and the status page."""

import http.client
import json
import os
import re
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PROMPT, config_error, free_port, raw_request, wait_for_port

# The Apache/nginx combined format as log tools parse it; the client IP is bare.
COMBINED = re.compile(
    r'^(?P<remote>[0-9a-f.:]+) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) (?P<proto>[^"]+)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>(?:[^"\\]|\\x[0-9A-F]{2})*)" '
    r'"(?P<agent>(?:[^"\\]|\\x[0-9A-F]{2})*)"$'
)


def wait_for_lines(path, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.1)
    raise AssertionError(f"{path} has fewer than {count} lines")


@pytest.fixture
def logged(tmp_path, serve):
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Host, Redirect
        site = Site(
            hosts=[
                Host("a.test", Redirect("/to")),
                Host("j.test", Redirect("/to"), access_log="json.log", log_format="json"),
                Host("quiet.test", Redirect("/to"), access_log=None),
                Host("t.test", Redirect("/to"), access_log="custom.log",
                     log_format="{{remote}} {{host}} {{status}} {{path}} {{request_id}}"),
            ],
            access_log="access.log",
            admin="tcp:{admin_port}:interface=127.0.0.1",
        )
    """)
    server.admin_port = admin_port
    return server


def admin_get(server, path, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{server.admin_port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_combined_line_parses_and_ip_is_bare(tmp_path, logged):
    logged.request(path="/p?q=1", host="a.test",
                   headers={"User-Agent": 'evil" agent', "Referer": "http://r.test/"})
    logged.request(path="/x", host="nobody.test")  # unknown host: still logged
    line, unknown = wait_for_lines(tmp_path / "access.log", 2)
    match = COMBINED.match(line)
    assert match, line
    assert match["remote"] == "127.0.0.1"
    assert (match["method"], match["target"], match["status"]) == ("GET", "/p?q=1", "301")
    assert match["agent"] == "evil\\x22 agent"
    assert match["referer"] == "http://r.test/"
    assert COMBINED.match(unknown)["status"] == "404"


def test_json_lines_are_valid_with_hostile_headers(tmp_path, logged):
    raw_request(logged.port, b'GET /a%22b?x="1" HTTP/1.1\r\nHost: j.test\r\n'
                             b'User-Agent: caf\xc3\xa9 "quoted" \\ back\r\nConnection: close\r\n\r\n')
    logged.request(path="/two", host="j.test")
    first, second = (json.loads(line) for line in wait_for_lines(tmp_path / "json.log", 2))
    assert first["user_agent"] == 'café "quoted" \\ back'
    assert first["host"] == "j.test" and first["route"] == "/"
    assert first["status"] == 301 and first["method"] == "GET"
    assert first["query"] == 'x="1"'
    assert isinstance(first["duration_ms"], float)
    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert second["path"] == "/two"


def test_custom_format_and_per_host_off(tmp_path, logged):
    logged.request(path="/c", host="t.test", headers={"X-Request-ID": "abc-123"})
    logged.request(path="/q", host="quiet.test")
    logged.request(path="/a", host="a.test")
    (line,) = wait_for_lines(tmp_path / "custom.log", 1)
    assert line == "127.0.0.1 t.test 301 /c abc-123"
    lines = wait_for_lines(tmp_path / "access.log", 1)
    assert not any("/q" in line for line in lines)  # quiet.test logs nowhere


def test_secrets_are_not_logged(tmp_path, logged):
    logged.request(path="/s", host="j.test",
                   headers={"Authorization": "Bearer SECRET-TOKEN-1", "Cookie": "session=SECRET-COOKIE-2"})
    text = "\n".join(wait_for_lines(tmp_path / "json.log", 1))
    assert "SECRET" not in text


def test_request_id_generated_kept_or_replaced(logged):
    _, headers, _ = logged.request(host="a.test")
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
    _, headers, _ = logged.request(host="a.test", headers={"X-Request-ID": "client-id.42"})
    assert headers["X-Request-ID"] == "client-id.42"
    _, headers, _ = logged.request(host="a.test", headers={"X-Request-ID": "bad id <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])


def test_usr1_reopens_access_log(tmp_path, logged):
    logged.request(path="/before", host="a.test")
    wait_for_lines(tmp_path / "access.log", 1)
    os.rename(tmp_path / "access.log", tmp_path / "access.log.1")
    logged.signal(signal.SIGUSR1)
    time.sleep(0.5)
    logged.request(path="/after", host="a.test")
    (line,) = wait_for_lines(tmp_path / "access.log", 1)
    assert "/after" in line
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def test_metrics_parse_and_count(logged):
    for _ in range(3):
        logged.request(host="a.test")
    logged.request(host="nobody.test")
    status, headers, body = admin_get(logged, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("twisthost_requests_total", (("host", "a.test"), ("route", "/"), ("status", "3xx")))] == 3
    assert samples[("twisthost_requests_total", (("host", "-"), ("route", "-"), ("status", "4xx")))] == 1
    assert samples[("twisthost_request_duration_seconds_count", (("host", "a.test"), ("route", "/")))] == 3
    assert samples[("twisthost_requests_in_flight", ())] == 0


def test_health_ready_and_status_json(logged):
    assert admin_get(logged, "/healthz")[:1] == (200,)
    status, _, body = admin_get(logged, "/readyz")
    assert (status, body) == (200, b"ready\n")
    logged.request(host="a.test")
    status, _, body = admin_get(logged, "/status.json")
    data = json.loads(body)
    (row,) = [r for r in data["routes"] if r["host"] == "a.test"]
    assert row["total"] == 1 and len(row["series"]) == 30 and row["series"][-1] == 1
    assert admin_get(logged, "/nope")[0] == 404
    assert admin_get(logged, "/healthz/x")[0] == 404 or admin_get(logged, "/healthz/x")[0] == 200


def test_status_page_renders_without_javascript(logged):
    logged.request(host="a.test")
    status, headers, body = admin_get(logged, "/status")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<table id=\"routes\">" in page and "a.test" in page and "<svg class=\"spark\"" in page
    assert "http://" not in page.replace("http://r.test", "")  # self-contained: no external assets


def test_admin_token(tmp_path, serve):
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Redirect
        site = Site(default=Redirect("/"), admin="tcp:{admin_port}:interface=127.0.0.1", admin_token="s3cret")
    """)
    server.admin_port = admin_port
    assert admin_get(server, "/healthz")[0] == 200
    status, headers, _ = admin_get(server, "/metrics")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert admin_get(server, "/metrics", {"Authorization": "Bearer wrong"})[0] == 401
    assert admin_get(server, "/metrics", {"Authorization": "Bearer s3cret"})[0] == 200
    assert admin_get(server, "/status?token=s3cret")[0] == 200


def test_reloads_are_counted(tmp_path, logged):
    logged.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = json.loads(admin_get(logged, "/status.json")[2])
        if data["reloads"]:
            break
        time.sleep(0.2)
    assert data["reloads"][-1]["ok"] is True
    (tmp_path / "site.py").write_text("site = 1\n")
    logged.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = json.loads(admin_get(logged, "/status.json")[2])
        if len(data["reloads"]) == 2:
            break
        time.sleep(0.2)
    assert data["reloads"][-1]["ok"] is False and "site.py:1" in data["reloads"][-1]["detail"]
    assert logged.request(host="a.test")[0] == 301  # old config still served


@pytest.mark.parametrize("source, message", [
    ("Site(log_format='{remote} {nope}')", "log_format fields must be among"),
    ("Site(access_log='no/such/folder/a.log')", "does not exist"),
    ("Site(admin='tcp:nope')", "invalid listen endpoint 'tcp:nope'"),
])
def test_config_errors(tmp_path, source, message):
    text = config_error(tmp_path, f"from twisthost import Site\nsite = {source}\n")
    assert "site.py:2: error:" in text and message in text


def test_status_command_prints_tables(tmp_path, logged):
    import subprocess

    from conftest import BIN
    logged.request(host="a.test")
    result = subprocess.run([str(BIN / "twisthost"), "status", str(logged.config)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "hosts and routes:" in result.stdout
    assert re.search(r"a\.test\s+/\s+\S+\s+0\.0%", result.stdout)
    down = subprocess.run([str(BIN / "twisthost"), "status", "--url", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=20)
    assert down.returncode == 1 and "cannot fetch" in down.stderr


def test_json_error_log(tmp_path, serve):
    server = serve("""
        from twisthost import Site, Redirect
        site = Site(default=Redirect("/"))
    """, "--log-format", "json")
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines()]
    assert lines and all({"time", "level", "namespace", "message"} <= set(line) for line in lines)
    assert any("starting up" in line["message"] for line in lines)


def test_workers_are_summed_by_the_master(tmp_path, serve):
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host("a.test", Redirect("/to"))], workers=2,
                    admin="tcp:{admin_port}:interface=127.0.0.1")
    """)
    server.admin_port = admin_port
    wait_for_port(admin_port, server.proc)  # the master may open it after the workers' port answers
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # both workers up and reporting
        data = json.loads(admin_get(server, "/status.json")[2])
        if len([p for p in data["sources"]["processes"] if p["role"] == "worker"]) == 2:
            break
        time.sleep(0.2)
    for _ in range(30):
        assert server.request(host="a.test")[0] == 301
    samples = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = admin_get(server, "/metrics")[2].decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples
        }
        if samples.get(("twisthost_requests_total", (("host", "a.test"), ("route", "/"), ("status", "3xx")))) == 30:
            break
        time.sleep(0.2)
    assert samples[("twisthost_requests_total", (("host", "a.test"), ("route", "/"), ("status", "3xx")))] == 30
    time.sleep(1.2)  # worker snapshots are written every second
    data = json.loads(admin_get(server, "/status.json")[2])
    (row,) = data["routes"]
    assert row["host"] == "a.test" and row["total"] == 30
    assert sum(p["requests"] for p in data["sources"]["processes"] if p["role"] == "worker") == 30
    assert admin_get(server, "/readyz")[0] == 200


def metric_samples(server) -> dict:
    body = admin_get(server, "/metrics")[2].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body) for s in family.samples
    }


def test_pool_saturation_moves_the_queue_wait_histogram(tmp_path, serve):
    import threading

    from conftest import ROOT
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Host, WSGI
        site = Site(hosts=[Host("w.test", WSGI("rawapps:sleep_app", threads=1, queue=4,
                                               pythonpath=[{str(ROOT / "tests" / "apps")!r}]))],
                    admin="tcp:{admin_port}:interface=127.0.0.1")
    """)
    server.admin_port = admin_port
    statuses = []
    clients = [threading.Thread(target=lambda: statuses.append(
        server.request(path="/?s=2", host="w.test", timeout=30)[0])) for _ in range(3)]
    for client in clients:
        client.start()
    # 1 running and 2 queued from the third one's arrival until the first one's 2 s are up.
    deadline = time.monotonic() + PROMPT
    while True:
        pools = json.loads(admin_get(server, "/status.json")[2])["sources"]["pools"]
        if (pools[0]["busy"], pools[0]["queued"]) == (1, 2) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert pools[0]["busy"] == 1 and pools[0]["queued"] == 2
    for client in clients:
        client.join()
    assert statuses == [200, 200, 200]
    labels = (("host", "w.test"), ("route", "/"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # a response can reach the client just before it is logged
        samples = metric_samples(server)
        if samples.get(("twisthost_wsgi_queue_wait_seconds_count", labels)) == 3:
            break
        time.sleep(0.1)
    assert samples[("twisthost_wsgi_queue_wait_seconds_count", labels)] == 3
    assert samples[("twisthost_wsgi_queue_wait_seconds_sum", labels)] > 0.4  # ~0.3 s + ~0.6 s of waiting
    assert samples[("twisthost_wsgi_queue_wait_seconds_bucket", (("host", "w.test"), ("le", "0.1"), ("route", "/")))] == 1
    assert samples[("twisthost_pools_completed",
                    (("host", "w.test"), ("name", "rawapps:sleep_app"), ("route", "/")))] == 3


def test_a_wsgi_request_is_logged_when_its_client_left_before_the_app_ended(tmp_path, serve):
    """The body was complete by its Content-Length, so the client closed; the app ended later."""
    from conftest import ROOT
    server = serve(f"""
        from twisthost import Site, Host, WSGI
        site = Site(hosts=[Host("w.test", WSGI("rawapps:linger_app", pythonpath=[{str(ROOT / "tests" / "apps")!r}]))],
                    access_log="access.log", log_format="{{method}} {{path}} {{status}} {{bytes}}")
    """)
    status, _, body = server.request(path="/gone-early?s=0.5", host="w.test")
    assert (status, body) == (200, b"whole")
    assert wait_for_lines(tmp_path / "access.log", 1) == ["GET /gone-early 200 5"]


def test_readyz_follows_upstream_health(tmp_path, serve):
    from proxy_upstream import Upstream
    upstream = Upstream("up")
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Host, Proxy, HealthCheck
        site = Site(hosts=[Host("p.test", Proxy({upstream.url!r},
                        health=HealthCheck("/healthz", interval=0.2, timeout=0.5, passes=1, fails=1)))],
                    admin="tcp:{admin_port}:interface=127.0.0.1")
    """)
    server.admin_port = admin_port

    def wait_ready(code):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, _, body = admin_get(server, "/readyz")
            if status == code:
                return body
            time.sleep(0.1)
        raise AssertionError(f"/readyz never answered {code}")

    wait_ready(200)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # upstreams start healthy; wait for the first check
        (row,) = json.loads(admin_get(server, "/status.json")[2])["sources"]["upstreams"]
        if row["last_check"] != "-":
            break
        time.sleep(0.1)
    assert row["healthy"] is True and "ok: HTTP 200" in row["last_check"]
    upstream.stop()
    assert b"every upstream is down" in wait_ready(503)
    (row,) = json.loads(admin_get(server, "/status.json")[2])["sources"]["upstreams"]
    assert row["healthy"] is False and "failed" in row["last_check"]
    assert metric_samples(server)[("twisthost_upstreams_healthy", (
        ("backup", "no"), ("host", "p.test"), ("route", "/"), ("url", upstream.url)))] == 0.0


def test_certificate_expiry_is_shown_and_exported(tmp_path, serve):
    from tls_support import CA
    ca = CA(tmp_path)
    cert, key = ca.issue("site", ["a.test"], days=40)
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Host, Redirect, TLS
        site = Site(listen=["tcp:0", TLS("tcp:0:interface=127.0.0.1", cert={str(cert)!r}, key={str(key)!r})],
                    hosts=[Host("a.test", Redirect("/"))],
                    admin="tcp:{admin_port}:interface=127.0.0.1")
    """)
    server.admin_port = admin_port
    (row,) = json.loads(admin_get(server, "/status.json")[2])["sources"]["certificates"]
    assert row["file"] == str(cert) and row["names"] == "a.test" and row["days_left"] in (39, 40)
    assert metric_samples(server)[("twisthost_certificates_days_left", (("file", str(cert)),))] in (39, 40)


@pytest.mark.parametrize("admin, token, warned", [
    ("tcp:9901:interface=127.0.0.1", None, False),
    ("tcp:9901", None, True),
    ("tcp:9901:interface=0.0.0.0", "t0ken", False),
    ("tcp:9901:interface=10.0.0.5", None, True),
])
def test_check_warns_about_an_exposed_admin_listener(tmp_path, admin, token, warned):
    import subprocess

    from conftest import BIN
    path = tmp_path / "site.py"
    path.write_text(f"from twisthost import Site, Redirect\n"
                    f"site = Site(default=Redirect('/'), admin={admin!r}, admin_token={token!r})\n")
    result = subprocess.run([str(BIN / "twisthost"), "check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"admin: {admin}" in result.stdout
    assert ("warning: admin listener" in result.stderr) == warned


def test_refused_requests_are_counted(logged):
    assert raw_request(logged.port, b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\nhello").startswith(
        b"HTTP/1.1 400 ")
    assert raw_request(logged.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a.test\r\n\r\n").startswith(
        b"HTTP/1.1 414 ")
    samples = metric_samples(logged)
    assert samples[("twisthost_requests_refused_total", (("status", "400"),))] == 1
    assert samples[("twisthost_requests_refused_total", (("status", "414"),))] == 1


def _exposed(metrics) -> tuple:
    from prometheus_client import generate_latest

    families = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    return tuple(sorted(
        (family.name, family.type, family.documentation,
         tuple(sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples)))
        for family in families if family.name.startswith("twisthost_")
    ))


def test_single_process_tallies_expose_what_prometheus_client_series_do(monkeypatch):
    """One process keeps per-route series as plain numbers (``RouteTally``); workers keep
    prometheus_client's (``RouteSeries``). The same requests must read the same in /metrics."""
    from prometheus_client import generate_latest

    from twisthost.metrics import Metrics, RouteSeries, RouteTally

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    tallied = Metrics()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")  # the branch only: values stay in memory
    series = Metrics()
    requests = [
        ("a.test", "/", 200, 0.0004, 14, None),
        ("a.test", "/api", 502, 0.0025, 0, {"upstream": "http://u1", "upstream_ms": 2.5}),
        ("b.test", "/", 304, 0.7, 0, {"queue_ms": 100.0}),
        ("a.test", "/", 404, 31.0, 9, {}),
        ("a.test", "/api", 200, 0.01, 5, {"upstream": "http://u2", "upstream_ms": 0.001}),
        ("-", "-", 400, 0.0, 0, None),
        ("a.test", "/", 200, 0.001, 1 << 40, None),  # on a bucket's bound: counted in it
    ]
    for request in requests:
        tallied.finished(*request)
        series.finished(*request)
    assert {type(s) for s in tallied._series.values()} == {RouteTally}
    assert {type(s) for s in series._series.values()} == {RouteSeries}
    assert _exposed(tallied) == _exposed(series)
    # The process's own facts only where they are true of the one process serving.
    names = [{f.name for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
             for m in (tallied, series)]
    assert {"process_resident_memory_bytes", "python_gc_objects_collected"} <= names[0]
    assert not any(name.startswith(("process_", "python_")) for name in names[1])


def test_served_requests_leave_no_cyclic_garbage(serve):
    """Connections, requests and proxied exchanges are freed by reference counting.

    What only the cyclic GC frees costs its collections on a busy server (a
    cycle per proxied request once took ~9 µs of ~170), so the count it
    reports (``python_gc_objects_collected_total``) stays flat while 150
    clients each open a connection for one request and 150 requests are
    proxied on one kept-alive connection.  A cycle per connection or per
    request would add over a thousand objects.
    """
    from proxy_upstream import Upstream

    upstream = Upstream("gc")
    admin_port = free_port()
    server = serve(f"""
        from twisthost import Site, Host, Proxy, Redirect
        site = Site(hosts=[Host("r.test", Redirect("/to")), Host("p.test", Proxy({upstream.url!r}))],
                    admin="tcp:{admin_port}:interface=127.0.0.1")
    """)
    server.admin_port = admin_port

    def collected() -> float:
        return sum(value for (name, _), value in metric_samples(server).items()
                   if name == "python_gc_objects_collected_total")

    try:
        server.request(host="p.test")  # the upstream pool's first connection, and lazy set-up
        before = collected()
        assert [server.request(host="r.test")[0] for _ in range(150)] == [301] * 150
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(150):
            conn.request("GET", "/x", headers={"Host": "p.test"})
            response = conn.getresponse()
            assert response.status == 200 and response.read()
        conn.close()
        assert collected() - before < 150
    finally:
        upstream.stop()
