"""Workers forked from the master: shared memory, yet the site's code imported afresh.

``Site(workers=N)`` forks its workers from the master without exec, so they
share the master's imported modules (Twisted, twisthost, the stdlib) page for
page until written.  The master imported the site's own code too (to check the
config), which a worker must not reuse: after a reload it has to serve the
new code, as a freshly started process would.
"""

from __future__ import annotations

import signal
from pathlib import Path

from conftest import wait_until, write_site

APP = """
    import os
    import version

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{version.TEXT} pid={os.getpid()}".encode()]
    """

SITE = """
    from twisthost import WSGI, Site
    site = Site(default=WSGI("hello:app"), workers={workers})
    """


def pss_and_rss(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB of ``pid`` and its descendants, as benchmarks/bench/procs.py sums them."""
    pss = rss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
        todo += [int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
    return pss, rss


def hello_site(folder: Path, workers: int) -> Path:
    write_site(folder, APP, "hello.py")
    write_site(folder, 'TEXT = "one"\n', "version.py")
    return write_site(folder, SITE.format(workers=workers))


def answers(server, count: int = 20) -> set[bytes]:
    return {server.request()[2].split(b" pid=")[0] for _ in range(count)}


def test_a_reload_serves_the_new_code_of_the_app_and_of_what_it_imports(serve, tmp_path):
    server = serve(hello_site(tmp_path, workers=2))
    wait_until(lambda: "worker(s) ready" in server.log(), what="workers ready")
    assert answers(server) == {b"one"}
    # A different size, so a .pyc written in the same second is not taken for current.
    write_site(tmp_path, 'TEXT = "version two"\n', "version.py")
    server.signal(signal.SIGHUP)
    wait_until(lambda: "reloaded " in server.log(), what="reload")
    assert answers(server) == {b"version two"}


def test_two_workers_cost_far_less_memory_than_two_more_processes(serve, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = serve(hello_site(tmp_path / "one", workers=1))
    tree = serve(hello_site(tmp_path / "two", workers=2))
    wait_until(lambda: "worker(s) ready" in tree.log(), what="workers ready")
    assert single.request()[0] == tree.request()[0] == 200
    single_pss, _ = pss_and_rss(single.proc.pid)
    tree_pss, tree_rss = pss_and_rss(tree.proc.pid)
    # Three processes that each imported everything by themselves weigh ~2.7
    # single processes (measured: 126 MiB against 47); forked ones ~1.3.
    assert tree_pss < 1.8 * single_pss, (tree_pss, single_pss)
    assert tree_pss < 0.6 * tree_rss, (tree_pss, tree_rss)
