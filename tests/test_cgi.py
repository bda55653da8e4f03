"""``CGI(folder)``: real Python, Perl and shell scripts run by a real twistd.

The scripts live in ``tests/cgi-bin``; one server (module scope) serves them
for most tests, started with a secret in its own environment that no script
may see.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import time

import pytest

from conftest import ROOT, Server, config_error, free_port, raw_request, write_site

CGI_BIN = ROOT / "tests" / "cgi-bin"
SECRET = "s3cret-do-not-leak"
PERL = shutil.which("perl")
# Without perl only its test skips (with the reason); the server still starts without '.pl'.
INTERPRETERS = {".py": sys.executable, **({".pl": "perl"} if PERL else {})}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cgi")
    config = write_site(folder, f"""
        from twisthost import Site, Host, CGI, Scripts
        scripts = CGI({str(CGI_BIN)!r}, interpreters={INTERPRETERS!r},
                      env={{"GREETING": "hello"}}, pass_env=["TWISTHOST_SHARED"], timeout=1.5)
        site = Site(hosts=[
            Host("localhost", routes={{"/cgi-bin": scripts, "/": Scripts({str(ROOT / "rpy")!r})}}),
            Host("small.localhost", routes={{"/cgi-bin": CGI({str(CGI_BIN)!r}, interpreters={{".py": {sys.executable!r}}}, max_output=5000)}}),
            Host("auth.localhost", routes={{"/cgi-bin": CGI({str(CGI_BIN)!r}, interpreters={{".py": {sys.executable!r}}}, pass_authorization=True)}}),
        ])
    """)
    env = {**os.environ, "TWISTHOST_SECRET": SECRET, "TWISTHOST_SHARED": "shared-value"}
    running = Server(config, free_port(), env=env)
    yield running
    running.stop()


def environ(body: bytes) -> dict:
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


def test_python_script_gets_a_clean_cgi_environment(server):
    status, _, body = server.request(path="/cgi-bin/env.py/extra/path?foo+bar", headers={"X-Custom": "1", "Proxy": "http://evil:1"})
    assert status == 200
    assert SECRET.encode() not in body
    env = environ(body)
    assert env["ARGV"] == "[]"  # a query without '=' is not argv
    assert env["QUERY_STRING"] == "foo+bar"
    assert env["SCRIPT_NAME"] == "/cgi-bin/env.py"
    assert env["PATH_INFO"] == "/extra/path"
    assert env["REQUEST_METHOD"] == "GET" and env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PORT"] == str(server.port) and env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_CUSTOM"] == "1" and "HTTP_PROXY" not in env
    assert env["GREETING"] == "hello" and env["TWISTHOST_SHARED"] == "shared-value"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert "HOME" not in env and "CONTENT_LENGTH" not in env


@pytest.mark.parametrize("host, passed", [("localhost", False), ("auth.localhost", True)])
def test_authorization_reaches_scripts_only_with_pass_authorization(server, host, passed):
    credentials = "Basic dXNlcjpwYXNzd29yZA=="
    status, _, body = server.request(path="/cgi-bin/env.py", host=host,
                                     headers={"Authorization": credentials, "X-Custom": "1"})
    env = environ(body)
    assert status == 200 and env["HTTP_X_CUSTOM"] == "1"
    assert env.get("HTTP_AUTHORIZATION") == (credentials if passed else None)
    assert (credentials.encode() in body) is passed


def test_post_body_reaches_stdin(server):
    payload = os.urandom(300_000)
    status, _, body = server.request(
        "POST", "/cgi-bin/env.py", body=payload, headers={"Content-Type": "application/octet-stream"},
    )
    env = environ(body)
    assert status == 200
    assert env["BODY_LENGTH"] == str(len(payload)) == env["CONTENT_LENGTH"]
    assert env["BODY_SHA256"] == hashlib.sha256(payload).hexdigest()
    assert env["CONTENT_TYPE"] == "application/octet-stream"


@pytest.mark.skipif(PERL is None, reason="perl is not installed (make test installs it as root: .ci/system-deps)")
def test_perl_script_with_status_header(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/cgi-bin/hello.pl?lang=perl", headers={"Host": "localhost"})
    response = conn.getresponse()
    assert (response.status, response.reason) == (201, "Created By Perl")
    assert response.headers["x-script"] == "perl"
    assert response.read() == b"perl says hi, query=lang=perl\n"
    conn.close()


def test_status_header_sets_the_code(server):
    for code in (404, 503, 204):
        status, _, body = server.request(path=f"/cgi-bin/status.py?{code}")
        assert status == code
        assert body == (b"" if code == 204 else b"status page\n")


def test_executable_without_interpreter_runs_directly(server):
    status, _, body = server.request(path="/cgi-bin/sub/shell.cgi/x")
    assert (status, body) == (200, b"shell PATH_INFO=/x\n")


def test_local_redirect_is_served_inside_and_absolute_one_goes_to_the_client(server):
    status, _, body = server.request(path="/cgi-bin/redirect.py")
    assert (status, body) == (200, b"Hello, cgi!\n")
    status, headers, _ = server.request(path="/cgi-bin/redirect.py?away")
    assert status == 302 and headers["location"] == "http://example.com/elsewhere"


def test_only_scripts_inside_the_folder_run(server):
    for path in ("/cgi-bin/notes.txt", "/cgi-bin/.env", "/cgi-bin/", "/cgi-bin/sub",
                 "/cgi-bin/missing.py", "/cgi-bin/%2e%2e/conftest.py", "/cgi-bin/sub/..%2fenv.py"):
        response = raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        assert response.startswith(b"HTTP/1.1 404 "), (path, response[:100])


def test_misbehaving_scripts_get_502(server):
    for mode in ("bad-header", "no-headers", "bad-status"):
        status, _, body = server.request(path=f"/cgi-bin/broken.py?{mode}")
        assert status == 502, mode
        assert b"not a header" not in body
    assert "script ended before a complete header block (exit 3)" in server.log()


def test_timeout_kills_the_script_and_answers_504(server, tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    status, _, body = server.request(path=f"/cgi-bin/slow.py?{pid_file}")
    assert status == 504 and body.startswith(b"504 Gateway Timeout")
    assert time.monotonic() - started < 10
    _assert_gone(int(pid_file.read_text()))
    # headers already sent: the response is cut instead
    with pytest.raises(http.client.IncompleteRead):
        server.request(path=f"/cgi-bin/slow.py/after-headers?{pid_file}")
    _assert_gone(int(pid_file.read_text()))
    assert server.request(path="/cgi-bin/status.py?200")[0] == 200


def test_timeout_kills_what_the_script_started(server, tmp_path):
    """The script runs as the leader of its own session (setsid), so a timeout kills
    its whole process group, not only the script: a CGI's children do not outlive it."""
    pid_file = tmp_path / "pid"
    assert server.request(path=f"/cgi-bin/slow.py/spawns?{pid_file}")[0] == 504
    _assert_gone(int(pid_file.read_text()))


