"""Which headers cross the proxy, in each direction, and what it adds.

Hop-by-hop headers (RFC 9110 7.6.1: ``Connection`` and the names it lists,
``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
``Proxy-*``) belong to one connection and are dropped; message framing
(``Content-Length``) is recomputed by the side that sends.  Everything else
is copied value by value, so repeated headers (``Set-Cookie``, ``Cookie``,
``Vary``) arrive as they left.  Forwarding headers are believed from
trusted proxies only (``forwarded.resolve_client``), else replaced.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

from .forwarded import Client

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"trailers", b"transfer-encoding",
     b"upgrade", b"content-length", b"host"}
)
_FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
VIA = b"1.1 twisthost"


def connection_tokens(values) -> frozenset:
    """Lower-case header names listed in ``Connection`` values."""
    if not values:
        return frozenset()
    return frozenset(
        token.strip().lower() for value in values for token in value.split(b",") if token.strip()
    )


def is_upgrade(request) -> bool:
    headers = request.requestHeaders
    return headers.hasHeader(b"upgrade") and b"upgrade" in connection_tokens(
        headers.getRawHeaders(b"connection")
    )


def _copy(source: Headers, target: Headers, skip: frozenset) -> None:
    for name, values in source.getAllRawHeaders():
        lower = name.lower()
        if lower not in skip and lower not in HOP_BY_HOP and not lower.startswith(b"proxy-"):
            target.setRawHeaders(name, values)


def apply_rules(headers: Headers, rules) -> None:
    for name, value in rules or ():
        if value is None:
            headers.removeHeader(name)
        else:
            headers.setRawHeaders(name, [value])


def upstream_headers(request, client: Client, host: bytes, config, upgrade: bool) -> Headers:
    """The request headers sent upstream for ``request``."""
    incoming = request.requestHeaders
    out = Headers()
    _copy(incoming, out, connection_tokens(incoming.getRawHeaders(b"connection")) | _FORWARDING)
    out.setRawHeaders(b"host", [host])
    if upgrade:
        out.setRawHeaders(b"connection", [b"upgrade"])
        out.setRawHeaders(b"upgrade", incoming.getRawHeaders(b"upgrade"))
    _add_forwarding(request, client, out)
    if config.via:
        out.addRawHeader(b"via", VIA)
    apply_rules(out, config.headers_up)
    return out


def _add_forwarding(request, client: Client, out: Headers) -> None:
    incoming = request.requestHeaders
    asked = (incoming.getRawHeaders(b"host") or [b""])[0]
    own_scheme = b"https" if request.isSecure() else b"http"
    peer = client.peer.encode("ascii")
    element = b"for=%s;proto=%s" % (_node(client.peer), own_scheme)
    if asked:
        element += b";host=" + _quote(asked)
    if client.trusted:
        chain = incoming.getRawHeaders(b"x-forwarded-for")
        out.setRawHeaders(b"x-forwarded-for", [b", ".join((chain or []) + [peer])])
        out.setRawHeaders(b"x-forwarded-proto", [client.scheme.encode("ascii")])
        if client.host or asked:
            out.setRawHeaders(b"x-forwarded-host", [client.host or asked])
        out.setRawHeaders(b"forwarded", [b", ".join((incoming.getRawHeaders(b"forwarded") or []) + [element])])
    else:
        out.setRawHeaders(b"x-forwarded-for", [peer])
        out.setRawHeaders(b"x-forwarded-proto", [own_scheme])
        if asked:
            out.setRawHeaders(b"x-forwarded-host", [asked])
        out.setRawHeaders(b"forwarded", [element])
    out.setRawHeaders(b"x-real-ip", [client.addr.encode("ascii")])


def _node(address: str) -> bytes:
    """RFC 7239 node: IPv6 addresses are bracketed and quoted."""
    if ":" in address:
        return b'"[%s]"' % address.encode("ascii")
    return address.encode("ascii") or b"unknown"


def _quote(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def copy_response_headers(response, target: Headers, config) -> None:
    """The upstream response's headers onto the client response."""
    _copy(response.headers, target, getattr(response, "hop_by_hop", frozenset()))
    if config.via:
        target.addRawHeader(b"via", VIA)
    apply_rules(target, config.headers_down)
