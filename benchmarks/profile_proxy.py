#!/usr/bin/env python
"""Per-request server CPU of twisthost's proxy and request path, next to nginx.

    .venv/bin/python benchmarks/profile_proxy.py                       # all targets, 10 s each
    .venv/bin/python benchmarks/profile_proxy.py --targets proxy --profile /tmp/proxy.svg

One gunicorn gthread backend (2 workers x 4 threads, benchmarks/apps/app.py)
serves all proxies.  Targets:

- ``nginx``:    nginx, 2 workers, ``keepalive 32`` + ``proxy_http_version 1.1`` to the backend,
  sending the headers twisthost's ``Proxy`` sends (``bench.servers.NGINX_PROXY_HEADERS``);
- ``nginx-bare``: the same without those headers (the backend has less to parse);
- ``proxy``:    twisthost ``Proxy`` to the backend;
- ``proxy-bare``: the same, dropping what it adds upstream (``headers_up``), as ``nginx-bare`` sends;
- ``hello``:    twisthost ``Resource`` answering 14 bytes (the shared request path);
- ``redirect``: twisthost ``Redirect`` (the request path with no body and no upstream);
- ``hello-log``, ``hello-json``: ``hello`` with a combined / JSON access log to a file
  (what access logging costs per request);
- ``wsgi``:     twisthost ``WSGI`` of the hello-world app (benchmarks/apps/app.py, 14 bytes);
- ``static1k``, ``static64k``, ``static4m``: twisthost ``Static``, one 1 KiB / 64 KiB / 4 MiB file;
- ``twistd-wsgi``, ``twistd-static1k`` (``-static64k``, ``-static4m``): the same app / file from
  plain ``twistd web --wsgi`` /
  ``twistd web --path`` (its access log goes to stdout, as it has no switch to turn it off);
- ``direct``:   wrk straight at the backend (what the backend alone can do).

Each target runs ``wrk -t1 -cN --latency`` after a warm-up; server CPU per
request is (utime+stime of the server's process tree, from /proc, after
minus before) / requests; the backend's CPU per request is shown too, as
what a proxy sends changes what the backend spends.  On a shared 2-core box req/s and latency move
from run to run; CPU µs/req is the figure to compare changes by.
``--profile FILE`` records the twistd process of the first twisthost target
with py-spy (``pip install py-spy`` into .venv; not a dependency), samples
taken while it holds the GIL, i.e. Python CPU.  ``--baseline DIR`` also
runs every twisthost target from another copy of the package (a folder
holding ``twisthost/``, put first on ``PYTHONPATH``), as ``NAME@base``, for
before/after figures from the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import NGINX_PROXY_HEADERS, NGINX_REQUEST_ID_MAP, TWISTHOST_BARE_HEADERS_UP

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """\
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx.error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
{request_id_map}    upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{proxy_headers}        }}
    }}
}}
"""

SERVICES = {
    "proxy": "Proxy('http://127.0.0.1:{backend}')",
    # No forwarding headers or request id upstream (the braces doubled for str.format):
    "proxy-bare": "Proxy('http://127.0.0.1:{backend}', headers_up=%s)"
                  % repr(TWISTHOST_BARE_HEADERS_UP).replace("{", "{{").replace("}", "}}"),
    "hello": "Resource('hello:root')",
    "hello-log": "Resource('hello:root')",
    "hello-json": "Resource('hello:root')",
    "redirect": "Redirect('http://example.com/')",
    # queue= covers wrk's 50 connections: the default (2 x threads) would answer some 503.
    "wsgi": "WSGI('app:app', pythonpath=[{apps!r}], queue=64)",
    "static1k": "Static({www!r})",
    "static64k": "Static({www!r})",
    "static4m": "Static({www!r})",
}
#: Site options per target (default none).
SITE_OPTIONS = {
    "hello-log": "access_log={log!r}",
    "hello-json": "access_log={log!r}, log_format='json'",
}
#: Plain ``twistd web`` peers: target -> its arguments after ``web --listen ...``.
TWISTD_WEB = {
    "twistd-wsgi": ["--wsgi", "app.app"],
    "twistd-static1k": ["--path", "{www}"],
    "twistd-static64k": ["--path", "{www}"],
    "twistd-static4m": ["--path", "{www}"],
}
#: The URL path wrk asks for, per target (default ``/``).
#: The files under www/ the static targets ask for: name -> size.
FILES = {"1k": 1024, "64k": 64 * 1024, "4m": 4 * 1024 * 1024}
PATHS = {f"{prefix}static{name}": f"/{name}.bin" for name in FILES for prefix in ("", "twistd-")}

HELLO_MODULE = """\
from twisted.web.resource import Resource


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"Hello, world!\\n"