def _assert_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"CGI child {pid} still running")


def test_max_output_cuts_the_response(server):
    with pytest.raises(http.client.IncompleteRead) as cut:
        server.request(path="/cgi-bin/broken.py?big", host="small.localhost")
    assert len(cut.value.partial) <= 5000
    status, _, body = server.request(path="/cgi-bin/broken.py?big")
    assert status == 200 and len(body) == 1_000_000


def test_client_disconnect_kills_the_script(server, tmp_path):
    pid_file = tmp_path / "pid"
    raw_request(server.port, f"GET /cgi-bin/slow.py?{pid_file} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), timeout=0.5)
    _assert_gone(int(pid_file.read_text()))


@pytest.mark.parametrize(
    "options, message",
    [
        ('"missing"', "does not exist"),
        ('"cgi", interpreters={".php": "php-cgi-not-installed"}', "interpreter 'php-cgi-not-installed' for '.php' not found"),
        ('"cgi", interpreters={"pl": "perl"}', "'pl' is not a file extension"),
        ('"cgi", env={"BAD-NAME": "x"}', "'BAD-NAME' is not a valid variable name"),
        ('"cgi", env={"N": 1}', "value of N must be a string"),
        ('"cgi", pass_env="HOME"', "write pass_env=['HOME']"),
        ('"cgi", timeout=0', "must be in"),
        ('"cgi", max_output=-5', "must be in"),
        ('"cgi", pass_authorization="yes"', "True or False"),
    ],
)
def test_config_mistakes_point_at_the_line(tmp_path, options, message):
    (tmp_path / "cgi").mkdir()
    text = config_error(tmp_path, f"""
        from twisthost import Site, Host, CGI

        site = Site(hosts=[
            Host("localhost", CGI({options})),
        ])
    """)
    assert "site.py:4" in text and message in text
