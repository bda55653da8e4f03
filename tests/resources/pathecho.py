"""A real twisted.web resource for routing tests: it reports how it was reached."""

import json

from twisted.web.resource import Resource


class PathEcho(Resource):
    """Leaf like WSGIResource: answers everything below its mount with its view of the path."""

    isLeaf = True

    def __init__(self, name):
        super().__init__()
        self.name = name

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({
            "service": self.name,
            "prepath": [p.decode() for p in request.prepath],
            "postpath": [p.decode() for p in request.postpath],
            "host": (request.getHeader(b"host") or b"").decode(),
        }).encode()


def named(name):
    return lambda: PathEcho(name)


app = named("app")
api = named("api")
api_v2 = named("api_v2")
other = named("other")
fallback = named("default")
wild = named("wild")
deep_wild = named("deep_wild")
not_a_resource = object()
