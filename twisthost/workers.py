"""Worker processes: use every core, reload without dropping a request.

Python serves one core per process, so ``Site(workers=N)`` runs a master and
N workers.  The master binds every listener once (so privileged ports work
with twistd's ``--uid/--gid``), then stops reading from them: it never
accepts a connection.  Each worker is forked from the master (no exec, see
``ForkedWorker``), inherits the listening sockets as file descriptors and
adopts them (``acceptshare.SharedSocketEndpoint``), so all workers accept
from one kernel queue, taking turns by load (``acceptshare.ConnectionBoard``).
Because the master holds the sockets, a worker that dies or retires
loses no queued connection: the others (or its replacement) accept it.  See
``docs/design.md`` ("Process model") for why one shared queue rather than
``SO_REUSEPORT``.

The master restarts workers that die (backing off when they crash-loop),
replaces them gracefully on reload (new ones up first), when they reach
``max_requests`` or ``max_rss``, or when a WSGI pool of theirs is stuck
(``HostService.pool_stuck``), and forwards signals.  Workers talk back on
one pipe (fd 3) with one-line messages: ``ready`` and ``recycle <why>``.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import pickle
import random
import signal
import sys
import traceback

from twisted.application.service import Service
from twisted.internet import defer, endpoints, process, protocol, task
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.main import installReactor
from twisted.logger import FileLogObserver, Logger, eventAsText, globalLogPublisher
from twisted.python.failure import Failure

from . import fanin, graceful, sdnotify
from ._compat import log_observers
from .acceptshare import ConnectionBoard, SharedSocketEndpoint
from .admin import admin_endpoint
from .errors import ConfigError
from .hooks import run_hook
from .importing import forget_site_modules
from .loader import load
from .procinfo import rss_mib
from .service import HostService, Prepared, on_signals, prepare, reopen_log_files, socket_description

log = Logger()

CONTROL_FD = 3  # worker -> master messages
FIRST_SOCKET_FD = 4  # the listening sockets follow, one fd each
QUICK_DEATH = 5.0  # a worker dying sooner than this after its start is crash-looping
MAX_BACKOFF = 30.0
KILL_AFTER = 2.0  # seconds past graceful_timeout before a worker is SIGKILLed (they exit by then)
RSS_INTERVAL = 5.0


# ------------------------------------------------------------------------- master


def prepare_master(path: str, site=None) -> Prepared:
    """The master's ``prepare``: run site.py here, but build it only in a forked child.

    The master needs the ``Site`` (listeners, worker counts, hooks), not the
    built tree: it never serves.  Building imports the apps, and what an
    import does to modules the master keeps (a metric registered in
    prometheus_client's default registry, logging handlers on files, threads
    started) would be inherited by every forked worker, which then imports
    the app again: a duplicate registration, a handler on a descriptor the
    fork closed, a lock held by a thread the fork did not copy.  So the
    build is checked in a throwaway child and the master stays as it was
    before any app was imported.  ``context`` and ``root`` stay None.
    """
    site = load(path) if site is None else site
    _check_build_in_child(path)
    return Prepared(path, site, None, None)


def _check_build_in_child(path: str) -> None:
    """Build ``path`` in a forked child; raise its ConfigError (or crash) here."""
    read, write = os.pipe()
    with _forking():
        pid = os.fork()
        if pid == 0:
            os._exit(_build_and_report(path, write))  # signals stay blocked until then
    os.close(write)
    with open(read, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    if report:
        kind, detail = pickle.loads(report)
        raise detail if kind == "config" else RuntimeError(detail)
    if status:
        code = os.waitstatus_to_exitcode(status)
        why = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        raise RuntimeError(f"the process building the config ended ({why})")


def _build_and_report(path: str, write: int) -> int:
    """In the checking child: build, report a failure on ``write``; the exit status."""
    try:
        prepare(path)
        return 0
    except ConfigError as error:
        report = ("config", error)  # every mistake found, not only the first
    except BaseException as error:  # an app's import can raise anything
        report = ("crash", f"{type(error).__name__}: {error}")
    with open(write, "wb") as pipe:
        pipe.write(pickle.dumps(report))
    return 1


@contextlib.contextmanager
def _forking():
    """Around a fork: flush stdio and hold signals, which the child must not handle as the master.

    The master's handlers write to its reactor's wakeup pipe and arm its
    exit timer, both shared with a child until it replaces them; a signal
    held here reaches the master after the fork, and the child once it has
    its own handlers (a worker) or never (the build check).
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else the child writes the master's buffered output a second time
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class _NeverAccepts(protocol.ServerFactory):
    """The master's sockets are paused at once: workers accept, never the master."""

    noisy = False


