"""The /status page: one self-contained HTML file, readable without JavaScript.

The server renders the whole page (so a first load, curl, or a browser with
scripts off shows everything); a small inline script then fetches the page
again every two seconds and swaps in its tables, so the rendering lives
here only.  No CDN, no external assets: the box may be offline.

The rows come from /status.json, whose keys are also the Prometheus series
names (``uptime_s``, ``rejected_503``); this module gives them the words and
units a reader wants (:func:`title`, :func:`text`, shared with ``twisthost
status``), and colours rows that need someone: red for what fails now (an
upstream down, a pool whose queue is full, a certificate within a week of
expiry, a failed reload), amber for what will soon.
"""

from __future__ import annotations

import datetime
import html

REFRESH_MS = 2000

# Column key -> its heading; keys not listed are shown as they are.
TITLES = {
    "host": "Host", "route": "Route", "rate": "Req/s (1 min)", "client_error_rate": "4xx (1 min)",
    "server_error_rate": "5xx (1 min)", "p50_ms": "p50", "p99_ms": "p99", "total": "Requests",
    "series": "Requests per 10 s (5 min)",
    "role": "Role", "worker": "Worker", "pid": "PID", "uptime_s": "Up", "requests": "Requests",
    "rss_mib": "Memory (RSS)",
    "name": "App", "threads": "Threads", "max_threads": "Max threads", "busy": "Busy", "queued": "Queued",
    "queue_limit": "Queue limit", "completed": "Completed", "rejected_503": "Rejected (503)",
    "timeouts_504": "Timed out (504)", "queue_wait_max_ms": "Longest queue wait",
    "url": "Upstream", "healthy": "Healthy", "backup": "Backup", "weight": "Weight", "active": "In flight",
    "last_check": "Last health check",
    "file": "Certificate", "names": "Names", "expires": "Expires", "days_left": "Days left",
    "time": "Time", "result": "Result", "detail": "Detail",
}
# Free text that may wrap; every other cell stays on one line (dates, numbers, names).
WRAPPING = {"names", "last_check", "detail", "file"}
SECTIONS = {"processes": "Processes", "pools": "WSGI thread pools", "asgi": "ASGI apps (event loops)", "upstreams": "Proxy upstreams",
            "certificates": "TLS certificates"}
CERT_RED_DAYS, CERT_AMBER_DAYS = 7, 30


def title(key: str) -> str:
    return TITLES.get(key, key.replace("_", " ").capitalize())


def duration(seconds: float) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 12 min``, ``2 d 4 h``: what an uptime is read as."""
    seconds = int(seconds)
    for size, unit, smaller, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if seconds >= size:
            return f"{seconds // size} {unit} {seconds % size // smaller} {small_unit}"
    return f"{seconds} s"


def local_time(timestamp: float) -> str:
    """A wall-clock time with its zone: readers of the page may be in another one."""
    return datetime.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def text(key: str, value) -> str:
    """A cell as plain text, in the unit its column is read in."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):  # before numbers: True is an int
        return "yes" if value else "no"
    if key.endswith("_rate"):
        return f"{value * 100:.1f}%"
    if key == "uptime_s":
        return duration(value)
    if key == "rss_mib":
        return f"{value:.1f} MiB"
    if key.endswith("_ms"):
        return f"{_number(value)} ms"
    if isinstance(value, float):
        return _number(value)
    return str(value)


def health(source: str, row: dict) -> str:
    """``bad`` (red), ``warn`` (amber) or ``""`` for one row of a table."""
    if source == "upstreams":
        return "" if row["healthy"] else "bad"
    if source == "pools":
        if row["busy"] >= row["max_threads"]:
            return "bad" if row["queued"] >= row["queue_limit"] else "warn"  # full: 503 / waiting
        return ""
    if source == "certificates":
        days = row["days_left"]
        return "bad" if days <= CERT_RED_DAYS else "warn" if days <= CERT_AMBER_DAYS else ""
    if source == "reloads":
        return "" if row["ok"] else "bad"
    if source == "routes":
        rate = row["server_error_rate"]
        return "bad" if rate >= 0.05 else "warn" if rate > 0 else ""
    return ""


def sparkline(series: list[int], width: int = 120, height: int = 24) -> str:
    """An inline SVG polyline of requests per 10 s window."""
    peak = max(series) or 1
    step = width / max(1, len(series) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (value / peak) * (height - 4):.1f}" for i, value in enumerate(series)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="requests per 10 s, last 5 min, peak {max(series)}">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>'
    )


def _align(key: str, value) -> str:
    """Numbers right-aligned (headings too, so they sit over their digits); free text may wrap."""
    if key in WRAPPING:
        return ' class="wrap"'
    return ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _cell(key: str, value) -> str:
    if key == "series":
        return f"<td>{sparkline(value)}</td>"
    return f"<td{_align(key, value)}>{html.escape(text(key, value))}</td>"


