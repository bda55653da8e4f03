"""The /status page: one self-contained HTML file, readable without JavaScript.

The server renders the full page (so a first load, curl, or a browser with
scripts off shows everything); a small inline script then refreshes the
tables from /status.json every two seconds.  No CDN, no external assets:
the box may be offline.
"""

from __future__ import annotations

import html
import time

REFRESH_MS = 2000


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


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def table(rows: list[dict], caption: str, table_id: str) -> str:
    if not rows:
        return f'<section><h2>{html.escape(caption)}</h2><p id="{table_id}">none</p></section>'
    columns = list(rows[0])
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(
            f"<td>{sparkline(row[c]) if c == 'series' else _cell(row[c])}</td>" for c in columns
        ) + "</tr>"
        for row in rows
    )
    return (
        f'<section><h2>{html.escape(caption)}</h2><table id="{table_id}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def render(data: dict) -> str:
    """The whole page for one snapshot of /status.json."""
    routes = [
        {"host": r["host"], "route": r["route"], "req/s (1 min)": r["rate"],
         "errors": f'{r["error_rate"] * 100:.1f}%', "p50 ms": r["p50_ms"], "p99 ms": r["p99_ms"],
         "total": r["total"], "series": r["series"]}
        for r in data["routes"]
    ]
    sections = [table(routes, "Hosts and routes", "routes")]
    for name, rows in data["sources"].items():
        sections.append(table(rows, name.capitalize(), f"source-{name}"))
    reloads = [
        {"time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])),
         "result": "ok" if r["ok"] else "failed", "detail": r["detail"]}
        for r in data["reloads"]
    ]
    sections.append(table(reloads, "Recent reloads", "reloads"))
    return PAGE.format(
        pid=data["pid"],
        uptime=int(data["uptime"]),
        config=html.escape(data["config"]),
        sections="".join(sections),
        refresh=REFRESH_MS,
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>twisthost status</title>
<style>
 body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #fbfbfd; }}
 h1 {{ font-size: 1.3rem; margin: 0 0 .25rem; }} h2 {{ font-size: 1.05rem; margin: 1.5rem 0 .5rem; }}
 .meta {{ color: #555; }}
 table {{ border-collapse: collapse; min-width: 40rem; background: #fff; }}
 th, td {{ border-bottom: 1px solid #e3e5ea; padding: .3rem .7rem; text-align: left; }}
 th {{ background: #f1f3f7; font-weight: 600; }}
 td {{ font-variant-numeric: tabular-nums; }}
 .spark {{ color: #2b6cb0; vertical-align: middle; }}
</style></head>
<body>
<header><h1>twisthost status</h1>
<p class="meta">pid <span id="pid">{pid}</span> · up <span id="uptime">{uptime}</span> s ·
config <code>{config}</code> · refreshes every {refresh} ms</p></header>
<main id="main">{sections}</main>
<script>
(function () {{
  "use strict";
  function esc(v) {{ return String(v).replace(/[&<>"]/g, function (c) {{
    return {{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}}[c]; }}); }}
  function cell(v) {{ if (v === null || v === undefined) return "–";
    if (typeof v === "number" && !Number.isInteger(v)) return Math.abs(v) < 1000 ? v.toPrecision(3) : v.toFixed(0);
    return esc(v); }}
  function spark(series) {{ var w = 120, h = 24, peak = Math.max.apply(null, series) || 1,
    step = w / Math.max(1, series.length - 1);
    var pts = series.map(function (v, i) {{ return (i * step).toFixed(1) + "," + (h - 2 - v / peak * (h - 4)).toFixed(1); }}).join(" ");
    return '<svg class="spark" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + ' ' + h +
      '" role="img" aria-label="requests per 10 s, last 5 min, peak ' + Math.max.apply(null, series) +
      '"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="' + pts + '"/></svg>'; }}
  function table(rows, caption, id) {{
    if (!rows.length) return "<section><h2>" + esc(caption) + '</h2><p id="' + id + '">none</p></section>';
    var cols = Object.keys(rows[0]);
    return "<section><h2>" + esc(caption) + '</h2><table id="' + id + '"><thead><tr>' +
      cols.map(function (c) {{ return '<th scope="col">' + esc(c) + "</th>"; }}).join("") + "</tr></thead><tbody>" +
      rows.map(function (r) {{ return "<tr>" + cols.map(function (c) {{
        return "<td>" + (c === "series" ? spark(r[c]) : cell(r[c])) + "</td>"; }}).join("") + "</tr>"; }}).join("") +
      "</tbody></table></section>"; }}
  function render(d) {{
    var routes = d.routes.map(function (r) {{ return {{"host": r.host, "route": r.route,
      "req/s (1 min)": r.rate, "errors": (r.error_rate * 100).toFixed(1) + "%", "p50 ms": r.p50_ms,
      "p99 ms": r.p99_ms, "total": r.total, "series": r.series}}; }});
    var html = table(routes, "Hosts and routes", "routes");
    Object.keys(d.sources).forEach(function (name) {{
      html += table(d.sources[name], name.charAt(0).toUpperCase() + name.slice(1), "source-" + name); }});
    html += table(d.reloads.map(function (r) {{ return {{"time": new Date(r.time * 1000).toLocaleString(),
      "result": r.ok ? "ok" : "failed", "detail": r.detail}}; }}), "Recent reloads", "reloads");
    document.getElementById("main").innerHTML = html;
    document.getElementById("uptime").textContent = Math.floor(d.uptime);
    document.body.setAttribute("data-refreshed", String(Date.now()));
  }}
  function refresh() {{
    fetch("status.json" + location.search, {{credentials: "same-origin"}}).then(function (r) {{ return r.json(); }})
      .then(render).catch(function () {{}});
  }}
  setInterval(refresh, {refresh});
}})();
</script>
</body></html>
"""
