"""twistd integration: daemon mode with --pidfile, systemd socket activation, --uid/--gid.

The server is started the way operators start it (no conftest ``--listen``):
as a daemon, under a simulated systemd that hands over a bound socket as fd 3,
or as root dropping to ``nobody`` after binding a privileged port.
"""

from __future__ import annotations

import http.client
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import TWISTD, free_port, wait_for_port, write_site
from test_lifecycle import SLOW, get, wait_for_text, wait_until
from test_workers import children, serving_pids


def site_for(folder: Path, listen: str, workers: int) -> Path:
    write_site(folder, SLOW, "slow.py")
    return write_site(folder, f"""
        from twisthost import Resource, Site
        site = Site(listen=[{listen!r}], default=Resource("slow:make()"), workers={workers})
        """)


def gone(pid: int) -> bool:
    """No such process, or only a zombie left for its (non-reaping) parent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_daemon_mode_pidfile_holds_the_master_and_term_stops_it(tmp_path):
    port = free_port()
    config = site_for(tmp_path, f"tcp:{port}:interface=127.0.0.1", workers=2)
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    started = subprocess.run(
        [TWISTD, f"--pidfile={pidfile}", f"--logfile={logfile}", "twisthost", "--config", str(config)],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert started.returncode == 0, started.stderr  # the launcher returns once the daemon runs
    pid = int(pidfile.read_text())
    try:
        wait_for_text(logfile, "worker(s) ready", timeout=30)
        workers = children(pid)
        assert len(workers) == 2 and pid not in workers
        assert set(serving_pids(port)) <= workers  # the pidfile's process is the master
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: gone(pid), timeout=15, what="the daemon to exit")
    log = logfile.read_text()
    assert not pidfile.exists()
    assert log.count("stopped (exit status 0)") == 2 and "Server Shut Down." in log
    assert "Traceback" not in log


# Stands in for systemd: the bound socket arrives as fd 3, LISTEN_PID names the
# process that reads it (twistd itself, hence exec rather than a child).
SYSTEMD = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid());"
    " os.execv(sys.argv[2], sys.argv[2:])"
)


@pytest.mark.parametrize("workers", [1, 2])
def test_systemd_socket_activation(tmp_path, workers):
    config = site_for(tmp_path, "systemd:domain=INET:index=0", workers)
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "twisthost.socket"}
    with open(tmp_path / "twistd.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", SYSTEMD, str(listening.fileno()),
             TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=[listening.fileno()],
        )
    listening.close()  # only the server holds it now
    try:
        if workers > 1:
            wait_for_text(tmp_path / "twistd.log", "worker(s) ready", timeout=30)
        pids = serving_pids(port, count=20)
        assert set(pids) <= (children(proc.pid) if workers > 1 else {proc.pid})
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, (tmp_path / "twistd.log").read_text()


def privileged_port() -> int:
    for port in range(1023, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


def uid_of(pid: int) -> tuple[int, int]:
    """(real, effective) uid of a process."""
    with open(f"/proc/{pid}/status") as status:
        fields = next(line for line in status if line.startswith("Uid:")).split()
    return int(fields[1]), int(fields[2])


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@pytest.fixture
def folder():
    """A folder nobody can read and write (tmp_path's parents are closed to others)."""
    path = Path(tempfile.mkdtemp(prefix="twisthost-uid-"))
    os.chown(path, pwd.getpwnam("nobody").pw_uid, pwd.getpwnam("nobody").pw_gid)
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def start_as_nobody(folder: Path, workers: int, preexec_fn=None) -> tuple[subprocess.Popen, int]:
    """twistd started as root with --uid/--gid nobody on a privileged port."""
    port = privileged_port()
    config = site_for(folder, f"tcp:{port}:interface=127.0.0.1", workers)
    with open(folder / "twistd.log", "wb") as log:
        proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "--uid=nobody", "--gid=nogroup", "twisthost", "--config", str(config)],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
        )
    return proc, port


@needs_root
@pytest.mark.parametrize("workers", [1, 2])
def test_uid_gid_drop_privileges_after_binding_a_privileged_port(folder, workers):
    # Workers are forked, not exec'd: they start even where nobody cannot execute the interpreter.
    nobody = pwd.getpwnam("nobody").pw_uid
    proc, port = start_as_nobody(folder, workers)
    try:
        wait_for_port(port, proc)
        if workers > 1:
            wait_for_text(folder / "twistd.log", "worker(s) ready", timeout=30)
        servers = set(serving_pids(port, count=20))
        assert servers and all(uid_of(pid) == (nobody, nobody) for pid in servers)
        assert uid_of(proc.pid) == (nobody, nobody)  # the master too, after binding
        assert get(port)[0] == 200
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, (folder / "twistd.log").read_text()


