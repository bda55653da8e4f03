"""Workers forked from the master behave like fresh processes for the app.

``Site(workers=N)`` forks its workers without exec.  What the fork can carry
over must not reach the app: the master's signal dispositions (Twisted resets
SIG_IGN for an exec that never comes), and the side effects of importing the
app in the master (a prometheus_client metric registered twice, a logging
FileHandler whose file descriptor the fork closed, a thread frozen mid-import).
Each test runs a real app pattern that works in a fresh interpreter and broke
in forked workers.
"""

from __future__ import annotations

import signal

from conftest import wait_until, write_site

SITE = """
    from twisthost import WSGI, Site
    site = Site(default=WSGI("app:app"), workers=2)
    """


def start(serve, tmp_path, app: str, **files):
    write_site(tmp_path, app, "app.py")
    for name, text in files.items():
        write_site(tmp_path, text, f"{name}.py")
    server = serve(SITE)
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    return server


def no_worker_died(server) -> None:
    assert " died " not in server.log(), server.log()


BROKEN_PIPE_APP = """
    import os

    def app(environ, start_response):
        read, write = os.pipe()  # like a helper process that exited before reading
        os.close(read)
        try:
            os.write(write, b"x")
            text = b"written"
        except BrokenPipeError:
            text = b"EPIPE"
        finally:
            os.close(write)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text]
    """


def test_a_broken_pipe_is_an_error_for_the_app_not_the_death_of_its_worker(serve, tmp_path):
    # Python ignores SIGPIPE; a forked worker must too (a CGI script that exits
    # without reading its body is the same write to a closed pipe).
    server = start(serve, tmp_path, BROKEN_PIPE_APP)
    for _ in range(4):
        assert server.request(timeout=5) [::2] == (200, b"EPIPE")
    no_worker_died(server)


PROMETHEUS_APP = """
    from prometheus_client import REGISTRY, Counter, generate_latest

    HITS = Counter("app_hits", "Requests the app saw")  # the default registry, at import

    def app(environ, start_response):
        HITS.inc()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [generate_latest(REGISTRY)]
    """


def test_an_app_that_registers_prometheus_metrics_at_import_serves(serve, tmp_path):
    # The master imports prometheus_client for itself; the app's metric must
    # not meet a registration the master made when it checked the config.
    server = start(serve, tmp_path, PROMETHEUS_APP)
    status, _, body = server.request(timeout=5)
    assert status == 200 and b"app_hits_total 1.0" in body
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded " in server.log(), what="reload")
    assert server.request(timeout=5)[0] == 200
    no_worker_died(server)


LOGGING_APP = """
    import logging.config
    import os

    logging.config.dictConfig({
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler",
                              "filename": os.path.join(os.path.dirname(__file__), "app.log")}},
        "root": {"handlers": ["file"], "level": "INFO"},
    })

    def app(environ, start_response):
        logging.info("hit %s", environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"logged"]
    """


def test_an_app_that_configures_file_logging_at_import_logs_each_request_once(serve, tmp_path):
    # dictConfig closes the handlers it replaces: in a forked worker those
    # were the master's, on descriptor numbers the worker uses for itself.
    server = start(serve, tmp_path, LOGGING_APP)
    for number in range(10):
        assert server.request(path=f"/?n={number}", timeout=5)[::2] == (200, b"logged")
    lines = (tmp_path / "app.log").read_text().splitlines()
    assert sorted(lines) == sorted(f"hit n={number}" for number in range(10))
    no_worker_died(server)


THREAD_APP = """
    import threading

    # Warm a slow module up in the background, as apps do with caches or clients.
    threading.Thread(target=lambda: __import__("slow_warmup"), daemon=True).start()

    def app(environ, start_response):
        import slow_warmup  # waits for the background import, however long it takes
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [slow_warmup.TEXT]
    """

SLOW_WARMUP = """
    import time

    time.sleep(3)
    TEXT = b"warm"
    """


def test_a_thread_the_app_starts_at_import_cannot_deadlock_a_worker(serve, tmp_path):
    # Forked while another thread holds an import lock, a child waits forever
    # for that lock: its owner does not exist in the child.
    server = start(serve, tmp_path, THREAD_APP, slow_warmup=SLOW_WARMUP)
    assert server.request(timeout=20)[::2] == (200, b"warm")
    no_worker_died(server)

