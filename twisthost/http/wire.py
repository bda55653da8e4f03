"""The HTTP grammar pieces every reader shares (RFC 9110, RFC 3986); no I/O, no Twisted.

Requests, upstream responses and CGI output are all read against these
rules, so a token, a field line or a Host value means the same thing
wherever it is judged.
"""

from __future__ import annotations

import functools
import ipaddress
import re

#: RFC 9110 5.6.2: ``token = 1*tchar``.
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
IS_TOKEN = re.compile(TOKEN + rb"\Z")
#: RFC 9110 5.5: field values hold no control characters but HTAB.
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: RFC 9110 5.6.4.
QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
#: Field lines after a start line, each with CRLF before it, all well formed:
#: a token name, a colon, a value without controls but HTAB (RFC 9112 5).
FIELD_LINES = re.compile(rb"(?:\r\n" + TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*\Z")


class BadRequest(Exception):
    """Input to refuse: the ``status`` to answer and a one-line ``detail``."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def field_line(line: bytes) -> tuple[bytes, bytes]:
    """``name: value`` with a token name and no control characters in the value (RFC 9112 5)."""
    if line[:1] in (b" ", b"\t"):
        raise BadRequest(400, "Folded header lines are not accepted.")  # RFC 9112 5.2: obs-fold
    name, colon, value = line.partition(b":")
    if not colon or not IS_TOKEN.match(name):
        raise BadRequest(400, "Malformed header field name.")  # RFC 9112 5.1: no space before ':'
    value = value.strip(b" \t")
    if CONTROL.search(value):
        raise BadRequest(400, "Control characters in a header field value.")
    return name, value


# RFC 3986 3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ).  Percent-encoded
# names are refused: no host is configured under one, and decoding them here would give a
# second spelling of every name.
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]*\Z")
_PORT = re.compile(r"[0-9]*\Z")


@functools.lru_cache(maxsize=1024)  # a server sees a handful of distinct values; bounded, they are client-chosen
def host_name(value: bytes) -> str | None:
    """The normalised host of a Host header or an authority, or None when it is not RFC 3986 host syntax.

    ``host [ ":" port ]`` (RFC 9110 7.2) where host is an IP-literal in
    brackets, an IPv4 address or a reg-name; the result is lower-cased,
    without the port, one trailing dot or IPv6 brackets.  Empty is None.
    """
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    text = text.strip(" \t")
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None
        name, rest = text[1:end], text[end + 1:]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
        if not _REG_NAME.match(name):
            return None
    if rest and not (rest[0] == ":" and _PORT.match(rest, 1)):
        return None
    name = name.lower()
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    return name or None
