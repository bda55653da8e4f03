"""Metrics and status across worker processes, answered by the master.

With ``Site(workers=N)`` requests are served by N processes, but the admin
listener must answer for all of them.  Prometheus series use
prometheus_client's multiprocess mode: every process writes its values to
memory-mapped files in one folder, which the master's ``/metrics`` sums.
The /status data (recent rates, latencies, pools, upstreams) is not
Prometheus-shaped, so each worker also writes a small JSON snapshot into
the same folder every second, and the master merges the snapshots of its
live workers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from twisted.application.service import Service
from twisted.internet import task

from .admin import AdminState, admin_service, process_row
from .build import route_labels
from .metrics import Metrics, RouteWindow, summarize

ENV = "PROMETHEUS_MULTIPROC_DIR"
SNAPSHOT_SECONDS = 1.0


def enable(directory: str) -> None:
    """Make this process and the workers it spawns write metrics into ``directory``.

    prometheus_client picks its value store when first imported; switch it
    for metrics created from now on (the master creates its own after this).
    """
    os.environ[ENV] = directory
    values.ValueClass = values.get_value_class()


def active_directory() -> str | None:
    return os.environ.get(ENV)


def _snapshot_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"status-{pid}.json")


class SnapshotWriter(Service):
    """In a worker: write what /status needs, every second, atomically."""

    def __init__(self, directory: str, state: AdminState, reactor):
        self.directory = directory
        self.state = state
        self.loop = task.LoopingCall(self.write)
        self.loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self.loop.start(SNAPSHOT_SECONDS, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self.loop.running:
            self.loop.stop()

    def write(self) -> None:
        metrics = self.state.metrics
        data = {
            "pid": os.getpid(),
            "started": self.state.started,
            "requests": metrics.total_requests(),
            "windows": metrics.raw_windows(),
            "sources": self.state.sources(),
            "not_ready": [f"{name}: {detail}" for name, ok, detail in self.state.readiness() if not ok],
        }
        path = _snapshot_path(self.directory, os.getpid())
        with open(path + ".tmp", "w") as out:
            json.dump(data, out)
        os.replace(path + ".tmp", path)


def read_snapshots(directory: str, pids) -> list[dict]:
    snapshots = []
    for pid in pids:
        try:
            with open(_snapshot_path(directory, pid)) as handle:
                snapshots.append(json.load(handle))
        except (OSError, ValueError):
            continue  # a worker still starting, or mid-replace
    return snapshots


def forget(directory: str, pid: int) -> None:
    """A worker ended: its gauges stop counting and its snapshot goes."""
    mark_process_dead(pid, directory)
    try:
        os.unlink(_snapshot_path(directory, pid))
    except OSError:
        pass


class MasterAdminState(AdminState):
    """The admin pages of a master: the sum of its live workers."""

    def __init__(self, metrics, current, token, directory: str, worker_pids):
        super().__init__(metrics, current, token)
        self.directory = directory
        self.worker_pids = worker_pids  # callable -> pids of live workers
        # The master's own series are in the folder too: expose only the sum.
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=directory)

    def _snapshots(self) -> list[dict]:
        return read_snapshots(self.directory, self.worker_pids())

    def routes(self) -> list:
        raws: dict = {}
        for snapshot in self._snapshots():
            for window in snapshot["windows"]:
                raws.setdefault((window["host"], window["route"]), []).append(window)
        return summarize({key: RouteWindow.merged(parts) for key, parts in raws.items()},
                         route_labels(self.current().site))

    def sources(self) -> dict:
        merged: dict = {}
        for snapshot in self._snapshots():
            for name, rows in snapshot["sources"].items():
                merged.setdefault(name, []).extend({"worker": str(snapshot["pid"]), **row} for row in rows)
        return merged

    def readiness(self) -> list:
        snapshots = self._snapshots()
        if not snapshots:
            return [("workers", False, "no worker is serving yet")]
        return [("worker " + str(s["pid"]), not s["not_ready"], "; ".join(s["not_ready"])) for s in snapshots]

    def processes(self) -> list:
        rows = [{"role": "master", **process_row(os.getpid(), self.started, 0)}]
        for snapshot in self._snapshots():
            rows.append({"role": "worker",
                         **process_row(snapshot["pid"], snapshot["started"], snapshot["requests"])})
        return rows


class MasterAdmin:
    """A master's admin listener, and the folder its workers report into.

    Created before any worker is spawned, so that the workers inherit the
    folder through the environment.
    """

    def __init__(self, endpoint: str, token: str | None, current, worker_pids, reactor):
        self.directory = tempfile.mkdtemp(prefix="twisthost-metrics-")
        enable(self.directory)
        self.metrics = Metrics()
        self.state = MasterAdminState(self.metrics, current, token, self.directory, worker_pids)
        self.service = admin_service(endpoint, self.state, reactor)

    def worker_ended(self, pid: int) -> None:
        forget(self.directory, pid)

    def stop(self):
        stopped = self.service.stopService()
        shutil.rmtree(self.directory, ignore_errors=True)
        return stopped
