"""Which headers cross the proxy, in each direction, and what it adds.

Hop-by-hop headers (RFC 9110 7.6.1: ``Connection`` and the names it lists,
``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
``Proxy-*``) belong to one connection and are dropped; message framing
(``Content-Length``) is recomputed by the side that sends.  Everything else
is copied value by value, so repeated headers (``Set-Cookie``, ``Cookie``,
``Vary``) arrive as they left.  Forwarding headers are believed from
trusted proxies only (``forwarded.resolve_client``), else replaced.

Upstream-bound headers are a plain ``{lower-case name: (name, [values])}``
dict that ``head_bytes`` writes out: the incoming ``Headers`` are already
canonical and sanitised, so no second ``Headers`` object is built per request.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

from .accel import HEADERS as ACCEL_HEADERS
from .forwarded import Client
from .proxy_client import connection_tokens, field

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"trailers", b"transfer-encoding",
     b"upgrade", b"content-length", b"host"}
)
_FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
VIA = b"1.1 twisthost"


def is_upgrade(request) -> bool:
    headers = request.requestHeaders
    return headers.hasHeader(b"upgrade") and b"upgrade" in connection_tokens(
        headers.getRawHeaders(b"connection")
    )


def _end_to_end(lower: bytes, listed: frozenset) -> bool:
    return lower not in HOP_BY_HOP and lower not in listed and not lower.startswith(b"proxy-")


_UP: dict = {}  # request header name -> its lower-case form, or None: never sent upstream
_MAX_UP = 1000  # names are client-chosen: bounded like proxy_client._NAMES


def _up_name(name: bytes):
    """``name`` in lower case, or None for a name never forwarded (hop-by-hop, forwarding)."""
    lower = name.lower()
    verdict = lower if _end_to_end(lower, _FORWARDING) else None
    if len(_UP) < _MAX_UP:
        _UP[name] = verdict
    return verdict


def upstream_headers(request, client: Client, host: bytes, config, upgrade: bool) -> dict:
    """The request headers sent upstream for ``request``, as ``{lower name: (name, values)}``.

    The value lists may be the request's own: replace them, never append in place.
    """
    incoming = request.requestHeaders
    connection = incoming.getRawHeaders(b"connection")
    listed = connection_tokens(connection) if connection else ()
    out = {}
    for name, values in incoming.getAllRawHeaders():
        lower = _UP.get(name, False)
        if lower is False:
            lower = _up_name(name)
        if lower is not None and lower not in listed:
            out[lower] = (name, values)
    out[b"host"] = (b"Host", [host])
    if upgrade:
        out[b"connection"] = (b"Connection", [b"upgrade"])
        out[b"upgrade"] = (b"Upgrade", incoming.getRawHeaders(b"upgrade"))
    _add_forwarding(request, client, out)
    if config.via:
        name, values = out.get(b"via", (b"Via", []))
        out[b"via"] = (name, [*values, VIA])
    for lower, value in config.headers_up or ():
        if value is None:
            out.pop(lower, None)
        else:
            out[lower] = (lower, [value])
    return out


def head_bytes(method: bytes, target: bytes, headers: dict) -> bytes:
    """An HTTP/1.1 request head from ``upstream_headers``' dict."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, values in headers.values():
        for value in values:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_UNTRUSTED: dict = {}  # (peer, scheme, Host) -> the forwarding headers for an untrusted peer
_MAX_UNTRUSTED = 1000


def _add_forwarding(request, client: Client, out: dict) -> None:
    asked = (request.requestHeaders.getRawHeaders(b"host") or [b""])[0]
    if client.trusted:
        _add_trusted_forwarding(request, client, asked, out)
        return
    # An untrusted peer's headers are replaced by values that depend on three
    # things only, the same for every request of a connection: made once.
    key = (client.peer, client.scheme, asked)
    fields = _UNTRUSTED.get(key)
    if fields is None:
        if len(_UNTRUSTED) >= _MAX_UNTRUSTED:  # Host is client-chosen: bounded
            _UNTRUSTED.clear()
        fields = _UNTRUSTED[key] = _untrusted_forwarding(client, asked)
    out.update(fields)


def _element(client: Client, scheme: bytes, asked: bytes) -> bytes:
    """This hop's RFC 7239 ``Forwarded`` element."""
    element = b"for=%s;proto=%s" % (_node(client.peer), scheme)
    return element + b";host=" + _quote(asked) if asked else element


def _untrusted_forwarding(client: Client, asked: bytes) -> tuple:
    peer = client.peer.encode("ascii")
    scheme = client.scheme.encode("ascii")  # the peer's own scheme: resolve_client set it
    fields = [
        (b"x-forwarded-for", (b"X-Forwarded-For", [peer])),
        (b"x-forwarded-proto", (b"X-Forwarded-Proto", [scheme])),
    ]
    if asked:
        fields.append((b"x-forwarded-host", (b"X-Forwarded-Host", [asked])))
    fields += [
        (b"forwarded", (b"Forwarded", [_element(client, scheme, asked)])),
        (b"x-real-ip", (b"X-Real-Ip", [peer])),
    ]
    return tuple(fields)


