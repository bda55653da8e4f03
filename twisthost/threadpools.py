"""Thread pools for WSGI apps: bounded, cheap per request, and never hanging a stop.

Why not ``twisted.python.threadpool.ThreadPool`` as is: its queue is
unbounded, handing it one call costs ~19 µs of CPU (context tracking plus the
``_team`` coordinator; a ``queue.SimpleQueue`` costs ~0.4 µs), every result
comes back through its own ``callFromThread`` (one pipe write and one reactor
wake-up each), and ``stop()`` joins threads from the reactor thread, which is
how ``twistd web --wsgi`` deadlocks on SIGTERM while requests are in flight.

So a :class:`WorkerPool` is a ``twisted.application`` service around plain
threads fed from a deque:

- ``submit`` refuses work once ``threads + queue`` jobs are outstanding, so
  the caller can answer 503 at once;
- a burst wakes as few threads as it can: a thread that finishes a job takes
  the next queued one without sleeping, and ``submit`` wakes a parked thread
  only when no thread is awake, and only once the reactor has handled the
  events of its current turn (every socket call of the reactor releases the
  GIL, so a thread woken at once takes it from the reactor again and again).
  Waking a second thread for a GIL-bound hello world costs two futex calls
  and a GIL hand-off per request and buys nothing; so more threads are woken only when queued jobs see no progress
  for ``STALL`` seconds (the awake threads block: sleep, I/O, a database);
- threads hand results back through a :class:`ReactorMailbox`, which wakes
  the reactor once per batch instead of once per call;
- a pool whose every thread runs a job past its deadline (the WSGI exchange
  calls :meth:`WorkerPool.overdue` when it answers 504) for ``stuck_after``
  seconds without a break logs each stuck thread's stack once and calls
  ``on_stuck(pool, why)``: the serving process has itself replaced (see
  ``HostService.pool_stuck``).  A reactor timer watches it, no thread polls;
- ``stopService`` lets queued jobs finish and returns a Deferred that fires
  when the threads are gone or after ``STOP_GRACE`` seconds, whichever is
  first; threads still stuck then are daemon threads, abandoned with their
  stacks logged, so the process can exit.

Pool numbers live on :class:`PoolStats` as plain attributes for metrics.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
import traceback

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

#: Seconds a stopping pool waits for its threads.  By then the site's graceful
#: drain has already waited for in-flight requests, so only stuck threads remain.
STOP_GRACE = 2.0

#: Seconds queued jobs may wait with no job started before more threads are
#: woken.  Longer than the GIL's switch interval (5 ms), so a thread that is
#: merely waiting for the GIL is not taken for a blocked one.
STALL = 0.01

_STOP = object()


class ReactorMailbox:
    """``post(f, *args)`` from any thread runs ``f(*args)`` in the reactor thread.

    Like ``reactor.callFromThread`` but coalescing: calls posted while a drain
    is already scheduled ride along with it, so a busy pool costs one reactor
    wake-up per batch of responses rather than one per response.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._calls: collections.deque = collections.deque()
        self._scheduled = False

    def post(self, f, *args) -> None:
        self._calls.append((f, args))
        if not self._scheduled:
            # A drain that is running has cleared the flag before popping, so
            # it either takes this call or a new drain is scheduled for it.
            self._scheduled = True
            self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        calls = self._calls
        while calls:
            f, args = calls.popleft()
            try:
                f(*args)
            except Exception:
                log.failure("error running {f!r} from a pool thread", f=f)


class PoolStats:
    """Numbers of one pool, read by metrics and the status page.

    ``threads``, ``busy`` and ``queued`` are current values; the rest count
    up from start.  Each counter has one writer side: ``accepted`` and
    ``rejected`` the reactor thread, ``started`` and ``completed`` the pool
    threads (under the pool's lock).
    """

    def __init__(self, name: str, threads: int, queue_limit: int):
        self.name = name
        self.max_threads = threads
        self.queue_limit = queue_limit
        self.threads = 0  # started and alive
        self.accepted = 0
        self.started = 0  # taken from the queue by a thread
        self.completed = 0
        self.rejected = 0  # refused because threads + queue were all taken (503)
        self.timeouts = 0  # requests answered 504 past their deadline
        self.stuck_replacements = 0  # times every thread stayed overdue for stuck_after: process replaced
        self.queue_wait_total = 0.0  # seconds, summed over started jobs
        self.queue_wait_max = 0.0

    @property
    def busy(self) -> int:
        """Jobs running now."""
        return self.started - self.completed

    @property
    def queued(self) -> int:
        """Jobs accepted and waiting for a thread."""
        return self.accepted - self.started