@needs_root
def test_a_worker_that_cannot_be_started_is_retried_and_stop_stays_clean(folder):
    # Root ignores RLIMIT_NPROC; once twistd runs as nobody, fork fails (nobody owns the master).
    proc, port = start_as_nobody(folder, workers=2,
                                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (1, 1)))
    log = folder / "twistd.log"
    try:
        wait_for_port(port, proc)  # the master bound it; no worker can start to answer
        text = wait_for_text(log, "trying again in 1s", timeout=15)  # the backoff grows
        assert "cannot start a worker ([Errno 11] Resource temporarily unavailable" in text and "trying again in 0.5s" in text
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("option, reactor", [
    ((), "twisthost.reactor.HostReactor"),
    (("--reactor=epoll",), "twisted.internet.epollreactor.EPollReactor"),
    (("--reactor=poll",), "twisted.internet.pollreactor.PollReactor"),
])
def test_the_reactor_is_ours_unless_twistd_is_told_otherwise(option, reactor):
    """``HostReactor`` by default (twisthost.reactor); ``--reactor`` before the subcommand wins.
    Either way the host serves, a proxied request included."""
    from proxy_upstream import Upstream

    upstream = Upstream("r")
    port = free_port()
    site = write_site(Path(tempfile.mkdtemp(prefix="twisthost-reactor-")), f"""
        from twisthost import Host, Proxy, Redirect, Site
        site = Site(listen=["tcp:{port}:interface=127.0.0.1"],
                    hosts=[Host("r.test", Redirect("/to")), Host("p.test", Proxy({upstream.url!r}))])
        """)
    log = site.parent / "twistd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([TWISTD, *option, "-n", "--pidfile=", "twisthost", "--config", str(site)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=site.parent)
    try:
        wait_for_port(port, proc)
        for host, status in (("r.test", 301), ("p.test", 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/x", headers={"Host": host})
            assert conn.getresponse().status == status
            conn.close()
        assert f"reactor class: {reactor}." in log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
        upstream.stop()


def test_listen_dropping_the_tls_listener_warns_about_the_https_redirects(tmp_path, serve):
    """``--listen`` (the serve fixture always gives one) replaces the config's TLS listener
    too; hosts with https_redirect still send clients to its port: said once at start."""
    from conftest import ROOT
    tls = ROOT / "examples" / "tls"
    server = serve(f"""
        from twisthost import TLS, Host, Redirect, Site
        site = Site(listen=["tcp:8080", TLS("tcp:8443", cert={str(tls / "localhost.pem")!r},
                                            key={str(tls / "localhost.key")!r})],
                    hosts=[Host("secure.localhost", Redirect("/x"), https_redirect=True),
                           Host("plain.localhost", Redirect("/x"))])
    """)
    status, headers, _ = server.request(host="secure.localhost")
    assert status == 308 and headers["Location"] == "https://secure.localhost:8443/"  # still
    log = server.log()
    assert log.count("--listen replaces every listener of the config, its TLS ones too") == 1
    assert "secure.localhost to port 8443" in log and "plain.localhost" not in log


@needs_root
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("daemon", [False, True], ids=["foreground", "daemon"])
def test_the_pidfile_is_removed_at_stop_after_uid_dropped_root(folder, tmp_path, workers, daemon):
    """The pidfile's folder is root's (like /run): twistd, as nobody by then, could not remove it."""
    tmp_path.chmod(0o755)  # nobody may read it, not write it
    pidfile, logfile = tmp_path / "twistd.pid", folder / "twistd.log"
    port = privileged_port()
    config = site_for(folder, f"tcp:{port}:interface=127.0.0.1", workers)
    command = [TWISTD, *([] if daemon else ["-n"]), f"--pidfile={pidfile}", f"--logfile={logfile}",
               "--uid=nobody", "--gid=nogroup", "twisthost", "--config", str(config)]
    proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if daemon:
        assert proc.wait(30) == 0  # the launcher returns once the daemon runs
    wait_for_port(port)
    if workers > 1:
        wait_for_text(logfile, "worker(s) ready", timeout=30)
    server = int(pidfile.read_text())
    assert server == (proc.pid if not daemon else server) and uid_of(server) == (pwd.getpwnam("nobody").pw_uid,) * 2
    assert get(port)[0] == 200
    os.kill(server, signal.SIGTERM)
    wait_until(lambda: gone(server), timeout=15, what="the server to exit")
    if not daemon:
        assert proc.wait(15) == 0
    assert not pidfile.exists()
    log = logfile.read_text()
    assert "No permission to delete pid file" not in log and "Traceback" not in log
    assert "Server Shut Down." in log


def test_a_port_in_use_is_one_located_line_and_nothing_opens(tmp_path):
    """Before: a ~40-line Twisted traceback, after the admin listener had opened."""
    admin = free_port()
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        write_site(tmp_path, SLOW, "slow.py")
        config = write_site(tmp_path, f"""
            from twisthost import Resource, Site
            site = Site(
                admin="tcp:{admin}:interface=127.0.0.1",
                listen=["tcp:{port}:interface=127.0.0.1"],
                default=Resource("slow:make()"),
            )
        """)
        ran = subprocess.run([TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.splitlines() == [
        f"{config}:4: error: cannot listen on 127.0.0.1:{port}: address already in use",
        f"  hint: process {os.getpid()} ({' '.join(open(f'/proc/{os.getpid()}/cmdline').read().split(chr(0))).strip()[:120]}) holds it: stop it, or choose another port",
    ]
    assert "Starting factory" not in ran.stdout and "Traceback" not in ran.stdout + ran.stderr


def test_systemd_activation_without_fdnames_is_one_clear_error(tmp_path):
    """Before: an IndexError traceback from Twisted's systemd endpoint parser."""
    config = site_for(tmp_path, "systemd:domain=INET:index=0", workers=1)
    listening = socket.create_server(("127.0.0.1", 0))
    env = {**os.environ, "LISTEN_FDS": "1"}
    env.pop("LISTEN_FDNAMES", None)
    try:
        ran = subprocess.run(
            [sys.executable, "-c", SYSTEMD, str(listening.fileno()),
             TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, pass_fds=[listening.fileno()])
    finally:
        listening.close()
    assert ran.returncode == 1
    error, hint = ran.stderr.splitlines()
    assert error == (f"{tmp_path / 'site.py'}:2: error: cannot listen on systemd:domain=INET:index=0: systemd "
                     "passed 1 socket(s) without LISTEN_FDNAMES, which Twisted needs to use any of them")
    assert hint.startswith("  hint: systemd 227 and later set it")
    assert "Traceback" not in ran.stdout + ran.stderr
