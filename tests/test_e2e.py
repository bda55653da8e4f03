"""The product as users run it: the twistd plugin, the check command, the demo."""

import shutil
import signal
import subprocess
import time
import urllib.request
import venv

import pytest

from conftest import BIN, ROOT, TWISTD, Server, free_port
from twisthost import docgen


def test_twistd_lists_the_plugin():
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, check=True).stdout
    assert "twisthost" in out


def test_plugin_options_help():
    out = subprocess.run([TWISTD, "twisthost", "--help"], capture_output=True, text=True).stdout
    assert "--config=" in out and "--listen=" in out


def test_check_prints_the_routing_table():
    result = subprocess.run([str(BIN / "twisthost"), "check", str(ROOT / "examples" / "site.py")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config {ROOT / 'examples' / 'site.py'}: OK\nlisten:\n")
    assert "app.localhost  aliases: www.localhost" in result.stdout
    assert "(default)" in result.stdout


def test_demo_serves_and_stops_cleanly_on_sigterm():
    admin = free_port()
    server = Server(ROOT / "examples" / "site.py", free_port(), ["--admin", f"tcp:{admin}:interface=127.0.0.1"])
    try:
        status, _, body = server.request(path="/", host="app.localhost")
        assert status == 200 and b"hello from a twisted.web resource" in body
        curl = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "-H", "Host: nowhere.localhost", f"http://127.0.0.1:{server.port}/x"],
            capture_output=True, text=True, timeout=10,
        )
        assert curl.stdout == "301"  # the *.localhost wildcard redirects to the app
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as response:
            assert response.read() == b"ok\n"
    finally:
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc.wait(5) == 0
        assert time.monotonic() - started < 5
        server.log_file.close()


def test_listen_option_overrides_and_repeats(tmp_path):
    ports = [free_port(), free_port()]
    server = Server(ROOT / "examples" / "site.py", ports[0],
                    extra_args=["--listen", f"tcp:{ports[1]}:interface=127.0.0.1", "--admin", "none"])
    try:
        for port in ports:
            server.port = port
            assert server.request(host="app.localhost")[0] == 200
    finally:
        assert server.stop() == 0


def test_unix_socket_listener(tmp_path):
    sock = tmp_path / "th.sock"
    config = tmp_path / "site.py"
    config.write_text(
        "from twisthost import Site, Redirect\n"
        f"site = Site(listen=['unix:{sock}'], default=Redirect('/elsewhere'))\n"
    )
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = subprocess.run(["curl", "-s", "-i", "--unix-socket", str(sock), "http://x/a"],
                             capture_output=True, text=True, timeout=10).stdout
        assert out.startswith("HTTP/1.1 301") and "Location: /elsewhere/a" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0


def test_port_in_use_fails_loudly(tmp_path):
    import socket
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(ROOT / "examples" / "site.py"),
             "--listen", f"tcp:{port}:interface=127.0.0.1", "--admin", "none"],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"error: --listen tcp:{port}:interface=127.0.0.1: cannot listen on 127.0.0.1:{port}: address already in use")
    assert "Traceback" not in result.stdout + result.stderr


def test_config_reference_is_current():
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == docgen.render(), "docs/config.md is stale: run `make docs`"


@pytest.mark.slow
def test_plain_pip_install_registers_the_plugin(tmp_path):
    """A non-editable install into a fresh venv puts the plugin where twistd finds it."""
    source = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = env_dir / "bin" / "pip"
    # flask only because the demo's WSGI app is a Flask app (make run installs it too);
    # the versions `make test` installs, so that a new release elsewhere cannot fail it.
    subprocess.run([str(pip), "install", "-q", str(source), "flask",
                    "-c", str(ROOT / "constraints" / "newest.txt")], check=True, timeout=600)
    installed = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c",
         "import twisted.plugins.twisthost_plugin as p; print(p.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout.strip()
    assert installed.startswith(str(env_dir)), installed
    out = subprocess.run([str(env_dir / "bin" / "twistd"), "--help"], capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout
    assert "twisthost" in out
    check = subprocess.run([str(env_dir / "bin" / "twisthost"), "check", str(source / "examples" / "site.py")],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