def _add_trusted_forwarding(request, client: Client, asked: bytes, out: dict) -> None:
    """The chain a trusted proxy sent, with this hop added."""
    incoming = request.requestHeaders
    own_scheme = b"https" if request.isSecure() else b"http"
    chain = incoming.getRawHeaders(b"x-forwarded-for")
    out[b"x-forwarded-for"] = (b"X-Forwarded-For", [b", ".join((chain or []) + [client.peer.encode("ascii")])])
    out[b"x-forwarded-proto"] = (b"X-Forwarded-Proto", [client.scheme.encode("ascii")])
    if client.host or asked:
        out[b"x-forwarded-host"] = (b"X-Forwarded-Host", [client.host or asked])
    forwarded = incoming.getRawHeaders(b"forwarded") or []
    out[b"forwarded"] = (b"Forwarded", [b", ".join(forwarded + [_element(client, own_scheme, asked)])])
    out[b"x-real-ip"] = (b"X-Real-Ip", [client.addr.encode("ascii")])


def _node(address: str) -> bytes:
    """RFC 7239 node: IPv6 addresses are bracketed and quoted."""
    if ":" in address:
        return b'"[%s]"' % address.encode("ascii")
    return address.encode("ascii") or b"unknown"


def _quote(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class ResponseRules:
    """What one ``Proxy`` config does to response heads, decided once rather than per response.

    ``headers_down`` names are the rules' own: the upstream's values and the
    server's (``Server``, ``Date``...) give way to the rule's value, or to
    nothing.  Framing and hop-by-hop names are the proxy's, never a rule's.
    ``Via`` is appended to the upstream's unless a rule names it.
    """

    def __init__(self, config):
        rules = [(name, value) for name, value in config.headers_down or () if name not in HOP_BY_HOP]
        if not config.accel:  # a hand-off not honoured is not shown either (X-Sendfile holds a path)
            rules += [(name, None) for name in ACCEL_HEADERS]
        self.ruled = frozenset(name for name, _ in rules)
        added = Headers()  # for the names' usual spelling ("X-Frame-Options"), as Headers writes them
        if config.via and b"via" not in self.ruled:
            added.addRawHeader(b"via", VIA)
        for name, value in rules:
            if value is not None:
                added.addRawHeader(name, value)
        self.added = tuple((name, value) for name, values in added.getAllRawHeaders() for value in values)
        self.added_lines = b"".join(b"%s: %s\r\n" % pair for pair in self.added)


_CROSSES: dict = {}  # response header name (lower case) -> not hop-by-hop by itself
_MAX_CROSSES = 1000  # names are upstream-chosen: bounded like proxy_client._NAMES


def _crossing(head, rules: ResponseRules) -> list:
    """The upstream's headers (``proxy_client.Head.headers`` pairs) that reach the client."""
    listed, ruled = head.connection, rules.ruled
    out = []
    for item in head.headers:
        lower = item[0]
        crosses = _CROSSES.get(lower)
        if crosses is None:
            crosses = _end_to_end(lower, ())
            if len(_CROSSES) < _MAX_CROSSES:
                _CROSSES[lower] = crosses
        if crosses and lower not in listed and lower not in ruled:
            out.append(item)
    return out


def response_head(status_line: bytes, own: Headers, head, rules: ResponseRules, framing: bytes) -> bytes:
    """An HTTP/1.x response head: ``own`` headers, the upstream's lines as received, the rules'.

    ``own`` are what the server set before (``Server``, ``Date``,
    ``X-Request-Id``, ``Connection: close``); the upstream's values of a name
    replace them.  ``framing`` is the ``Content-Length`` or
    ``Transfer-Encoding`` line, or nothing.
    """
    crossing = _crossing(head, rules)
    names = {item[0] for item in crossing}
    names.update(rules.ruled)
    parts = [status_line]
    for name, values in own.getAllRawHeaders():
        if name.lower() not in names:
            for value in values:
                parts += (name, b": ", value, b"\r\n")
    for _, line in crossing:
        parts += (line, b"\r\n")
    parts += (rules.added_lines, framing, b"\r\n")
    return b"".join(parts)


def copy_response_headers(head, target: Headers, rules: ResponseRules) -> None:
    """The upstream response's headers onto ``target``, the client response's ``Headers``.

    For channels that take ``Headers`` only (HTTP/2); HTTP/1 heads are built
    by :func:`response_head` from the same rules.
    """
    grouped: dict = {}
    for lower, line in _crossing(head, rules):
        name, value = field(line)
        entry = grouped.get(lower)
        if entry is None:
            grouped[lower] = (name, [value])
        else:
            entry[1].append(value)
    for name, values in grouped.values():
        target.setRawHeaders(name, values)
    for name in rules.ruled:
        target.removeHeader(name)
    for name, value in rules.added:
        target.addRawHeader(name, value)
