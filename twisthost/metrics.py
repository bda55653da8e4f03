"""Request metrics: Prometheus series plus short rolling windows for /status.

Prometheus answers "how much, over time"; the status page answers "what is
it doing right now", which needs recent rates and percentiles per host and
route.  Both are fed by one call per finished request, so the cost on the
request path is a few dictionary updates.

In one process the per-route series are plain numbers (:class:`RouteTally`)
that :class:`RouteCollector` exposes when scraped: prometheus_client takes a
lock for every ``inc`` and ``observe`` (six of them for a proxied request,
~5 µs), and here the reactor thread is the only writer and, since
``/metrics`` is answered in it, the only reader.  Workers keep
prometheus_client's own series (:class:`RouteSeries`), whose values live in
the shared files the master sums.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import deque

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

# The *_created series double the scrape size and no dashboard here uses them.
disable_created_metrics()

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WINDOW_SECONDS = 10  # one sparkline point
WINDOWS = 30  # five minutes of history
LATENCY_SAMPLES = 512  # recent durations kept per route for percentiles
LABELS = ("host", "route")
# The per-route series: (name, help), the same whichever class keeps them.
REQUESTS = ("twisthost_requests", "Finished HTTP requests.")
DURATION = ("twisthost_request_duration_seconds", "Time from routing to the last byte.")
SENT = ("twisthost_response_bytes", "Response body bytes sent.")
QUEUE_WAIT = ("twisthost_wsgi_queue_wait_seconds", "Time WSGI requests waited for a pool thread.")
UPSTREAM_TIME = ("twisthost_upstream_duration_seconds", "Proxy: time to the upstream's response head.")
_BOUNDS = [floatToGoString(bound) for bound in BUCKETS] + ["+Inf"]


def status_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code < 600 else "other"


class RouteWindow:
    """Recent traffic of one host/route: counts per 10 s and recent latencies.

    4xx and 5xx are counted apart: a burst of 404s from a scanner is the
    clients' doing, a burst of 502s the server's, and the page says which.
    """

    def __init__(self):
        self.counts: deque = deque(maxlen=WINDOWS)  # [window start, requests, 4xx, 5xx]
        self.latencies: deque = deque(maxlen=LATENCY_SAMPLES)
        self.total = 0

    def add(self, now: float, seconds: float, status: int) -> None:
        start = now - now % WINDOW_SECONDS
        if not self.counts or self.counts[-1][0] != start:
            self.counts.append([start, 0, 0, 0])
        entry = self.counts[-1]
        entry[1] += 1
        if status >= 400:
            entry[2 if status < 500 else 3] += 1
        self.latencies.append(seconds)
        self.total += 1

    def raw(self) -> dict:
        """Plain data another process can merge (the workers' fan-in)."""
        return {"counts": list(self.counts), "latencies": list(self.latencies), "total": self.total}

    @classmethod
    def merged(cls, raws: list[dict]) -> "RouteWindow":
        """One window from several processes' ``raw()``: counts added per 10 s, latencies pooled."""
        window = cls()
        by_start: dict = {}
        for raw in raws:
            for start, *numbers in raw["counts"]:
                entry = by_start.setdefault(start, [start, 0, 0, 0])
                for i, number in enumerate(numbers, 1):
                    entry[i] += number
            window.latencies.extend(raw["latencies"][-LATENCY_SAMPLES // max(1, len(raws)):])
            window.total += raw["total"]
        window.counts.extend(by_start[start] for start in sorted(by_start)[-WINDOWS:])
        return window

    def summary(self, now: float) -> dict:
        """Rates over the last minute, percentiles of recent requests, a series for sparklines."""
        since = now - 60
        recent = [c for c in self.counts if c[0] >= since - WINDOW_SECONDS]
        requests = sum(c[1] for c in recent)
        client_errors = sum(c[2] for c in recent)
        server_errors = sum(c[3] for c in recent)
        ordered = sorted(self.latencies)
        series = {c[0]: c[1] for c in self.counts}
        first = now - now % WINDOW_SECONDS - (WINDOWS - 1) * WINDOW_SECONDS
        return {
            "total": self.total,
            "rate": round(requests / 60, 3),
            "client_error_rate": round(client_errors / requests, 4) if requests else 0.0,
            "server_error_rate": round(server_errors / requests, 4) if requests else 0.0,
            "p50_ms": _percentile(ordered, 0.50),
            "p99_ms": _percentile(ordered, 0.99),
            "series": [series.get(first + i * WINDOW_SECONDS, 0) for i in range(WINDOWS)],
        }


def _percentile(ordered: list, q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, int(q * len(ordered)))
    return round(ordered[index] * 1000, 3)


class _Route:
    """What one (host, route) records of a finished request, whichever class keeps the numbers.

    Subclasses count the request (:meth:`_count`) and make the histograms a
    route may never feed (queue wait, upstream time) on first use
    (:meth:`_histogram`), so those appear only for routes that have them.
    """

    def __init__(self, metrics: "Metrics", host: str, route: str):
        self.metrics, self.host, self.route = metrics, host, route
        self.queue_wait = None
        self.upstream_time: dict = {}  # upstream -> histogram
        self.window = metrics.windows.setdefault((host, route), RouteWindow())

    def add(self, status: int, seconds: float, sent: int, extra: dict | None) -> None:
        self._count(status, seconds, sent)
        if extra:
            queue_ms = extra.get("queue_ms")
            if queue_ms is not None:
                if self.queue_wait is None:
                    self.queue_wait = self._histogram("queue_wait")
                self.queue_wait.observe(queue_ms / 1000)
            upstream_ms = extra.get("upstream_ms")
            if upstream_ms is not None:
                upstream = extra.get("upstream") or "-"
                histogram = self.upstream_time.get(upstream)
                if histogram is None:
                    histogram = self.upstream_time[upstream] = self._histogram("upstream_time", upstream)
                histogram.observe(upstream_ms / 1000)
        self.window.add(time.time(), seconds, status)


class RouteSeries(_Route):
    """A route's labelled Prometheus children (workers: their values live in the shared files).

    ``Counter.labels()`` checks, converts and looks up its labels under a
    lock on every call; resolving each child once per route (per status and
    per upstream) keeps a finished request to a few dictionary look-ups.
    """

    def __init__(self, metrics: "Metrics", host: str, route: str):
        super().__init__(metrics, host, route)
        self.duration = metrics.duration.labels(host, route)
        self.sent = metrics.sent.labels(host, route)
        self.requests: dict = {}  # status code -> child counter of its class

    def _count(self, status: int, seconds: float, sent: int) -> None:
        counter = self.requests.get(status)
        if counter is None:
            counter = self.requests[status] = self.metrics.requests.labels(
                self.host, self.route, status_class(status))
        counter.inc()
        self.duration.observe(seconds)
        if sent:
            self.sent.inc(sent)

    def _histogram(self, kind: str, *labels: str):
        return getattr(self.metrics, kind).labels(self.host, self.route, *labels)


class Buckets:
    """One histogram series as plain counts per bucket and a sum."""

    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1  # le: the first bound >= value
        self.sum += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        running, cumulative = 0, []
        for bound, count in zip(_BOUNDS, self.counts):
            running += count
            cumulative.append((bound, running))
        family.add_metric(labels, cumulative, self.sum)


class RouteTally(_Route):
    """A route's series in a single process, as plain numbers (see the module's doc)."""

    def __init__(self, metrics: "Metrics", host: str, route: str):
        super().__init__(metrics, host, route)
        self.requests: dict = {}  # status class -> count
        self.duration = Buckets()
        self.sent = 0

    def _count(self, status: int, seconds: float, sent: int) -> None:
        kind = status_class(status)
        self.requests[kind] = self.requests.get(kind, 0) + 1
        self.duration.observe(seconds)
        self.sent += sent

    def _histogram(self, kind: str, *labels: str) -> Buckets:
        return Buckets()


class RouteCollector:
    """Exposes the :class:`RouteTally` series as prometheus_client's own classes would."""

    def __init__(self, tallies: dict):
        self.tallies = tallies  # (host, route) -> RouteTally

    def describe(self):
        return self._families()

    def _families(self) -> tuple:
        return (CounterMetricFamily(*REQUESTS, labels=LABELS + ("status",)),
                HistogramMetricFamily(*DURATION, labels=LABELS),
                CounterMetricFamily(*SENT, labels=LABELS),
                HistogramMetricFamily(*QUEUE_WAIT, labels=LABELS),
                HistogramMetricFamily(*UPSTREAM_TIME, labels=LABELS + ("upstream",)))

    def collect(self):
        families = requests, duration, sent, queue_wait, upstream_time = self._families()
        for tally in self.tallies.values():
            labels = [tally.host, tally.route]
            for kind, count in tally.requests.items():
                requests.add_metric(labels + [kind], count)
            tally.duration.add_to(duration, labels)
            sent.add_metric(labels, tally.sent)
            if tally.queue_wait is not None:
                tally.queue_wait.add_to(queue_wait, labels)
            for upstream, buckets in tally.upstream_time.items():
                buckets.add_to(upstream_time, labels + [upstream])
        return families


class Metrics:
    """One process's request metrics, in its own Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._series: dict = {}  # (host, route) -> RouteSeries or RouteTally
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # workers: values in the shared files
            self._series_class = RouteSeries
            self.requests = Counter(*REQUESTS, LABELS + ("status",), registry=self.registry)
            self.duration = Histogram(*DURATION, LABELS, buckets=BUCKETS, registry=self.registry)
            self.sent = Counter(*SENT, LABELS, registry=self.registry)
            self.queue_wait = Histogram(*QUEUE_WAIT, LABELS, buckets=BUCKETS, registry=self.registry)
            self.upstream_time = Histogram(*UPSTREAM_TIME, LABELS + ("upstream",), buckets=BUCKETS,
                                           registry=self.registry)
        else:
            self._series_class = RouteTally
            self.registry.register(RouteCollector(self._series))
            # What Prometheus's Python exporters show (process_* memory, CPU and
            # files; python_gc_*), read when scraped.  Not for workers: their
            # registries are summed from files, where per-process facts do not fit.
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.in_flight = Gauge("twisthost_requests_in_flight", "Requests routed and not finished.",
                               registry=self.registry, multiprocess_mode="livesum")
        self.refused = Counter("twisthost_requests_refused", "Malformed, oversized or too slow request "
                               "heads and bodies answered by the connection itself.", ("status",),
                               registry=self.registry)
        self.reloads = Counter("twisthost_config_reloads", "Config reloads by result.", ("result",),
                               registry=self.registry)
        self.worker_restarts = Counter("twisthost_worker_restarts", "Workers that died and were replaced.",
                                       registry=self.registry)
        self.windows: dict[tuple[str, str], RouteWindow] = {}
        self.reload_log: deque = deque(maxlen=10)

    def watch(self, connections) -> None:
        """Report the requests under way on ``connections`` (a ``graceful.Connections``).

        In one process the gauge is computed when scraped, from the open
        connections, so a request pays nothing for it (a per-request
        ``inc``/``dec`` and ``notifyFinish`` Deferred cost ~5% of a small
        request).  Workers' gauges live in files the master sums
        (``twisthost.fanin``), which a scrape-time function cannot feed:
        there each request still counts itself in and out.
        """
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            connections.request_observers.append(self._started)
        else:
            self.in_flight.set_function(connections.in_flight)

    def _started(self, request) -> None:
        self.in_flight.inc()
        request.notifyFinish().addBoth(self._ended)

    def _ended(self, _) -> None:
        self.in_flight.dec()

    def finished(self, host: str, route: str, status: int, seconds: float, sent: int,
                 extra: dict | None = None) -> None:
        """One finished request; ``extra`` may hold ``queue_ms``, ``upstream`` and ``upstream_ms``."""
        series = self._series.get((host, route))
        if series is None:
            series = self._series[(host, route)] = self._series_class(self, host, route)
        series.add(status, seconds, sent, extra)

    def reloaded(self, ok: bool, detail: str = "") -> None:
        self.reloads.labels("ok" if ok else "failed").inc()
        self.reload_log.append({"time": time.time(), "ok": ok, "detail": detail})

    def routes(self, configured=()) -> list[dict]:
        return summarize(self.windows, configured)

    def total_requests(self) -> int:
        return sum(window.total for window in self.windows.values())

    def raw_windows(self) -> list[dict]:
        return [{"host": h, "route": r, **w.raw()} for (h, r), w in self.windows.items()]


def summarize(windows: dict, configured=()) -> list[dict]:
    """Rows for /status from ``{(host, route): RouteWindow}``, plus the ``configured``
    (host, route) pairs no request reached yet: a route without traffic is news too."""
    now = time.time()
    quiet = RouteWindow()
    keys = sorted(set(windows) | set(configured))
    return [{"host": host, "route": route, **windows.get((host, route), quiet).summary(now)} for host, route in keys]
