"""The servers under test and the exact way each is started.

Each :class:`Peer` turns a :class:`Slot` (port, folders, what the scenario
needs) into a command line.  The configurations are the ones the issue
fixes; what each does about access logging is stated in ``logging`` and
printed on the report, because logging costs differ between servers.

A peer offers some of three services: ``wsgi`` (the app in
``benchmarks/apps/app.py``), ``static`` (files under ``/static/``) and
``proxy`` (``/`` forwarded to the shared gunicorn backend).  For twisthost the
generated ``site.py`` holds only the services the scenario uses, so one
feature that is not built yet does not hide the others.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .install import find_tool, venv_bin

APPS = Path(__file__).resolve().parent.parent / "apps"
TWISTD = str(Path(sys.executable).parent / "twistd")


@dataclass
class Slot:
    """Where and what one server runs for one measurement."""

    port: int
    kinds: frozenset  # the services to configure: subset of {"wsgi", "static", "proxy"}
    work: Path  # per-run scratch folder (configs, logs)
    www: Path  # document root; the files are under www/static
    backend_port: int = 0  # the gunicorn backend of the proxy scenario

    @property
    def static(self) -> Path:
        return self.www / "static"


@dataclass(frozen=True)
class Peer:
    name: str
    offers: frozenset
    describe: str
    logging: str
    launch: Callable[[Slot], "Launch"]
    needs: tuple = ()  # tools or packages that must be installed
    attaches_backend: bool = False  # measure the proxy backend itself, start nothing

    def env(self, slot: Slot) -> dict:
        return {
            **os.environ,
            "PYTHONPATH": str(APPS),
            "BENCH_STATIC": str(slot.static),
            "BENCH_BACKEND_PORT": str(slot.backend_port),
            "PYTHONDONTWRITEBYTECODE": "1",
        }


@dataclass
class Launch:
    """A command line and the config files written for it (shown on the report)."""

    argv: list[str]
    configs: dict = field(default_factory=dict)


def _bind(slot: Slot) -> str:
    return f"127.0.0.1:{slot.port}"


def _gunicorn(*options: str) -> Callable[[Slot], Launch]:
    return lambda slot: Launch(
        [str(venv_bin("gunicorn")), *options, "-b", _bind(slot), "--chdir", str(APPS), "app:app"]
    )


def _uwsgi(slot: Slot) -> Launch:
    argv = [
        str(venv_bin("uwsgi")), "--http", _bind(slot), "--http-keepalive", "--master",
        "--processes", "2", "--disable-logging", "--die-on-term",
        "--wsgi-file", str(APPS / "app.py"), "--callable", "app",
    ]
    if "static" in slot.kinds:
        argv += ["--static-map", f"/static={slot.static}"]
    return Launch(argv)


def _twistd_web(slot: Slot) -> Launch:
    argv = [TWISTD, "-n", "--pidfile=", "web", "--listen", f"tcp:{slot.port}:interface=127.0.0.1"]
    if "proxy" in slot.kinds:
        return Launch(argv + ["--resource-script", str(APPS / "proxy.rpy")])
    if "wsgi" in slot.kinds:  # one root only: the app also serves /static/ here
        return Launch(argv + ["--wsgi", "app.app"])
    return Launch(argv + ["--path", str(slot.www)])


#: What twisthost's ``Proxy`` sends upstream by default (docs/proxy.md), so that
#: nginx does the same work and the backend parses the same request: the
#: client's Host, a request id (the client's, else a new one, also on the
#: response), and X-Forwarded-*, X-Real-IP and Forwarded for an untrusted peer
#: (replaced, not appended to).  Earlier runs (before 2026-11-22 17:30 UTC)
#: had nginx send none of these, which left the backend less to parse.
NGINX_PROXY_HEADERS = """\
            proxy_set_header Host $host;
            proxy_set_header X-Request-Id $request_id_in;
            add_header X-Request-Id $request_id_in always;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$host\\"";
            proxy_set_header X-Real-IP $remote_addr;
"""
#: ``Proxy(headers_up=...)`` for ``twisthost-bare``: what twisthost adds upstream
#: dropped, so the backend gets what ``nginx-bare`` sends it (the client's Host
#: aside).  The response still carries X-Request-Id.
TWISTHOST_BARE_HEADERS_UP = {"X-Forwarded-For": None, "X-Forwarded-Proto": None, "X-Forwarded-Host": None,
                             "Forwarded": None, "X-Real-Ip": None, "X-Request-Id": None}
#: The ``http``-level half of :data:`NGINX_PROXY_HEADERS`.
NGINX_REQUEST_ID_MAP = """\
    map $http_x_request_id $request_id_in { default $http_x_request_id; "" $request_id; }