def _row(state: str) -> str:
    return f'<tr class="{state}">' if state else "<tr>"


def table(source: str, rows: list[dict], caption: str, columns: list[str] | None = None) -> str:
    """One section: a heading and a table (``columns`` of each row, by default all of the first)."""
    table_id = source if source in ("routes", "reloads") else f"source-{source}"
    if not rows:
        return f'<section><h2>{html.escape(caption)}</h2><p id="{table_id}">none</p></section>'
    columns = columns or list(rows[0])
    head = "".join(f'<th scope="col"{_align(c, rows[0][c])}>{html.escape(title(c))}</th>' for c in columns)
    body = "".join(_row(health(source, row)) + "".join(_cell(c, row[c]) for c in columns) + "</tr>" for row in rows)
    return (
        f'<section><h2>{html.escape(caption)}</h2><table id="{table_id}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


ROUTE_COLUMNS = ["host", "route", "rate", "client_error_rate", "server_error_rate", "p50_ms", "p99_ms",
                 "total", "series"]


def _reload_rows(reloads: list[dict]) -> list[dict]:
    return [{"time": local_time(r["time"]), "result": "ok" if r["ok"] else "failed", "detail": r["detail"],
             "ok": r["ok"]} for r in reloads]


def _summary(data: dict) -> str:
    """One line saying how many rows are red and amber, so a glance is enough."""
    tables = {"routes": data["routes"], "reloads": data["reloads"], **data["sources"]}
    counts = {"bad": 0, "warn": 0}
    for source, rows in tables.items():
        for row in rows:
            state = health(source, row)
            if state:
                counts[state] += 1
    if not any(counts.values()):
        return '<p id="summary" class="summary ok">All healthy.</p>'
    parts = [f'<span class="badge {state}">{n} {word}</span>'
             for state, word in (("bad", "need action"), ("warn", "to watch")) for n in [counts[state]] if n]
    return f'<p id="summary" class="summary">{" ".join(parts)} (rows in red and amber below)</p>'


def render(data: dict) -> str:
    """The whole page for one snapshot of /status.json."""
    sections = [table("routes", data["routes"], "Hosts and routes", ROUTE_COLUMNS)]
    for name, rows in data["sources"].items():
        sections.append(table(name, rows, SECTIONS.get(name, name.capitalize())))
    sections.append(table("reloads", _reload_rows(data["reloads"]), "Recent reloads", ["time", "result", "detail"]))
    meta = (f'pid {data["pid"]} · up <span id="uptime">{duration(data["uptime"])}</span> · '
            f'config <code>{html.escape(data["config"])}</code> · as of {local_time(data["time"])} · '
            f"refreshes every {REFRESH_MS // 1000} s")
    return (HEAD + f'<header><h1>twisthost status</h1><p class="meta" id="meta">{meta}</p>{_summary(data)}</header>'
            f'<main id="main">{"".join(sections)}</main>' + SCRIPT + "</body></html>\n")


HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>twisthost status</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #fbfbfd; }
 h1 { font-size: 1.3rem; margin: 0 0 .25rem; } h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
 .meta { color: #555; margin: 0; }
 .summary { margin: .5rem 0 0; } .summary.ok { color: #1e6b35; }
 .badge { padding: .1rem .5rem; border-radius: .6rem; font-weight: 600; }
 .badge.bad { background: #fbe3e3; color: #9b1c1c; } .badge.warn { background: #fdf0d5; color: #8a5300; }
 table { border-collapse: collapse; min-width: 40rem; background: #fff; }
 th, td { border-bottom: 1px solid #e3e5ea; padding: .3rem .7rem; text-align: left; white-space: nowrap; }
 .wrap { white-space: normal; } .num { text-align: right; font-variant-numeric: tabular-nums; }
 th { background: #f1f3f7; font-weight: 600; }
 tr.bad td { background: #fbe3e3; } tr.bad td:first-child { box-shadow: inset 4px 0 #c53030; }
 tr.warn td { background: #fdf0d5; } tr.warn td:first-child { box-shadow: inset 4px 0 #d69e2e; }
 .spark { color: #2b6cb0; vertical-align: middle; }
</style></head>
<body>
"""

# Swaps in the freshly rendered page's header and tables; on any failure the last ones stay.
SCRIPT = """<script>
(function () {
  "use strict";
  function refresh() {
    fetch(location.pathname + location.search, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (page) {
        var fresh = new DOMParser().parseFromString(page, "text/html");
        ["meta", "summary", "main"].forEach(function (id) {
          document.getElementById(id).replaceWith(fresh.getElementById(id)); });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      }).catch(function () {});
  }
  setInterval(refresh, """ + str(REFRESH_MS) + """);
})();
</script>
"""
