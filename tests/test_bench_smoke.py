"""Smoke test of the benchmark harness (benchmarks/run.py): not a benchmark.

It runs the harness's own start / wait / measure / stop code against a real
twisthost for about a second, with wrk when it is installed and always with
the Python load generator, and checks the failure paths the report depends
on: a feature that is not there yet and a server that will not stop.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
from pathlib import Path

import pytest

from conftest import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench import install, load, procs, scenarios  # noqa: E402
from bench.servers import PEERS_BY_NAME, Peer, _twisthost  # noqa: E402
from run import Bench  # noqa: E402

# Without wrk its case shows as skipped, with the reason, so the count of tests does not change.
GENERATORS = ["python", pytest.param("wrk", marks=pytest.mark.skipif(
    install.find_tool("wrk") is None, reason="wrk is not installed (Debian: apt-get install wrk)"))]


def options(generator: str) -> argparse.Namespace:
    return argparse.Namespace(
        load=generator, threads=1, connections=4, timeout=10.0, warmup=0.3, duration=1.0, stop_timeout=10.0,
    )


@pytest.fixture
def work(tmp_path):
    tmp_path.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("generator", GENERATORS)
def test_measures_twisthost_and_stops_it(work, generator):
    bench = Bench(options(generator), work, missing={})
    process = bench.launch(PEERS_BY_NAME["twisthost"], {"wsgi"}, "/")
    pids = process.pids()
    assert process.pid in pids
    metrics = scenarios.throughput(process, bench.generator, load.Request("/"), bench.options)

    assert metrics["requests"] > 0 and metrics["rps"] > 0
    assert metrics["status_errors"] == 0 and metrics["socket_errors"] == 0
    assert 0 < metrics["p50_ms"] <= metrics["p99_ms"] < 10_000  # milliseconds: not seconds, not µs
    assert 10 < metrics["rss_mib"] < 2000 and 0 < metrics["pss_mib"] <= metrics["rss_mib"]
    # CPU time is read in clock ticks: over a second of load some must have been spent.
    assert math.isfinite(metrics["cpu_us"]) and metrics["cpu_us"] > 0

    assert process.stop(10.0), process.stop_note
    assert not [pid for pid in pids if procs._alive(pid)]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", process.port), timeout=1).close()


def test_echo_body_reaches_the_app(work):
    """The POST scenario really sends its body: the app echoes 16 KiB back."""
    bench = Bench(options("python"), work, missing={})
    process = bench.launch(PEERS_BY_NAME["twisthost"], {"wsgi"}, "/")
    try:
        status, body = scenarios._post(process.port, "/upload", 300_000, timeout=10)
        assert (status, body) == (200, b"300000")
    finally:
        assert process.stop(5.0)


def test_missing_feature_is_a_row_not_a_crash(work):
    """A config twisthost refuses is reported as 'not available' with the site.py line."""
    bench = Bench(options("python"), work, missing={})
    peer = Peer("twisthost-future", frozenset({"wsgi"}), "", "", _twisthost("\n    no_such_option=1,"))
    row = bench.measure(scenarios.SCENARIOS_BY_NAME["hello"], peer, 1)
    assert row.status == "not available"
    assert "site-" in row.note and ".py:3" in row.note and "no_such_option" in row.note


def test_missing_peer_is_skipped(work):
    bench = Bench(options("python"), work, missing={"gunicorn": "pip install failed"})
    row = bench.measure(scenarios.SCENARIOS_BY_NAME["hello"], PEERS_BY_NAME["gunicorn-sync"], 1)
    assert (row.status, row.note) == ("skipped", "gunicorn: pip install failed")


def test_a_server_that_ignores_sigterm_is_killed_and_reported(work):
    port = free_port()
    source = (
        "import http.server, signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()\n"
    )
    process = procs.start("stubborn", [sys.executable, "-c", source, str(port)], port,
                          work / "stubborn.log", env=None, cwd=work)
    process.wait_ready("/", timeout=10)
    pids = process.pids()
    assert process.stop(1.0) is False
    assert process.stop_note == "stop hung: 1 process(es) killed after 1 s"
    assert not [pid for pid in pids if procs._alive(pid)]


def test_report_takes_medians_and_ratios_against_the_first_present_reference():
    from bench import report

    rows = [
        report.Row("hello", "a", 1, "ok", {"rps": 100.0, "cpu_us": 50.0}),
        report.Row("hello", "a", 2, "ok", {"rps": 300.0, "cpu_us": float("nan")}),
        report.Row("hello", "a", 3, "ok", {"rps": 200.0, "cpu_us": 70.0}),
        report.Row("hello", "b", 1, "ok", {"rps": 400.0, "cpu_us": 30.0}),
        report.Row("hello", "c", 1, "not available", note="WSGI is not available yet"),
    ]
    summaries = report.summarise(rows, "hello", ["a", "b", "c"])
    assert summaries[0].medians == {"rps": 200.0, "cpu_us": 60.0}
    text = report.table("throughput", summaries, ["missing", "a"])
    lines = text.splitlines()
    assert "× a" in lines[0]
    assert lines[2].startswith("| a | 200 | 1.00 |") and "| 60 | 1.00 |" in lines[2]
    assert lines[3].startswith("| b | 400 | 2.00 |") and "| 30 | 0.50 |" in lines[3]
    assert "not available; WSGI is not available yet" in lines[4]
