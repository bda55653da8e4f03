"""``Redirect(url)``: answer every request under a mount with a redirect."""

from __future__ import annotations

from urllib.parse import quote

from twisted.web.resource import Resource

from .pages import error_body


class RedirectResource(Resource):
    """Leaf resource: ``Location`` is the target plus, optionally, the rest of the path.

    The remaining path is re-quoted from the decoded segments so that a
    crafted path cannot inject a header line or a second URL.
    """

    isLeaf = True

    def __init__(self, url: str, status: int, keep_path: bool):
        super().__init__()
        self.url = url.encode("utf-8")
        self.status = status
        self.keep_path = keep_path

    def render(self, request):
        location = self.url
        if self.keep_path:
            rest = b"/".join(request.postpath)
            if rest:
                location = location.rstrip(b"/") + b"/" + quote(rest, safe="/").encode()
            query = request.uri.partition(b"?")[2]
            if query:
                location += b"?" + quote(query, safe="=&;%+:,@/!$'()*").encode()
        request.setResponseCode(self.status)
        request.setHeader(b"location", location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"" if request.method == b"HEAD" else error_body(self.status, location.decode())


def build_redirect(config, context) -> Resource:
    return RedirectResource(config.url, config.status, config.keep_path)
