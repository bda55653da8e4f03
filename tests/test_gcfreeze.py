"""The collector is kept off start-up objects, and the trees of replaced configs are still collected."""

from __future__ import annotations

import json
import signal

from conftest import ROOT, wait_until

RESOURCES = str(ROOT / "tests" / "resources")
SITE = f"""
from twisthost import Resource, Site
site = Site(default=Resource("gcprobe:probe()", pythonpath=[{RESOURCES!r}]))
"""


def ask(server) -> dict:
    status, _, body = server.request()
    assert status == 200
    return json.loads(body)


def test_startup_objects_are_frozen_and_replaced_trees_are_collected(serve):
    server = serve(SITE)
    answer = ask(server)
    assert answer["frozen"] > 10_000  # Twisted, twisthost and the tree: never walked by the collector
    assert answer["alive"] == [1]
    for _ in range(3):
        before = answer["probe"]
        server.signal(signal.SIGHUP)
        wait_until(lambda: ask(server)["probe"] != before, what="the reloaded tree answers")
        answer = ask(server)
    # The first probe was frozen with the start-up tree and only a cycle keeps
    # it: without the unfreeze after a reload it would stay for good.
    assert answer["probe"] == 4
    assert 1 not in answer["alive"] and len(answer["alive"]) <= 2  # the last one replaced may linger
    assert answer["frozen"] > 10_000
