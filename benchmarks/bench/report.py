"""Turn measured rows into the raw TSV and the markdown page.

Each metric is the median over the rounds in which the server ran; ratios
are against the reference server (``--ref``): the first of the named servers
that has a result in that scenario.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

COLUMNS = {  # (header, metric, format, show a ratio against the reference)
    "throughput": [
        ("req/s", "rps", "{:,.0f}", True), ("p50 ms", "p50_ms", "{:.2f}", False),
        ("p99 ms", "p99_ms", "{:.2f}", False), ("status ≥400", "status_errors", "{:.0f}", False),
        ("socket errors", "socket_errors", "{:.0f}", False), ("RSS MiB", "rss_mib", "{:.1f}", False),
        ("PSS MiB", "pss_mib", "{:.1f}", False), ("CPU µs/req", "cpu_us", "{:.0f}", True),
    ],
    "isolation": [
        ("sleep req/s", "rps", "{:,.0f}", True), ("sleep p99 ms", "p99_ms", "{:.0f}", False),
        ("sleep errors", "socket_errors", "{:.0f}", False),
        ("static req/s", "side_rps", "{:,.0f}", True), ("static p50 ms", "side_p50_ms", "{:.1f}", False),
        ("static p99 ms", "side_p99_ms", "{:.1f}", False), ("static errors", "side_socket_errors", "{:.0f}", False),
        ("PSS MiB", "pss_mib", "{:.1f}", False), ("CPU µs/req", "cpu_us", "{:.0f}", True),
    ],
    "upload": [
        ("seconds", "seconds", "{:.2f}", False), ("MiB/s", "mib_s", "{:,.0f}", True),
        ("peak RSS growth MiB", "rss_growth_mib", "{:.1f}", True),
        ("peak PSS growth MiB", "pss_growth_mib", "{:.1f}", False), ("peak RSS MiB", "rss_mib", "{:.1f}", False),
        ("server CPU s", "cpu_s", "{:.2f}", False), ("failed", "status_errors", "{:.0f}", False),
    ],
    "idle": [
        ("answered", "answered", "{:.0f}", False), ("still open", "open", "{:.0f}", False),
        ("RSS MiB", "rss_mib", "{:.1f}", False), ("PSS MiB", "pss_mib", "{:.1f}", True),
        ("RSS growth MiB", "rss_growth_mib", "{:.1f}", False), ("PSS growth MiB", "pss_growth_mib", "{:.1f}", True),
    ],
}


@dataclass
class Row:
    scenario: str
    server: str
    round: int
    status: str  # ok | not available | failed | skipped
    metrics: dict = field(default_factory=dict)
    note: str = ""


def tsv(rows: list[Row]) -> str:
    keys = sorted({key for row in rows for key in row.metrics})
    lines = ["\t".join(["scenario", "server", "round", "status", *keys, "note"])]
    for row in rows:
        values = [_raw(row.metrics.get(key)) for key in keys]
        lines.append("\t".join([row.scenario, row.server, str(row.round), row.status, *values, _clean(row.note)]))
    return "\n".join(lines) + "\n"


def _raw(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _clean(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Summary:
    """One server in one scenario: medians over its rounds, and what went wrong."""

    server: str
    status: str
    rounds: int
    medians: dict
    notes: list


def summarise(rows: list[Row], scenario: str, servers: list[str]) -> list[Summary]:
    summaries = []
    for server in servers:
        mine = [row for row in rows if row.scenario == scenario and row.server == server]
        if not mine:
            continue
        ok = [row for row in mine if row.status == "ok"]
        keys = {key for row in ok for key in row.metrics}
        medians = {key: value for key in keys if (value := _median(ok, key)) is not None}
        notes = list(dict.fromkeys(row.note for row in mine if row.note))
        status = "ok" if ok else mine[0].status
        summaries.append(Summary(server, status, len(ok), medians, notes))
    return summaries


def _median(rows: list[Row], key: str) -> float | None:
    values = [row.metrics[key] for row in rows if not _nan(row.metrics.get(key))]
    return statistics.median(values) if values else None


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def reference(summaries: list[Summary], refs: list[str]) -> Summary | None:
    by_name = {s.server: s for s in summaries if s.status == "ok"}
    return next((by_name[name] for name in refs if name in by_name), None)


def table(kind: str, summaries: list[Summary], refs: list[str]) -> str:
    columns = COLUMNS[kind]
    ref = reference(summaries, refs)
    headers = ["server"]
    for header, _, _, ratio in columns:
        headers.append(header)
        if ratio and ref:
            headers.append(f"× {ref.server}")
    headers.append("notes")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["--:"] * (len(headers) - 2) + ["---"]) + "|"]
    for summary in summaries:
        cells = [f"**{summary.server}**" if summary.server.startswith("twisthost") else summary.server]
        for _, key, fmt, ratio in columns:
            value = summary.medians.get(key)
            cells.append(fmt.format(value) if value is not None else "–")
            if ratio and ref:
                base = ref.medians.get(key)
                cells.append(f"{value / base:.2f}" if value is not None and base else "–")
        notes = ([] if summary.status == "ok" else [summary.status]) + summary.notes
        cells.append(_clean("; ".join(notes)).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def page(rows, chosen_scenarios, peers, options, *, started, minutes, machine, versions, generator,
         commands, configs, missing, argv, tsv) -> str:
    """The whole markdown page: context first, then one table per scenario, then how it was run."""
    refs = [name.strip() for name in options.ref.split(",")]
    out = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py` (`make bench`); do not edit by hand. "
        f"This run: `benchmarks/run.py {' '.join(argv)}`".rstrip() + ".",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.0f} minutes",
        f"- machine: {machine['cpus']} CPUs ({machine['cpu']}), {machine['memory']} RAM, Linux {machine['kernel']}; "
        "shared with other work while it ran",
        f"- load: {generator.name}, {options.rounds} round(s) of {options.duration:g} s per server and scenario "
        f"after {options.warmup:g} s of warm-up; {options.connections} connections unless a scenario says otherwise",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"- raw rows: `{tsv.name}` under `benchmarks/results/{tsv.parent.name}/` (not committed)",
        "",
        "## How to read it",
        "",
        "- Every server listens on 127.0.0.1, is started fresh for each measurement, waited for until it "
        "answers, warmed up, measured, then stopped with SIGTERM (SIGKILL after "
        f"{options.stop_timeout:g} s, reported as *stop hung*).",
        "- The servers take turns (A B C, then B C A, …) and each figure is the **median over the rounds**.",
        "- **CPU µs/req** is the CPU time (user + system) of the server's whole process tree during the run "
        "divided by the requests it answered. On this 2-core machine the load generator itself takes a core "
        "and other engineers run tests at the same time, so req/s and latencies move from run to run; "
        "**CPU µs/req is the stable figure** to compare servers by.",
        "- RSS and PSS are summed over the server's process tree (master, workers, routers) and are the peak "
        "of samples taken every 0.5 s during the run (every 20 ms during an upload). PSS shares pages "
        "fairly among the processes that share them: it is the figure to compare pre-forking servers by.",
        "- *req/s* counts only successful answers (status below 400); CPU µs/req divides by every "
        "answer, errors included.",
        "- *status ≥400* is wrk's count of error responses; *socket errors* are connect, read and write "
        "errors and timeouts (wrk --timeout " f"{options.timeout:g} s).",
        f"- Ratio columns (×) divide by the reference server: the first of `{options.ref}` with a result "
        "in the scenario.",
        "- A scenario lists the servers that offer what it needs: gunicorn, waitress and cheroot have no "
        "file server and no proxy, nginx runs no WSGI, so they are absent from those tables.",
        "- *not available* means the server refused the configuration because that feature is not built "
        "yet; *skipped* means a peer could not be installed on this machine.",
        "",
    ]
    for scenario in chosen_scenarios:
        names = [peer.name for peer in peers if scenario.route_for(peer.offers)]
        summaries = summarise(rows, scenario.name, names)
        if not summaries:
            continue
        out += [f"## {scenario.name}", "", scenario.about, ""]
        request = scenario.routes[0][1]
        if scenario.kind in ("throughput", "isolation"):
            out += [f"`{generator.command(request, options.duration, scenario.connections)}`"]
            if scenario.side:
                out += [f"and at the same time `{generator.command(scenario.side, options.duration, 5)}`"]
            out += [""]
        out += [table(scenario.kind, summaries, refs), ""]
    out += ["## Servers", "", "| server | configuration | access log |", "|---|---|---|"]
    for peer in peers:
        out.append(f"| {peer.name} | {peer.describe} | {peer.logging} |")
    out += ["", "Exact commands (`PORT` is an ephemeral port, `$WORK` the run's scratch folder):", ""]
    for peer in peers:
        for command in sorted(commands.get(peer.name, ())):
            out.append(f"- {peer.name}: `{command}`")
    for (server, name), text in sorted(configs.items()):
        out += ["", f"<details><summary>{server}: {name}</summary>", "", "```", text.rstrip(), "```", "", "</details>"]
    if missing:
        out += ["", "## Not installed on this machine", ""]
        out += [f"- {name}: {why}" for name, why in sorted(missing.items())]
    return "\n".join(out) + "\n"
