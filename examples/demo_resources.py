"""Python-built resources for the demo: what ``Resource("pkg.mod:factory()")`` mounts."""

import json
import time

from twisted.web.resource import Resource


class Hello(Resource):
    """A leaf resource answering every path below its mount."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        below = b"/" + b"/".join(request.postpath)
        return b"hello from a twisted.web resource\npath below mount: " + below + b"\n"


class Clock(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"time": time.time()}).encode() + b"\n"


def make_root():
    """A small tree: ``/`` says hello, ``/time`` returns JSON."""
    root = Resource()
    root.putChild(b"", Hello())
    root.putChild(b"time", Clock())
    return root


hello = Hello()