"""

NGINX_CONF = """\
worker_processes 2;
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-{port}.error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_max_body_size 0;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    default_type application/octet-stream;
{request_id_map}    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ root {www}; }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{proxy_headers}        }}
    }}
}}
"""


def _nginx(slot: Slot, bare: bool = False) -> Launch:
    # Without a backend (static scenarios) the upstream points at the discard port, unused.
    text = NGINX_CONF.format(work=slot.work, port=slot.port, www=slot.www, backend=slot.backend_port or 9,
                            request_id_map="" if bare else NGINX_REQUEST_ID_MAP,
                            proxy_headers="" if bare else NGINX_PROXY_HEADERS)
    conf = slot.work / f"nginx-{slot.port}.conf"
    conf.write_text(text)
    argv = [find_tool("nginx") or "nginx", "-p", str(slot.work), "-c", str(conf), "-g", "daemon off;"]
    return Launch(argv, {"nginx.conf": text})


def _twisthost(site_options: str, proxy_options: str = "") -> Callable[[Slot], Launch]:
    def launch(slot: Slot) -> Launch:
        routes = {}
        if "wsgi" in slot.kinds:
            routes["/"] = f"WSGI('app:app', pythonpath=[{str(APPS)!r}])"
        if "static" in slot.kinds:
            routes["/static"] = f"Static({str(slot.static)!r})"
        if "proxy" in slot.kinds:
            routes["/"] = f"Proxy('http://127.0.0.1:{slot.backend_port}'{proxy_options})"
        lines = ",\n".join(f"        {prefix!r}: {service}" for prefix, service in routes.items())
        source = (
            "from twisthost import WSGI, Host, Proxy, Site, Static\n\n"
            "site = Site(\n"
            f"    listen=['tcp:{slot.port}:interface=127.0.0.1'],\n"
            f"    default=Host(routes={{\n{lines},\n    }}),{site_options}\n"
            ")\n"
        )
        config = slot.work / f"site-{slot.port}.py"
        config.write_text(source)
        return Launch([TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config)], {"site.py": source})

    return launch


GUNICORN_NOTE = "off (gunicorn's default: no --access-logfile)"
TWISTHOST_NOTE = "off (Site(access_log=None), the default)"
TWISTD_NOTE = "on: twistd web has no switch to turn it off; lines go to the twistd log (a file)"

PEERS = [
    Peer("gunicorn-sync", frozenset({"wsgi"}), "gunicorn sync worker ×4", GUNICORN_NOTE,
         _gunicorn("-w", "4", "-k", "sync"), needs=("gunicorn",)),
    Peer("gunicorn-gthread", frozenset({"wsgi"}), "gunicorn gthread, 2 workers × 4 threads", GUNICORN_NOTE,
         _gunicorn("-w", "2", "-k", "gthread", "--threads", "4"), needs=("gunicorn",)),
    Peer("uwsgi", frozenset({"wsgi", "static"}),
         "uWSGI --http, master + 2 processes, --http-keepalive, static via --static-map",
         "off (--disable-logging)", _uwsgi, needs=("uwsgi",)),
    Peer("waitress", frozenset({"wsgi"}), "waitress, 8 threads", "off (waitress logs no requests)",
         lambda slot: Launch([str(venv_bin("waitress-serve")), f"--listen={_bind(slot)}", "--threads=8", "app:app"]),
         needs=("waitress",)),
    Peer("cheroot", frozenset({"wsgi"}), "cheroot, 8 threads", "off (cheroot logs no requests)",
         lambda slot: Launch([str(venv_bin("cheroot")), "--bind", _bind(slot), "--threads", "8", "app:app"]),
         needs=("cheroot",)),
    Peer("twistd-web", frozenset({"wsgi", "static", "proxy"}),
         "twistd web --wsgi / --path / --resource-script with ReverseProxyResource", TWISTD_NOTE, _twistd_web),
    Peer("nginx", frozenset({"static", "proxy"}),
         "nginx, 2 workers, sendfile on, keepalive 32 to the upstream, sending the upstream the headers "
         "twisthost's Proxy sends", "off (access_log off)", _nginx, needs=("nginx",)),
    Peer("nginx-bare", frozenset({"proxy"}),
         "nginx as above, sending none of those headers (the backend has less to parse)", "off (access_log off)",
         lambda slot: _nginx(slot, bare=True), needs=("nginx",)),
    Peer("twisthost", frozenset({"wsgi", "static", "proxy"}), "twisthost, one process",
         TWISTHOST_NOTE, _twisthost("")),
    Peer("twisthost-w2", frozenset({"wsgi", "static", "proxy"}), "twisthost, workers=2",
         TWISTHOST_NOTE, _twisthost("\n    workers=2,")),
    Peer("twisthost-bare", frozenset({"proxy"}),
         "twisthost, one process, its Proxy dropping what it adds upstream (headers_up), as nginx-bare sends",
         TWISTHOST_NOTE, _twisthost("", f", headers_up={TWISTHOST_BARE_HEADERS_UP!r}")),
    Peer("direct", frozenset({"proxy"}), "no proxy: wrk straight at the gunicorn backend",
         GUNICORN_NOTE, lambda slot: Launch([]), attaches_backend=True),
]
PEERS_BY_NAME = {peer.name: peer for peer in PEERS}

# The proxy scenario's backend: the same app under gunicorn gthread 2 × 4.
BACKEND = PEERS_BY_NAME["gunicorn-gthread"]