root = Hello()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def cpu_seconds(root: int) -> tuple[float, float]:
    """(user, system) seconds, reaped children's included, of ``root`` and its live descendants."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            user, system, child_user, child_system = map(int, fields[11:15])
            stats[int(entry.name)] = (int(fields[1]), user + child_user, system + child_system)
    user = system = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        _, more_user, more_system = stats.get(pid, (0, 0, 0))
        user, system = user + more_user, system + more_system
        todo.extend(child for child, (parent, _, _) in stats.items() if parent == pid)
    return user / TICK, system / TICK


def wrk(port: int, seconds: float, connections: int, path: str = "/") -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-H", "Host: localhost", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": "Socket errors" in out,
    }


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class Launched:
    def __init__(self, argv, port, work: Path, env=None):
        self.port = port
        self.log = open(work / f"{port}.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=work,
                                     env=env, start_new_session=True)
        wait_for(port, self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def launch(target: str, work: Path, backend: int, baseline: str | None = None) -> Launched:
    port = free_port()
    if target in ("nginx", "nginx-bare"):
        conf = work / "nginx.conf"
        bare = target == "nginx-bare"
        conf.write_text(NGINX_CONF.format(work=work, port=port, backend=backend,
                                          request_id_map="" if bare else NGINX_REQUEST_ID_MAP,
                                          proxy_headers="" if bare else NGINX_PROXY_HEADERS))
        return Launched([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(work), "-c", str(conf),
                         "-g", "daemon off;"], port, work)
    www = str(work / "www")
    if target in TWISTD_WEB:
        args = [arg.format(www=www) for arg in TWISTD_WEB[target]]
        return Launched([str(BIN / "twistd"), "-n", "--pidfile=", "web", "--listen",
                         f"tcp:{port}:interface=127.0.0.1", *args], port, work,
                        dict(os.environ, PYTHONPATH=str(HERE / "apps")))
    service = SERVICES[target].format(backend=backend, apps=str(HERE / "apps"), www=www)
    site = work / f"site-{target}.py"
    site.write_text(
        "from twisthost import WSGI, Host, Proxy, Redirect, Resource, Site, Static\n\n"
        f"site = Site(listen=['tcp:{port}:interface=127.0.0.1'],\n"
        f"            default=Host(routes={{'/': {service}}}),\n"
        f"            {SITE_OPTIONS.get(target, '').format(log=str(work / f'access-{target}.log'))})\n"
    )
    env = dict(os.environ, PYTHONPATH=baseline) if baseline else None
    return Launched([str(BIN / "twistd"), "-n", "--pidfile=", "twisthost", "--config", str(site)], port, work,
                    env)


def measure(server: Launched, options, profile: str | None, path: str = "/", backend: int | None = None) -> dict:
    wrk(server.port, options.warmup, options.connections, path)
    spy = None
    if profile:
        spy = subprocess.Popen([str(BIN / "py-spy"), "record", "-p", str(server.proc.pid), "-o", profile,
                                "-d", str(int(options.duration)), "-r", "1000", "--nonblocking", "--gil",
                                *(["-f", "raw"] if not profile.endswith(".svg") else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    user, system = cpu_seconds(server.proc.pid)
    backend_before = sum(cpu_seconds(backend)) if backend else 0.0
    result = wrk(server.port, options.duration, options.connections, path)
    user_after, system_after = cpu_seconds(server.proc.pid)
    backend_after = sum(cpu_seconds(backend)) if backend else 0.0
    result["backend_us"] = (backend_after - backend_before) / result["requests"] * 1e6
    result["sys_us"] = (system_after - system) / result["requests"] * 1e6
    result["cpu_us"] = (user_after - user) / result["requests"] * 1e6 + result["sys_us"]
    if spy is not None:
        spy.wait()
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="nginx,proxy,hello,redirect",
                        help="comma-separated: nginx, nginx-bare, proxy, hello, hello-log, hello-json, redirect, wsgi, "
                             "static1k, static64k, static4m, twistd-wsgi, twistd-static1k (64k, 4m), direct")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all targets; medians reported")
    parser.add_argument("--profile", help="py-spy output for the first twisthost target (.svg or raw)")
    parser.add_argument("--baseline", help="folder with another twisthost package: also run NAME@base")
    options = parser.parse_args(argv)
    targets = options.targets.split(",")
    if options.baseline:
        targets += [f"{t}@base" for t in targets if t in SERVICES]
    work = Path(tempfile.mkdtemp(prefix="profile-proxy-"))
    (work / "hello.py").write_text(HELLO_MODULE)
    (work / "www").mkdir()
    for name, size in FILES.items():
        (work / "www" / f"{name}.bin").write_bytes(bytes(range(256)) * (size // 256))
    backend_port = free_port()
    backend = Launched([str(BIN / "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "4",
                        "-b", f"127.0.0.1:{backend_port}", "--chdir", str(HERE / "apps"), "app:app"],
                       backend_port, work)
    results: dict[str, list[dict]] = {t: [] for t in targets}
    profile = options.profile
    try:
        for round_ in range(options.rounds):
            for target in targets[round_ % len(targets):] + targets[:round_ % len(targets)]:
                if target == "direct":
                    class Direct:
                        port, proc = backend_port, backend.proc
                    results[target].append(measure(Direct, options, None, backend=backend_port and backend.proc.pid))
                    continue
                name, _, base = target.partition("@")
                server = launch(name, work, backend_port, options.baseline if base else None)
                try:
                    spy = profile if not name.startswith("nginx") and name not in TWISTD_WEB else None
                    results[target].append(measure(server, options, spy, PATHS.get(name, "/"), backend.proc.pid))
                    profile = None if spy else profile
                finally:
                    server.stop()
    finally:
        backend.stop()
    print(f"wrk -t1 -c{options.connections} -d{round(options.duration)}s, {options.rounds} round(s), medians")
    print(f"{'target':16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11} {'of it sys':>10} {'backend µs':>11} {'non-2xx':>8}")
    for target, rows in results.items():
        def median(key):
            values = sorted(row[key] for row in rows)
            return values[len(values) // 2]

        print(f"{target:16} {median('rps'):8.0f} {median('p50'):8.2f} {median('p99'):8.2f} "
              f"{median('cpu_us'):11.0f} {median('sys_us'):10.0f} {median('backend_us'):11.0f} {sum(r['errors'] for r in rows):8d}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