def bind(reactor, description: str):
    """Listen on ``description`` with a paused port and return it."""
    outcome = []
    endpoints.serverFromString(reactor, description).listen(_NeverAccepts()).addBoth(outcome.append)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    port = outcome[0]
    port.stopReading()
    return port


class Worker(protocol.ProcessProtocol):
    """The master's view of one worker process."""

    def __init__(self, master: "Master", generation: int, replaces: "Worker | None" = None):
        self.master = master
        self.generation = generation
        self.replaces = replaces  # an older worker to retire once this one is ready
        self.started = master.reactor.seconds()
        self.pid = None  # set at spawn; kept after exit for the log lines
        self.ready = False
        self.retiring = False
        self.ended: defer.Deferred = defer.Deferred()
        self.seat = None  # its counter on the master's ConnectionBoard
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        *lines, self._partial[fd] = (self._partial.get(fd, b"") + data).split(b"\n")
        for line in lines:
            self._line(fd, line.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, fd: int, text: str) -> None:
        if fd == CONTROL_FD:
            self.master.message(self, text)
        elif text:
            log.info("worker {pid}: {line}", pid=self.pid, line=text)

    def signal(self, signum: int) -> None:
        try:
            self.transport.signalProcess(signum)
        except (ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._line(fd, rest.decode("utf-8", "replace"))
        self.master.worker_ended(self, reason.value)
        self.ended.callback(None)


def _status(reason) -> str:
    if getattr(reason, "signal", None):
        return f"killed by signal {signal.Signals(reason.signal).name}"
    return f"exit status {getattr(reason, 'exitCode', 0)}"


class Master(Service):
    """Binds the sockets, keeps ``Site(workers=N)`` workers running, never serves."""

    def __init__(self, prepared, listen=None, reactor=None, admin=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.current = prepared
        self.pending = None  # the Prepared a reload is rolling out
        self.fixed_listen = tuple(listen) if listen else None
        self.sockets: dict = {}  # endpoint string -> paused Port, shared with workers
        self.workers: list[Worker] = []
        self.board = ConnectionBoard()  # shared with the workers: who takes new connections
        self.target = prepared.site.workers
        self.generation = 0
        self.backoff = 0.0
        self.fast_stop = False
        self.stopping = False
        self.announced = False
        self._later: list = []
        self._rss = task.LoopingCall(self.check_rss)
        self._rss.clock = reactor
        self.admin = None  # before any spawn: workers inherit its metrics folder
        endpoint = admin_endpoint(admin, prepared.site)
        if endpoint:
            self.admin = fanin.MasterAdmin(
                endpoint, prepared.site.admin_token, lambda: self.current,
                lambda: [w.pid for w in self.workers], reactor,
            )

    def descriptions(self, site) -> list[str]:
        return [socket_description(item) for item in self.fixed_listen or site.listen]

    # -- start

    def privilegedStartService(self) -> None:
        run_hook(self.current.site, "on_starting", self.current.site)
        self.install_signals()  # before the sockets open, like a single process
        for description in self.descriptions(self.current.site):
            self.sockets[description] = bind(self.reactor, description)
        if self.admin:
            self.admin.service.privilegedStartService()
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        if self.admin:
            self.admin.service.startService()
        self.reactor.callWhenRunning(self._running)

    def install_signals(self) -> None:
        # The master runs hooks (user code) too: it ends soon after its workers at the latest.
        last_resort = graceful.LastResort()
        on_signals(self.reactor, {
            signal.SIGHUP: self.reload,
            signal.SIGTERM: self.reactor.stop,
            signal.SIGINT: self.stop_fast,
            signal.SIGQUIT: self.stop_fast,
            signal.SIGUSR1: self.reopen,
            signal.SIGTTIN: lambda: self.resize(+1),
            signal.SIGTTOU: lambda: self.resize(-1),
        }, at_once=lambda signum: last_resort.on_signal(signum, self.current.site.graceful_timeout, KILL_AFTER))

    def _running(self) -> None:
        log.info("master {pid}: starting {n} worker(s)", pid=os.getpid(), n=self.target)
        self.collect_garbage()
        self.maintain()
        if self.current.site.max_rss:
            self._rss.start(RSS_INTERVAL, now=False)

    def spawn(self, prepared=None, replaces: Worker | None = None) -> Worker | None:
        """Start a worker; None (logged, backoff raised) when the OS refuses.

        E.g. after ``--uid`` the interpreter may not be executable any more,
        or fork hits a process limit: the caller retries later.
        """
        prepared = prepared or self.current
        site = prepared.site
        worker = Worker(self, self.generation, replaces)
        child_fds = {0: "w", 1: "r", 2: "r", CONTROL_FD: "r"}
        sockets = {}
        for offset, (description, port) in enumerate(self.sockets.items()):
            child_fds[FIRST_SOCKET_FD + offset] = port.fileno()
            sockets[description] = [FIRST_SOCKET_FD + offset, int(port.socket.family)]
        max_requests = site.max_requests and site.max_requests + random.randint(0, site.max_requests_jitter)
        worker.seat = seat = self.board.take_seat()
        try:
            worker.pid = ForkedWorker(
                self.reactor, worker, child_fds,
                lambda: become_worker(prepared.path, sockets, max_requests, seat),
            ).pid
        except OSError as error:
            self.board.release(seat)
            self.backoff = min(MAX_BACKOFF, max(0.5, self.backoff * 2))
            log.error("cannot start a worker ({error}): trying again in {delay:g}s", error=error, delay=self.backoff)
            return None
        self.workers.append(worker)
        return worker

    def collect_garbage(self) -> None:
        """Free the master's garbage before forking a new generation of workers (see ``ForkedWorker``)."""
        gc.unfreeze()
        gc.collect()

    def serving(self) -> list[Worker]:
        """Workers of the current generation that are not on their way out."""
        return [w for w in self.workers if w.generation == self.generation and not w.retiring
                and not (w.replaces and not w.ready)]

    def maintain(self) -> None:
        """Start workers until ``target`` serve (the backoff delays restarts of crashing ones)."""
        if self.stopping or self.pending:
            return
        for _ in range(self.target - len(self.serving())):
            if self.spawn() is None:
                self.later(self.backoff, self.maintain)
                return

    def later(self, delay: float, function, *args) -> None:
        self._later = [call for call in self._later if call.active()]
        self._later.append(self.reactor.callLater(delay, function, *args))

    # -- worker messages and deaths

    def message(self, worker: Worker, text: str) -> None:
        command, _, detail = text.partition(" ")
        if command == "ready":
            self.worker_ready(worker)
        elif command == "recycle" and not worker.retiring and not self.stopping:
            if any(w.replaces is worker for w in self.workers):
                return
            log.info("worker {pid} reached {why}: starting its replacement", pid=worker.pid, why=detail)
            self.replace(worker)

    def worker_ready(self, worker: Worker) -> None:
        worker.ready = True
        if worker.replaces is not None:
            self.retire(worker.replaces)
            worker.replaces = None
        if self.pending is not None:
            if all(w.ready for w in self.workers if w.generation == self.generation):
                self.finish_reload()
        elif not self.announced and len([w for w in self.serving() if w.ready]) >= self.target:
            self.announced = True
            log.info("master {pid}: {n} worker(s) ready", pid=os.getpid(), n=self.target)
            sdnotify.notify("READY=1", f"MAINPID={os.getpid()}")
            run_hook(self.current.site, "when_ready", self.current.site)

    def retire(self, worker: Worker, signum: int = signal.SIGTERM) -> None:
        """Stop a worker gracefully; SIGKILL it if it outlives graceful_timeout."""
        worker.retiring = True
        worker.signal(signum)
        grace = 0.0 if signum != signal.SIGTERM else self.current.site.graceful_timeout
        self.later(grace + KILL_AFTER, self._kill, worker)

    def _kill(self, worker: Worker) -> None:
        if not worker.ended.called:
            log.warn("worker {pid} outlived its graceful timeout: killing it", pid=worker.pid)
            worker.signal(signal.SIGKILL)

    def worker_ended(self, worker: Worker, reason) -> None:
        self.workers.remove(worker)
        self.board.release(worker.seat)
        if self.admin:
            self.admin.worker_ended(worker.pid)
        status = _status(reason)
        if worker.retiring or self.stopping:
            log.info("worker {pid} stopped ({status})", pid=worker.pid, status=status)
            return
        if self.pending is not None and worker.generation == self.generation and not worker.ready:
            self.abort_reload(f"a new worker exited before it was ready ({status})")
            return
        if self.admin:
            self.admin.metrics.worker_restarts.inc()
        lived = self.reactor.seconds() - worker.started
        if lived < QUICK_DEATH:
            self.backoff = min(MAX_BACKOFF, max(0.5, self.backoff * 2))
            log.error(
                "worker {pid} died {lived:.1f}s after starting ({status}): restarting in {delay:g}s"
                " (backing off while it keeps crashing)",
                pid=worker.pid, lived=lived, status=status, delay=self.backoff,
            )
        else:
            self.backoff = 0.0
            log.error("worker {pid} died ({status}): restarting it", pid=worker.pid, status=status)
        if worker.replaces is not None and not worker.replaces.retiring:
            self.later(self.backoff, self.replace, worker.replaces)
        else:
            self.later(self.backoff, self.maintain)

    def replace(self, old: Worker) -> None:
        if old in self.workers and not old.retiring and not self.stopping:
            if self.spawn(replaces=old) is None:
                self.later(self.backoff, self.replace, old)

    # -- signals

    def resize(self, change: int) -> None:
        """TTIN/TTOU: one worker more or less (never below one)."""
        if self.target + change < 1:
            log.info("TTOU ignored: keeping the last worker")
            return
        self.target += change
        log.info("now {n} worker(s)", n=self.target)
        if change < 0 and self.serving():
            self.retire(self.serving()[0])
        else:
            self.maintain()

    def reopen(self) -> None:
        reopen_log_files()
        for worker in self.workers:
            worker.signal(signal.SIGUSR1)

    def check_rss(self) -> None:
        limit = self.current.site.max_rss
        for worker in self.serving():
            mib = rss_mib(worker.pid)
            if mib is not None and mib > limit and worker.ready:
                self.message(worker, f"recycle max_rss ({mib:.0f} MiB > {limit} MiB)")

    # -- reload

    def reload(self) -> None:
        """Load + build the config again; start new workers on it, then retire the old."""
        if self.pending is not None or self.stopping:
            log.warn("reload ignored: another reload or a stop is in progress")
            return
        sdnotify.reloading()
        try:
            new = prepare_master(self.current.path)
            for description in self.descriptions(new.site):
                if description not in self.sockets:
                    self.sockets[description] = bind(self.reactor, description)
                    log.info("reload: listening on {d}", d=description)
        except Exception as error:
            message = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            log.error("reload failed, keeping the running config: {error}", error=message)
            if self.admin:
                self.admin.metrics.reloaded(False, message)
            self.close_unused_sockets(self.current.site)
            sdnotify.notify("READY=1")
            return
        self.pending = new
        self.generation += 1
        self.collect_garbage()  # the config the last reload replaced, before forking on this one
        self.target = new.site.workers
        log.info("reload: starting {n} new worker(s)", n=self.target)
        for _ in range(self.target):
            if self.spawn(new) is None:
                self.abort_reload("a new worker could not be started")
                return

    def finish_reload(self) -> None:
        old = [w for w in self.workers if w.generation != self.generation]
        for worker in old:
            self.retire(worker)
        self.current, self.pending = self.pending, None
        self.close_unused_sockets(self.current.site)
        log.info("reloaded {path}: new workers ready, {n} old worker(s) stopping",
                 path=self.current.path, n=len(old))
        sdnotify.notify("READY=1")
        if self.admin:
            self.admin.metrics.reloaded(True, self.current.path)
        run_hook(self.current.site, "on_reload", self.current.site)
        self.maintain()  # TTIN/TTOU during the reload

    def abort_reload(self, why: str) -> None:
        log.error("reload failed, keeping the running workers: {why}", why=why)
        for worker in [w for w in self.workers if w.generation == self.generation]:
            self.retire(worker, signal.SIGINT)
        self.pending = None
        self.generation -= 1
        self.target = self.current.site.workers
        self.close_unused_sockets(self.current.site)
        sdnotify.notify("READY=1")

    def close_unused_sockets(self, site) -> None:
        wanted = set(self.descriptions(site))
        for description in [d for d in self.sockets if d not in wanted]:
            self.sockets.pop(description).stopListening()
            log.info("closed listener {d}", d=description)

    # -- stop

    def stop_fast(self) -> None:
        self.fast_stop = True
        self.reactor.stop()

    def stopService(self) -> defer.Deferred:
        """TERM: workers finish their requests (up to graceful_timeout); INT/QUIT: at once."""
        super().stopService()
        self.stopping = True
        sdnotify.notify("STOPPING=1")
        if self._rss.running:
            self._rss.stop()
        for call in self._later:
            if call.active():
                call.cancel()
        signum = signal.SIGINT if self.fast_stop else signal.SIGTERM
        log.info("master: stopping {n} worker(s) with {sig}", n=len(self.workers), sig=signal.Signals(signum).name)
        for worker in [w for w in self.workers if self.fast_stop or not w.retiring]:
            self.retire(worker, signum)
        stopped = defer.DeferredList([w.ended for w in self.workers])
        stopped.addBoth(lambda _: defer.DeferredList([p.stopListening() for p in self.sockets.values()]))
        stopped.addBoth(lambda _: run_hook(self.current.site, "on_exit", self.current.site))
        if self.admin:
            stopped.addBoth(lambda _: self.admin.stop())
        return stopped


# ------------------------------------------------------------------------- worker


class WorkerService(HostService):
    """A ``HostService`` on the master's sockets; it reports to the master on fd 3."""

    standalone = False

    def __init__(self, prepared, sockets: dict, max_requests: int = 0, reactor=None, seat=None):
        self.sockets = sockets  # endpoint string -> (fd, address family)
        self.seat = seat  # this worker's acceptshare.Seat, or None: accept unbalanced
        self.max_requests = max_requests
        self._recycling = False
        configured = [i for i in prepared.site.listen if socket_description(i) in sockets]
        covered = {socket_description(i) for i in configured}
        listen = configured + [d for d in sockets if d not in covered]  # twistd --listen
        super().__init__(prepared, listen=listen, reactor=reactor)
        if max_requests:
            self.factory.connections.request_observers.append(self._count)
        self._parent = os.getppid()
        self._orphan_check = task.LoopingCall(self._check_parent)
        self._orphan_check.clock = self.reactor

    def endpoint(self, description: str):
        fd, family = self.sockets[description]
        if self.seat is None:
            return endpoints.AdoptedStreamServerEndpoint(self.reactor, fd, family)
        return SharedSocketEndpoint(self.reactor, fd, family, self.seat,
                                    lambda: len(self.factory.connections.open))

    def running_now(self) -> None:
        super().running_now()
        self.tell("ready")
        self._orphan_check.start(1.0, now=False)

    def stopService(self) -> defer.Deferred:
        if self._orphan_check.running:
            self._orphan_check.stop()
        if self.seat is not None:
            self.seat.leave()  # draining: the others take new connections
        return super().stopService()

    def tell(self, message: str) -> None:
        os.write(CONTROL_FD, message.encode() + b"\n")

    def pool_stuck(self, pool, why: str) -> None:
        """A stuck pool: ask the master for a replacement, as ``max_requests`` does.

        The master starts a new worker and, once it is ready, stops this one
        with TERM: the requests in flight on other routes finish.
        """
        if self.replacing or not self.running:
            return
        self.replacing = True
        log.error(
            "{why}: every thread has been past its deadline for {timeout:g}s;"
            " asking the master to replace worker {pid}",
            why=why, timeout=self.current.site.graceful_timeout, pid=os.getpid(),
        )
        self._recycling = True
        self.tell(f"recycle {why}")

    def _count(self, request) -> None:
        if not self._recycling and self.factory.connections.requests >= self.max_requests:
            self._recycling = True
            self.tell(f"recycle max_requests ({self.max_requests})")

    def _check_parent(self) -> None:
        if os.getppid() != self._parent:
            log.warn("the master is gone: stopping")
            self.reactor.stop()


class ForkedWorker(process.Process):
    """A worker process forked from the master without exec.

    Twisted's ``Process`` does the plumbing (pipes on fds 0-3, the listening
    sockets from fd 4, every other fd closed); instead of exec'ing a new
    interpreter the child runs ``run()`` and exits with what it returns.
    The child keeps the master's imported modules (Twisted, twisthost, the
    stdlib, pyOpenSSL: most of a worker's memory) in pages shared with the
    master until written, which roughly halves the tree's memory with two
    workers (docs/operations.md has the figures).

    ``gc.freeze()`` keeps both sides' garbage collectors from writing to
    the objects they share (a collection writes to every object it visits,
    which would copy every page).  The master stays frozen: only when it
    forks a new generation of workers (start, reload) does it collect first
    (``Master.collect_garbage``), since the workers it had are on their way out.
    """

    def __init__(self, reactor, protocol, child_fds: dict, run):
        self._run = run
        gc.freeze()
        with _forking():
            super().__init__(reactor, sys.executable, [sys.executable], None, None, protocol, childFDs=child_fds)

    def _trySpawnInsteadOfFork(self, *args) -> bool:
        return False  # posix_spawn execs

    def _resetSignalDisposition(self) -> None:
        """Keep Python's SIG_IGN of SIGPIPE (Twisted resets it for the exec that never comes).

        With the default action, a write to a closed pipe or socket would
        kill the worker instead of raising BrokenPipeError.
        """

    def _execChild(self, path, uid, gid, executable, args, environment) -> None:
        os._exit(self._run())  # never back into the master's code


#: The master's objects a forked worker leaves behind, kept alive: freeing
#: one could close a file descriptor number the fork closed and the worker
#: has since reused for something of its own.
_left_behind: list = []


def become_worker(path: str, sockets: dict, max_requests: int, seat=None) -> int:
    """In a child just forked from the master: serve as a worker; the exit status.

    The child leaves the master's state behind first: its signal handlers,
    atexit functions, child processes, log observers and reactor.  It
    installs a reactor of the same type and loads and builds the config
    itself, importing the site's code afresh (``forget_site_modules``).
    """
    try:
        signal.set_wakeup_fd(-1)  # the master's reactor's waker: closed in the child
        for signum in signal.valid_signals():
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signal.valid_signals())  # held by _forking
        atexit._clear()
        process.reapProcessHandlers.clear()  # the master's other workers
        os.environ.pop("NOTIFY_SOCKET", None)  # systemd hears from the master only
        observers = log_observers(globalLogPublisher)
        _left_behind.extend([sys.stdout, sys.stderr, *observers])
        for observer in observers:
            globalLogPublisher.removeObserver(observer)
        sys.stdout, sys.stderr = (
            io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), errors="backslashreplace", line_buffering=True)
            for fd in (1, 2)
        )
        if fanin.active_directory():
            fanin.enable(fanin.active_directory())  # new metric files, not the master's
        forget_site_modules()
        old_reactor = sys.modules.pop("twisted.internet.reactor")
        _left_behind.append(old_reactor)
        installReactor(type(old_reactor)())
        gc.enable()  # Twisted disables it around fork
        status = serve_worker(path, sockets, max_requests, seat)
    except BaseException:
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()  # the worker's own: the interpreter's exit will not run them
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return status


def serve_worker(path: str, sockets: dict, max_requests: int, seat=None) -> int:
    """Serve ``path`` on the master's ``sockets`` until stopped; the exit status."""
    for name in ("SIGHUP", "SIGTTIN", "SIGTTOU"):  # the master's signals, not ours
        signal.signal(getattr(signal, name), signal.SIG_IGN)

    from twisted.internet import reactor

    globalLogPublisher.addObserver(
        FileLogObserver(sys.stdout, lambda event: eventAsText(event, includeTimestamp=False) + "\n"))
    try:
        prepared = prepare(path, reactor)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return 1
    service = WorkerService(prepared, sockets, max_requests, reactor, seat)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()
    return 0
