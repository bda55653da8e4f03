"""An asynchronous page: answer after a delay without blocking the server.

``GET /wait?seconds=1.5`` (0 to 5, default 1) returns ``NOT_DONE_YET`` at
once and finishes the response from a Deferred made by ``deferLater``, so
other requests are served meanwhile.  The same shape works for any Deferred:
a call to an upstream with ``twisted.web.client.Agent``, a database query, or
blocking code moved off the reactor with ``twisted.internet.threads.deferToThread``.
If the client goes away first, the timer is cancelled.
"""

import json

from twisted.internet import reactor
from twisted.internet.defer import CancelledError
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

MAX_SECONDS = 5.0


class Wait(Resource):
    isLeaf = True

    def render_GET(self, request):
        try:
            seconds = float(request.args.get(b"seconds", [b"1"])[0])
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_SECONDS:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"seconds must be a number from 0 to 5\n"

        def answer():
            request.setHeader(b"content-type", b"application/json")
            request.write(json.dumps({"waited": seconds}).encode("utf-8") + b"\n")
            request.finish()

        waiting = deferLater(reactor, seconds, answer)
        waiting.addErrback(lambda failure: failure.trap(CancelledError))  # the client left
        request.notifyFinish().addErrback(lambda failure: waiting.cancel())
        return NOT_DONE_YET


resource = Wait()
