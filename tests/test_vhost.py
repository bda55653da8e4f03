"""Host header -> host -> longest prefix: unit tests of the tables, then over real sockets."""

import json
import subprocess

import pytest

from conftest import ROOT, raw_request
from twisthost.vhost import HostTable, RouteTable, host_from_header


@pytest.fixture
def table():
    table = HostTable(default="default")
    for name, value in [("app.example.com", "app"), ("www.example.com", "app"),
                        ("*.example.com", "wild"), ("*.deep.example.com", "deep"),
                        ("::1", "v6"), ("10.0.0.1", "v4")]:
        table.add(name, value)
    return table


@pytest.mark.parametrize("name, expected", [
    ("app.example.com", "app"),  # exact
    ("www.example.com", "app"),  # alias
    ("x.example.com", "wild"),  # wildcard, one label
    ("a.b.example.com", "wild"),  # wildcard, several labels
    ("x.deep.example.com", "deep"),  # most specific wildcard wins
    ("deep.example.com", "wild"),  # the suffix itself is not matched by its own wildcard
    ("example.com", "default"),  # "*.example.com" needs at least one label
    ("other.org", "default"),
    ("::1", "v6"),
    ("10.0.0.1", "v4"),
])
def test_lookup(table, name, expected):
    assert table.lookup(name) == expected


def test_no_default_gives_none():
    assert HostTable().lookup("a.example") is None


@pytest.mark.parametrize("header, expected", [
    (b"App.Example.COM", "app.example.com"),
    (b"app.example.com:8080", "app.example.com"),
    (b"app.example.com.", "app.example.com"),
    (b"app.example.com.:443", "app.example.com"),
    (b"[::1]:8080", "::1"),
    (b"[::1]", "::1"),
    (b"10.0.0.1:80", "10.0.0.1"),
    (b"a b", None),
    (b"a/b", None),
    (b"host:port", None),
    (b"[::1", None),
    (b"[nope]:80", None),
    (b"::1", None),
    (b"", None),
    (b"caf\xc3\xa9.example", None),
])
def test_host_from_header(header, expected):
    assert host_from_header(header) == expected


def test_route_table_longest_prefix_on_segments():
    routes = RouteTable({"/": "root", "/api": "api", "/api/v2": "v2"})
    assert routes.match_route([b""])[:2] == ("root", 0)
    assert routes.match_route([b"api"])[:2] == ("api", 1)
    assert routes.match_route([b"api", b"x"])[:2] == ("api", 1)
    assert routes.match_route([b"apix"])[:2] == ("root", 0)
    assert routes.match_route([b"api", b"v2", b"y"])[:2] == ("v2", 2)
    assert RouteTable({"/api": "api"}).match_route([b"apix"]) is None


SITE = """
    from twisthost import Site, Host, Resource, Redirect
    R = lambda name: Resource(f"pathecho:{{name}}()", pythonpath=[{resources!r}])
    site = Site(
        hosts=[
            Host("app.test", routes={{"/": R("app"), "/api": R("api"), "/api/v2": R("api_v2")}},
                 aliases=["www.app.test"]),
            Host("*.wild.test", R("wild")),
            Host("*.deep.wild.test", R("deep_wild")),
            Host("other.test", R("other")),
            Host("go.test", Redirect("https://app.test/base")),
        ],
        default=R("fallback"),
    )
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import Server, free_port, write_site
    folder = tmp_path_factory.mktemp("vhost")
    config = write_site(folder, SITE.format(resources=str(ROOT / "tests" / "resources")))
    server = Server(config, free_port())
    yield server
    assert server.stop() == 0


def get_json(server, path, host):
    status, _, body = server.request(path=path, host=host)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("host, path, service, prepath, postpath", [
    ("app.test", "/", "app", [], [""]),
    ("app.test", "/page/x", "app", [], ["page", "x"]),
    ("APP.test.:80", "/", "app", [], [""]),
    ("www.app.test", "/", "app", [], [""]),
    ("app.test", "/api", "api", ["api"], []),
    ("app.test", "/api/", "api", ["api"], [""]),
    ("app.test", "/api/users/7", "api", ["api"], ["users", "7"]),
    ("app.test", "/apix", "app", [], ["apix"]),  # prefixes match whole segments
    ("app.test", "/api/v2/x", "api_v2", ["api", "v2"], ["x"]),
    ("app.test", "/api/v2x", "api", ["api"], ["v2x"]),
    ("a.wild.test", "/", "wild", [], [""]),
    ("a.b.wild.test", "/", "wild", [], [""]),
    ("x.deep.wild.test", "/", "deep_wild", [], [""]),
    ("other.test", "/", "other", [], [""]),
    ("nobody.test", "/z", "default", [], ["z"]),
    ("127.0.0.1", "/", "default", [], [""]),
])
def test_dispatch(server, host, path, service, prepath, postpath):
    seen = get_json(server, path, host)
    assert (seen["service"], seen["prepath"], seen["postpath"]) == (service, prepath, postpath)


def test_redirect_keeps_path_and_query(server):
    status, headers, _ = server.request(path="/a/b%20c?x=1&y=2", host="go.test")
    assert status == 301
    assert headers["Location"] == "https://app.test/base/a/b%20c?x=1&y=2"


def test_curl_with_resolve(server):
    out = subprocess.run(
        ["curl", "-s", "--resolve", f"other.test:{server.port}:127.0.0.1",
         f"http://other.test:{server.port}/hello"],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    assert json.loads(out)["service"] == "other"


def test_http11_without_host_is_400(server):
    response = raw_request(server.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"Traceback" not in response


def test_two_host_headers_is_400(server):
    response = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n"
                                        b"Connection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


def test_malformed_host_is_400(server):
    response = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")


def test_http10_without_host_gets_default(server):
    response = raw_request(server.port, b"GET /q HTTP/1.0\r\n\r\n")
    assert response.startswith(b"HTTP/1.0 200 ")
    assert b'"service": "default"' in response


def test_no_default_is_small_404(tmp_path, serve):
    server = serve(f"""
        from twisthost import Site, Host, Resource
        site = Site(hosts=[Host("only.test", Resource("pathecho:app()", pythonpath=[{str(ROOT / "tests" / "resources")!r}]))])
    """)
    status, headers, body = server.request(host="else.test")
    assert status == 404
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == b"404 Not Found\nNo site is configured for this host name.\n"
    status, _, _ = server.request(host="only.test")
    assert status == 200


def test_unmatched_route_is_404(tmp_path, serve):
    server = serve(f"""
        from twisthost import Site, Host, Resource
        site = Site(default=Host(routes={{"/api": Resource("pathecho:api()", pythonpath=[{str(ROOT / "tests" / "resources")!r}])}}))
    """)
    assert server.request(path="/apix")[0] == 404
    assert server.request(path="/")[0] == 404
    assert server.request(path="/api/x")[0] == 200
