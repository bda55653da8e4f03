"""The server's clock as JSON: a tiny API endpoint.

``GET /time`` answers ``{"iso": "...", "unix": 1700000000.0, "zone": "UTC"}``
with ``Cache-Control: no-store`` so that nothing in between caches it.
"""

import json
import time

from twisted.web.resource import Resource


class Clock(Resource):
    isLeaf = True

    def render_GET(self, request):
        now = time.time()
        body = {
            "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "unix": now,
            "zone": "UTC",
        }
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode("utf-8") + b"\n"


resource = Clock()
