#!/usr/bin/env python
"""Benchmark twisthost against gunicorn, uWSGI, waitress, cheroot, nginx and twistd web.

    make bench                                   # the full run: 3 rounds of 10 s, writes docs/benchmarks.md
    .venv/bin/python benchmarks/run.py --quick   # 1 round of 3 s
    .venv/bin/python benchmarks/run.py --scenario hello --server twisthost,gunicorn-gthread

Every server runs on 127.0.0.1 and is started fresh for each measurement,
waited for, warmed up, measured and stopped.  The servers take turns
(A B C, B C A, C A B) over the rounds and the report gives medians, because
a shared 2-core machine is noisy; server CPU per request is the steadiest
figure.  Raw rows go to benchmarks/results/<time>/runs.tsv.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import install, load, procs, report, scenarios  # noqa: E402
from bench.servers import BACKEND, PEERS, PEERS_BY_NAME, Peer, Slot  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DOCS = ROOT / "docs" / "benchmarks.md"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="", help="comma-separated scenarios (default: all): "
                        + ", ".join(s.name for s in scenarios.SCENARIOS))
    parser.add_argument("--server", default="", help="comma-separated servers (default: all): "
                        + ", ".join(p.name for p in PEERS))
    parser.add_argument("--ref", default="gunicorn-gthread,nginx",
                        help="reference for the ratio columns: the first of these with a result in a scenario")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c")
    parser.add_argument("--timeout", type=float, default=2.0, help="wrk --timeout (seconds)")
    parser.add_argument("--quick", action="store_true", help="1 round, 3 s runs, 1 s warm-up")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator; auto uses wrk when installed")
    parser.add_argument("--upload-mib", type=int, default=200)
    parser.add_argument("--idle", type=int, default=1000, help="connections in idle-1000")
    parser.add_argument("--stop-timeout", type=float, default=5.0, help="seconds before a stop is called hung")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get/pip install missing peers")
    parser.add_argument("--docs", choices=("auto", "yes", "no"), default="auto",
                        help="write docs/benchmarks.md (auto: only for a full run of everything)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (configs, server logs)")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.duration, options.warmup = 1, 3.0, 1.0
    options.full = not (options.quick or options.scenario or options.server) and options.load != "python"
    return options


def pick(names: str, known: dict, what: str) -> list:
    if not names:
        return list(known.values())
    chosen = []
    for name in names.split(","):
        if name.strip() not in known:
            raise SystemExit(f"unknown {what} {name!r}; choose from {', '.join(known)}")
        chosen.append(known[name.strip()])
    return chosen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """One benchmark run: the scratch folder, the generator, the rows measured so far."""

    def __init__(self, options, work: Path, missing: dict):
        self.options, self.work, self.missing = options, work, missing
        self.www = work / "www"
        self.generator = load.make(options.load, options.threads, options.connections, options.timeout, work)
        self.rows: list[report.Row] = []
        self.commands: dict[str, set] = {}
        self.configs: dict[tuple, str] = {}
        self.backend: procs.Process | None = None
        (self.www / "static").mkdir(parents=True, exist_ok=True)
        for name, size in scenarios.STATIC_FILES.items():
            (self.www / "static" / name).write_bytes(os.urandom(size))

    def why_missing(self, peer: Peer) -> str:
        return "; ".join(f"{need}: {self.missing[need]}" for need in peer.needs if need in self.missing)

    def slot(self, kinds) -> Slot:
        return Slot(free_port(), frozenset(kinds), self.work, self.www, self.backend.port if self.backend else 0)

    def launch(self, peer: Peer, kinds, ready_path: str) -> procs.Process:
        """Start ``peer`` and wait until it answers; StartError if it does not."""
        if peer.attaches_backend:
            return procs.Process.attach(peer.name, self.backend.pid, self.backend.port)
        slot = self.slot(kinds)
        launch = peer.launch(slot)
        self.commands.setdefault(peer.name, set()).add(self._shown(launch.argv, slot))
        for name, text in launch.configs.items():
            self.configs[(peer.name, name)] = self._shown_text(text, slot)
        process = procs.start(peer.name, launch.argv, slot.port, self.work / f"{peer.name}-{slot.port}.log",
                              peer.env(slot), self.work)
        try:
            process.wait_ready(ready_path, timeout=30)
        except procs.StartError:
            process.stop(self.options.stop_timeout)
            raise
        return process

    def _shown_text(self, text: str, slot: Slot) -> str:
        for value, name in ((str(self.work), "$WORK"), (str(HERE), "benchmarks"), (str(slot.port), "PORT"),
                            (str(slot.backend_port), "BACKEND_PORT")):
            if value and value != "0":
                text = text.replace(value, name)
        return text

    def _shown(self, argv: list[str], slot: Slot) -> str:
        argv = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv]
        return self._shown_text(shlex.join(argv), slot)

    def run(self, chosen_scenarios, chosen_peers) -> None:
        for scenario in chosen_scenarios:
            peers = [p for p in chosen_peers if scenario.route_for(p.offers)]
            if not peers:
                continue
            log(f"== {scenario.name}: {', '.join(p.name for p in peers)}")
            try:
                self.start_backend(scenario)
            except procs.StartError as error:
                note = f"the proxy backend did not start: {error}"
                self.rows += [report.Row(scenario.name, peer.name, 1, "failed", note=note) for peer in peers]
                log(f"   {note}")
                continue
            try:
                self.run_scenario(scenario, peers)
            finally:
                if self.backend:
                    self.backend.stop(self.options.stop_timeout)
                    self.backend = None

    def start_backend(self, scenario) -> None:
        if any(service == "proxy" for service, _ in scenario.routes):
            self.backend = self.launch(BACKEND, {"wsgi"}, "/")

    def run_scenario(self, scenario, peers: list[Peer]) -> None:
        given_up: set[str] = set()
        for number in range(self.options.rounds):
            shift = number % len(peers)
            for peer in peers[shift:] + peers[:shift]:
                if peer.name in given_up:
                    continue
                row = self.measure(scenario, peer, number + 1)
                self.rows.append(row)
                log(f"   round {number + 1} {peer.name:17} {row.status:13} {_brief(row)}")
                if row.status in ("not available", "skipped"):  # a failure may be a bad round: retry
                    given_up.add(peer.name)

    def measure(self, scenario, peer: Peer, number: int) -> report.Row:
        row = report.Row(scenario.name, peer.name, number, "ok")
        if peer.attaches_backend and not self.backend:
            row.status, row.note = "skipped", "no backend"
            return row
        if self.why_missing(peer):
            row.status, row.note = "skipped", self.why_missing(peer)
            return row
        service, request = scenario.route_for(peer.offers)
        kinds = {service} | ({"static"} if scenario.side and "static" in peer.offers else set())
        try:
            process = self.launch(peer, kinds, request.path if request.method == "GET" else "/")
        except procs.StartError as error:
            row.status = "failed" if error.available else "not available"
            row.note = str(error).replace(str(self.work), "$WORK")
            return row
        try:
            row.metrics = self.measure_kind(scenario, process, request)
        except Exception as error:  # a server that breaks under load is a result, not a crash
            row.status, row.note = "failed", f"{type(error).__name__}: {error}"
        finally:
            if not process.stop(self.options.stop_timeout):
                row.note = "; ".join(filter(None, [row.note, process.stop_note]))
        return row

    def measure_kind(self, scenario, process: procs.Process, request) -> dict:
        o = self.options
        if scenario.kind == "throughput":
            return scenarios.throughput(process, self.generator, request, o, scenario.connections)
        if scenario.kind == "isolation":
            return scenarios.isolation(process, self.generator, request, scenario.side, o, scenario.connections)
        if scenario.kind == "upload":
            return scenarios.upload(process, request, o.upload_mib * scenarios.MIB, timeout=120)
        return scenarios.idle(process, request, o.idle, timeout=10)


def _brief(row: report.Row) -> str:
    m = row.metrics
    if row.status != "ok":
        return row.note[:160]
    parts = [f"{k}={m[k]:.1f}" for k in ("rps", "cpu_us", "side_rps", "rss_growth_mib", "pss_mib", "open") if k in m]
    return " ".join(parts) + (f"  [{row.note}]" if row.note else "")


def machine() -> dict:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return {"cpus": os.cpu_count(), "cpu": model, "memory": f"{int(mem) / 1024 / 1024:.0f} GiB",
            "kernel": platform.release()}


def main(argv=None) -> int:
    options = parse_args(argv)
    chosen_scenarios = pick(options.scenario, scenarios.SCENARIOS_BY_NAME, "scenario")
    chosen_peers = pick(options.server, PEERS_BY_NAME, "server")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # idle-1000 needs the descriptors
    missing = install.missing() if options.no_install else install.ensure_all(log)
    if options.load == "auto" and "wrk" in missing:
        log(f"wrk missing ({missing['wrk']}): using the Python load generator")

    started = datetime.now(timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="twisthost-bench-"))
    work.chmod(0o755)  # nginx workers run as nobody and must read the files
    bench = Bench(options, work, missing)
    began = time.monotonic()
    try:
        bench.run(chosen_scenarios, chosen_peers)
    finally:
        if options.keep:
            log(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    out = RESULTS / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.tsv").write_text(report.tsv(bench.rows))
    page = report.page(
        bench.rows, chosen_scenarios, chosen_peers, options, started=started, minutes=(time.monotonic() - began) / 60,
        machine=machine(), versions=install.versions(), generator=bench.generator, commands=bench.commands,
        configs=bench.configs, missing=missing, argv=sys.argv[1:] if argv is None else argv, tsv=out / "runs.tsv",
    )
    (out / "summary.md").write_text(page)
    (RESULTS / "latest.md").write_text(page)
    if options.docs == "yes" or (options.docs == "auto" and options.full):
        DOCS.write_text(page)
        log(f"wrote {DOCS.relative_to(ROOT)}")
    log(f"wrote {(out / 'runs.tsv').relative_to(ROOT)} and {(RESULTS / 'latest.md').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
