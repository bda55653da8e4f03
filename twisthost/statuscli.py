"""``twisthost status site.py``: the /status tables, in the terminal.

Reads the admin endpoint from the config (or ``--url``), fetches
/status.json and prints the same tables as the HTML page.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

from .admin import tcp_address
from .errors import ConfigError
from .loader import load
from .statuspage import ROUTE_COLUMNS, duration, local_time, text, title


def admin_url(config_path: str) -> str:
    """``http://host:port`` of the admin listener a config declares (TCP only)."""
    site = load(config_path)
    if not site.admin:
        raise ConfigError(f"{config_path} has no admin listener", hint="set Site(admin='tcp:9901:interface=127.0.0.1')")
    address = tcp_address(site.admin)
    if address is None:
        raise ConfigError(f"cannot reach admin endpoint {site.admin!r} from here", hint="pass --url http://host:port")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
    return f"http://{'[' + host + ']' if ':' in host else host}:{address[1]}"


def format_table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    """Aligned plain-text columns, headed and formatted as on the HTML page."""
    if not rows:
        return ["  none"]
    columns = [c for c in columns or rows[0] if c != "series"]
    cells = [[text(c, row[c]) for c in columns] for row in rows]
    widths = [max(len(title(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  " + "  ".join(v.ljust(w) for v, w in zip(values, widths))  # noqa: E731
    return [line([title(c) for c in columns])] + [line(r) for r in cells]


def render(data: dict) -> str:
    out = [f"pid {data['pid']}  up {duration(data['uptime'])}  config {data['config']}  as of {local_time(data['time'])}",
           "", "hosts and routes:"]
    out += format_table(data["routes"], ROUTE_COLUMNS)
    for name, rows in data["sources"].items():
        out += ["", f"{name}:"] + format_table(rows)
    return "\n".join(out)


def status(args) -> int:
    try:
        url = args.url or admin_url(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    request = urllib.request.Request(url.rstrip("/") + "/status.json")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError) as error:
        print(f"cannot fetch {request.full_url}: {error}", file=sys.stderr)
        return 1
    print(render(data))
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("status", help="print the live status tables from the admin listener")
    parser.add_argument("config", nargs="?", default="site.py", help="path of site.py (to find Site(admin=...))")
    parser.add_argument("--url", help="admin base URL, e.g. http://127.0.0.1:9901")
    parser.add_argument("--token", help="admin token, if Site(admin_token=...) is set")
    parser.set_defaults(run=status)
