"""Real twisted.web resources for the hardening tests, mounted with ``Resource(...)``."""

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


class Echo(Resource):
    """Answers ``METHOD /path body-length`` so a test sees which requests were served."""

    isLeaf = True

    def render(self, request):
        size = sum(len(block) for block in iter(lambda: request.content.read(65536), b""))
        request.setHeader(b"content-type", b"text/plain")
        return b"%s %s %d\n" % (request.method, request.uri, size)


class Slow(Resource):
    """Answers after ``?s=`` seconds: a handler may take longer than any read timeout."""

    isLeaf = True

    def render_GET(self, request):
        delay = float(request.args.get(b"s", [b"1"])[0])
        reactor.callLater(delay, self._answer, request)
        return NOT_DONE_YET

    def _answer(self, request):
        if not request._disconnected:
            request.write(b"slow done\n")
            request.finish()


class Zeros(Resource):
    """``?mib=`` MiB of zeros through a pull producer, the way static.File streams files."""

    isLeaf = True

    def render_GET(self, request):
        size = int(request.args.get(b"mib", [b"1"])[0]) << 20
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % size)
        request.registerProducer(_ZeroProducer(request, size), False)
        return NOT_DONE_YET


class _ZeroProducer:
    CHUNK = b"\0" * 65536

    def __init__(self, request, size):
        self.request, self.left = request, size

    def resumeProducing(self):
        if self.left <= 0:
            return
        chunk = self.CHUNK[: self.left]
        self.left -= len(chunk)
        self.request.write(chunk)
        if self.left <= 0:
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self):
        self.left = 0


class Boom(Resource):
    """Raises while rendering: the client must see the uniform 500, never a traceback."""

    isLeaf = True

    def render_GET(self, request):
        raise RuntimeError("secret internal detail")


class GetOnly(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"get only\n"


def echo():
    return Echo()


def slow():
    return Slow()


def zeros():
    return Zeros()


def boom():
    return Boom()


def get_only():
    return GetOnly()