class WorkerPool(Service):
    """A bounded pool of threads that runs jobs (objects with ``run()``).

    Before ``run()`` the pool sets ``job.queue_wait`` (seconds spent queued)
    and ``job.thread_id`` (the ident of the thread running it, for stack dumps).

    ``stuck_after`` (seconds, or None: never) and ``on_stuck(pool, why)`` are
    set by whoever serves the pool: when every one of the pool's ``threads``
    runs an overdue job (see :meth:`overdue`) for ``stuck_after`` seconds in a
    row, the stacks are logged and ``on_stuck`` is called, once per pool.
    """

    stuck_after: float | None = None
    on_stuck = None

    def __init__(self, name: str, threads: int, min_threads: int, queue_limit: int, reactor):
        self.label = name  # not `name`: MultiService wants service names unique
        self.min_threads = min_threads
        self.stats = PoolStats(name, threads, queue_limit)
        self.mailbox = ReactorMailbox(reactor)
        self._reactor = reactor
        # Guarded by _lock: the queue, the parked threads and how many are awake.
        self._lock = threading.Lock()
        self._jobs: collections.deque = collections.deque()
        self._parked: list[threading.Lock] = []  # each held while its thread sleeps on it
        self._awake = 0  # threads running a job or about to look for one
        self._stall_check = None  # the pending IDelayedCall of _check_progress
        self._wake_due = False  # a _wake_idle is scheduled
        self._seen_started = 0  # stats.started at the last progress check
        self._threads: list[threading.Thread] = []
        # Also guarded by _lock: thread ident -> the job it runs, and the
        # running jobs past their deadline (a subset of _busy's values).
        self._busy: dict = {}
        self._overdue: set = set()
        self._stuck_timer = None  # IDelayedCall of _stuck_too_long while every thread is overdue
        self._stuck_reported = False
        self._stopping = False
        self._stopped: defer.Deferred | None = None

    # -- reactor side

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for _ in range(self.min_threads):
            self._spawn(awake=False)

    def submit(self, job) -> bool:
        """Queue ``job``; False (and nothing queued) when the pool is full or stopping."""
        stats = self.stats
        if (not self.running or self._stopping
                or stats.accepted - stats.completed >= stats.max_threads + stats.queue_limit):
            stats.rejected += 1
            return False
        job.queued_at = time.monotonic()
        stats.accepted += 1
        with self._lock:
            self._jobs.append(job)
            idle = self._awake == 0
        if idle:
            if not self._wake_due:
                # Wake after the reactor handled this batch of events: a thread
                # woken now would fight the reactor for the GIL at every
                # syscall of the batch; then it runs the batch while the
                # reactor waits in epoll.
                self._wake_due = True
                self._reactor.callLater(0, self._wake_idle)
        elif self._stall_check is None:
            self._watch_progress()
        return True

    def _wake_idle(self) -> None:
        self._wake_due = False
        with self._lock:
            queued = len(self._jobs)
            spawn = self._wake(1) if queued and self._awake == 0 else 0
        if spawn:
            self._spawn(awake=True)
        if queued > 1 and self._stall_check is None:  # the burst may block that one thread
            self._watch_progress()

    def _wake(self, wanted: int) -> int:
        """Unpark up to ``wanted`` threads (holding ``_lock``); return how many to spawn."""
        while wanted and self._parked:
            self._parked.pop().release()
            self._awake += 1
            wanted -= 1
        spawn = min(wanted, self.stats.max_threads - self.stats.threads)
        self._awake += spawn
        return spawn

    def _watch_progress(self) -> None:
        """In ``STALL`` s, wake more threads if no queued job has started by then."""
        self._seen_started = self.stats.started
        self._stall_check = self._reactor.callLater(STALL, self._check_progress)

    def _check_progress(self) -> None:
        """Jobs are queued: if none started since the last check, the awake threads block."""
        self._stall_check = None
        started = self.stats.started
        with self._lock:
            queued = len(self._jobs)
            spawn = self._wake(queued) if queued and started == self._seen_started else 0
        for _ in range(spawn):
            self._spawn(awake=True)
        if queued and (self._parked or self.stats.threads < self.stats.max_threads):
            self._watch_progress()

    # -- stuck threads

    def overdue(self, job) -> None:
        """``job`` passed its deadline (its client got 504): it no longer counts as progress.

        Ignored unless a pool thread runs ``job`` now (a queued job never runs).
        """
        with self._lock:
            if any(running is job for running in self._busy.values()):
                self._overdue.add(job)
        self._check_stuck()

    def _overdue_ended(self) -> None:
        """An overdue job returned (posted by its thread): the pool is not all stuck any more."""
        self._check_stuck()

    def _all_stuck(self) -> bool:
        with self._lock:
            return len(self._overdue) >= self.stats.max_threads

    def _check_stuck(self) -> None:
        """Start the stuck timer when every thread became overdue, cancel it when one is not."""
        stuck = self._all_stuck()
        if stuck and self._stuck_timer is None:
            if self.stuck_after is not None and self.running and not self._stopping and not self._stuck_reported:
                self._stuck_timer = self._reactor.callLater(self.stuck_after, self._stuck_too_long)
        elif not stuck and self._stuck_timer is not None:
            self._cancel_stuck_timer()

    def _cancel_stuck_timer(self) -> None:
        if self._stuck_timer is not None and self._stuck_timer.active():
            self._stuck_timer.cancel()
        self._stuck_timer = None

    def _stuck_too_long(self) -> None:
        """Every thread has been overdue for ``stuck_after`` s: log the stacks, ask for replacement."""
        self._stuck_timer = None
        if not self.running or self._stopping or self._stuck_reported:
            return
        with self._lock:
            stuck = [(ident, job) for ident, job in self._busy.items() if job in self._overdue]
        if len(stuck) < self.stats.max_threads:
            return  # a thread returned; its notice is still on the way
        self._stuck_reported = True
        self.stats.stuck_replacements += 1
        names = {thread.ident: thread.name for thread in self._threads}
        for ident, job in stuck:
            describe = getattr(job, "describe", None)
            log.error(
                "pool {pool}: thread {thread} has been past its deadline ({job}) while every thread"
                " of the pool was, for {seconds:g}s; it is at:\n{stack}",
                pool=self.label, thread=names.get(ident, ident), job=describe() if describe else repr(job),
                seconds=self.stuck_after, stack=self.stack_of(ident),
            )
        if self.on_stuck is not None:
            self.on_stuck(self, f"stuck pool {self.label}")

    def stopService(self) -> defer.Deferred:
        """Stop after the queued jobs; fire when the threads are gone or STOP_GRACE passed."""
        super().stopService()
        self._stopping = True
        self._cancel_stuck_timer()
        self._stopped = stopped = defer.Deferred()
        alive = [thread for thread in self._threads if thread.is_alive()]
        if not alive:
            stopped.callback(None)
            return stopped
        if self._stall_check is not None and self._stall_check.active():
            self._stall_check.cancel()
        self._stall_check = None
        with self._lock:
            self._jobs.extend(_STOP for _ in alive)  # after the queued jobs
            self._wake(len(self._parked))
        deadline = self._reactor.callLater(STOP_GRACE, self._abandon)

        def cancel_deadline(result):
            if deadline.active():
                deadline.cancel()
            return result

        return stopped.addBoth(cancel_deadline)

    def stack_of(self, thread_id: int | None) -> str:
        """The current stack of a pool thread, for logs about stuck requests."""
        frame = sys._current_frames().get(thread_id) if thread_id else None
        return "".join(traceback.format_stack(frame)) if frame is not None else "(not running)"

    def _spawn(self, awake: bool) -> None:
        """Start a thread; ``awake`` when it was counted in ``_awake`` for queued work."""
        if not awake:
            with self._lock:
                self._awake += 1
        thread = threading.Thread(
            target=self._work, name=f"wsgi-{self.label}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        self.stats.threads += 1
        thread.start()

    def _thread_exited(self, thread) -> None:
        self.stats.threads -= 1
        self._threads.remove(thread)
        if self._stopped is not None and not self._threads and not self._stopped.called:
            self._stopped.callback(None)

    def _abandon(self) -> None:
        for thread in self._threads:
            log.warn(
                "pool {pool}: thread {thread} still busy at stop, abandoned:\n{stack}",
                pool=self.label, thread=thread.name, stack=self.stack_of(thread.ident),
            )
        if not self._stopped.called:
            self._stopped.callback(None)

    # -- pool threads

    def _work(self) -> None:
        stats, lock, jobs, parked = self.stats, self._lock, self._jobs, self._parked
        busy, overdue = self._busy, self._overdue
        ident = threading.get_ident()
        bell = threading.Lock()  # held while parked; whoever unparks us releases it
        bell.acquire()
        while True:
            with lock:
                if jobs:
                    job = jobs.popleft()
                    if job is _STOP:
                        self._awake -= 1
                    else:
                        stats.started += 1
                        busy[ident] = job
                else:
                    job = None
                    self._awake -= 1
                    parked.append(bell)
            if job is None:
                bell.acquire()  # counted awake again by the waker
                continue
            if job is _STOP:
                break
            wait = time.monotonic() - job.queued_at
            stats.queue_wait_total += wait  # only pool threads write these two
            if wait > stats.queue_wait_max:
                stats.queue_wait_max = wait
            job.queue_wait, job.thread_id = wait, ident
            try:
                job.run()
            except BaseException:
                log.failure("pool {pool}: job {job!r} failed", pool=self.label, job=job)
            with lock:
                stats.completed += 1
                del busy[ident]
                was_overdue = bool(overdue) and job in overdue
                if was_overdue:
                    overdue.discard(job)
            if was_overdue:
                self.mailbox.post(self._overdue_ended)
        self.mailbox.post(self._thread_exited, threading.current_thread())
