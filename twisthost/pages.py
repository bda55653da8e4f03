"""Small error pages: one shape for every status, no tracebacks, no versions.

Used wherever twisthost itself answers with an error (no matching host, bad
Host header, a service that failed), so clients and monitoring see one
consistent, plain-text body.
"""

from __future__ import annotations

from http import HTTPStatus

from twisted.web.resource import Resource


def error_body(status: int, detail: str = "") -> bytes:
    phrase = HTTPStatus(status).phrase
    text = f"{status} {phrase}\n" + (f"{detail}\n" if detail else "")
    return text.encode("utf-8")


def write_error(request, status: int, detail: str = "") -> bytes:
    """Set status and headers for an error on ``request`` and return the body."""
    body = error_body(status, detail)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", str(len(body)).encode())
    request.setHeader(b"x-content-type-options", b"nosniff")
    return b"" if request.method == b"HEAD" else body


class ErrorPage(Resource):
    """A leaf resource that answers every method with the same error."""

    isLeaf = True

    def __init__(self, status: int, detail: str = ""):
        super().__init__()
        self.status, self.detail = status, detail

    def render(self, request):
        return write_error(request, self.status, self.detail)
