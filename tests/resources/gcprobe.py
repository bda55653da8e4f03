"""A real twisted.web resource for the tests of twisthost.gcfreeze.

Each probe holds a reference to itself, so only the cyclic collector can free
one the server let go of; it runs a collection, then reports the numbers of
the probes still alive (in creation order) and how many objects the process
had frozen.
"""

import gc
import itertools
import json
import weakref

from twisted.web.resource import Resource

_alive = weakref.WeakSet()
_numbers = itertools.count(1)


class Probe(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.cycle = self
        self.number = next(_numbers)
        _alive.add(self)

    def render_GET(self, request):
        frozen = gc.get_freeze_count()
        gc.collect()  # frees what is collectable; frozen objects are not
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"probe": self.number, "alive": sorted(p.number for p in _alive), "frozen": frozen}).encode()


def probe():
    return Probe()
