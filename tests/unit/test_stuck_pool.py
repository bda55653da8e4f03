"""A pool whose every thread stays past its deadline for ``stuck_after`` asks, once, to be replaced.

The pool's timers run on a ``Clock``; its threads are real and block on
events, and what they post to the reactor is run here when the test says.
"""

from __future__ import annotations

import queue
import threading

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from twisthost.threadpools import WorkerPool

WAIT = 10.0  # generous: only a broken pool takes this long


class Reactor(Clock):
    """A ``Clock`` whose ``callFromThread`` calls wait until :meth:`run_posted`."""

    def __init__(self):
        super().__init__()
        self.posted: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args):
        self.posted.put((f, args))

    def run_posted(self) -> None:
        """Run one batch posted by a pool thread, waiting for it."""
        f, args = self.posted.get(timeout=WAIT)
        f(*args)


class Job:
    def __init__(self, name: str):
        self.name = name
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self):
        self.started.set()
        self.release.wait(WAIT * 3)

    def describe(self):
        return f"GET /{self.name}"


@pytest.fixture
def pool():
    reactor = Reactor()
    pool = WorkerPool("app", threads=2, min_threads=0, queue_limit=4, reactor=reactor)
    pool.stuck_after = 30.0
    pool.calls = []
    pool.on_stuck = lambda p, why: pool.calls.append((p, why))
    pool.startService()
    pool.jobs = []
    yield pool
    for job in pool.jobs:
        job.release.set()


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def running(pool, name: str) -> Job:
    job = Job(name)
    pool.jobs.append(job)
    assert pool.submit(job)
    pool._reactor.advance(0)  # the deferred wake-up of an idle pool
    pool._reactor.advance(0.02)  # past STALL: a second thread for a blocked first one
    assert job.started.wait(WAIT)
    return job


def finish(pool, job: Job) -> None:
    """Let ``job`` return and run what its thread posts (its end as an overdue job)."""
    job.release.set()
    pool._reactor.run_posted()


def test_every_thread_overdue_for_stuck_after_asks_once_with_the_stacks(pool, logged):
    one, two = running(pool, "one"), running(pool, "two")
    pool.overdue(one)
    pool._reactor.advance(60)
    assert pool.calls == []  # one thread of two is stuck: the pool still serves
    pool.overdue(two)
    pool._reactor.advance(29.9)
    assert pool.calls == []
    pool._reactor.advance(0.2)
    assert pool.calls == [(pool, "stuck pool app")]
    assert pool.stats.stuck_replacements == 1
    stacks = [e for e in logged if "past its deadline" in e.get("log_format", "") and e.get("pool") == "app"]
    assert sorted(e["job"] for e in stacks) == ["GET /one", "GET /two"]
    assert all("in run" in e["stack"] for e in stacks)  # where Job.run waits
    pool._reactor.advance(3600)
    assert len(pool.calls) == 1 and pool.stats.stuck_replacements == 1  # once per pool


def test_a_thread_coming_back_restarts_the_count(pool):
    one, two = running(pool, "one"), running(pool, "two")
    pool.overdue(one)
    pool.overdue(two)
    pool._reactor.advance(20)
    finish(pool, one)  # all stuck for 20 s only
    pool._reactor.advance(20)
    assert pool.calls == []
    three = running(pool, "three")
    pool.overdue(three)  # all stuck again, from now
    pool._reactor.advance(29)
    assert pool.calls == []  # 69 s since two went overdue, but not 30 s of all stuck in a row
    pool._reactor.advance(1.5)
    assert [why for _, why in pool.calls] == ["stuck pool app"]


def test_a_job_overdue_while_queued_is_not_a_stuck_thread(pool):
    one, two = running(pool, "one"), running(pool, "two")
    queued = Job("queued")
    pool.jobs.append(queued)
    assert pool.submit(queued)
    pool.overdue(queued)
    pool.overdue(one)
    pool._reactor.advance(60)
    assert pool.calls == []


def test_off_when_stuck_after_is_none(pool):
    pool.stuck_after = None
    one, two = running(pool, "one"), running(pool, "two")
    pool.overdue(one)
    pool.overdue(two)
    pool._reactor.advance(3600)
    assert pool.calls == [] and pool.stats.stuck_replacements == 0


def test_a_stopping_pool_does_not_ask(pool):
    one, two = running(pool, "one"), running(pool, "two")
    pool.overdue(one)
    pool.overdue(two)
    pool.stopService()
    pool._reactor.advance(60)
    assert pool.calls == []
