"""Who the client really is, behind trusted proxies only.

``X-Forwarded-For``/``-Proto``/``-Host`` and RFC 7239 ``Forwarded`` are
client-controlled text: they are believed only when the TCP peer is in
``Site(trusted_proxies=...)``.  Shared by WSGI (REMOTE_ADDR,
wsgi.url_scheme), the proxy (what it forwards) and the access log, so all
three agree on one answer.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_FORWARDED_PAIR = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


@dataclass(frozen=True)
class Client:
    """The client as seen after trusted-proxy resolution."""

    addr: str  # IP of the client (the peer itself unless a trusted proxy said otherwise)
    scheme: str  # "http" or "https"
    host: bytes | None  # the Host the client asked for, as a trusted proxy reports it
    peer: str  # the TCP peer's own address
    trusted: bool  # whether the peer is a trusted proxy


def is_trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _peer(request) -> str:
    return getattr(request.getClientAddress(), "host", "") or ""


def _last(request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[-1] if values else None


def _forwarded_for(request) -> list[str]:
    """Hop addresses, nearest last, from ``Forwarded`` else ``X-Forwarded-For``."""
    hops = []
    forwarded = request.requestHeaders.getRawHeaders(b"forwarded")
    if forwarded:
        for element in b",".join(forwarded).decode("latin-1").split(","):
            for key, value in _FORWARDED_PAIR.findall(element):
                if key.lower() == "for":
                    hops.append(_strip_node(value.strip('"')))
        return hops
    for line in request.requestHeaders.getRawHeaders(b"x-forwarded-for") or ():
        hops.extend(part.strip() for part in line.decode("latin-1").split(","))
    return [hop for hop in hops if hop]


def _strip_node(node: str) -> str:
    """``[2001:db8::1]:4711`` -> ``2001:db8::1``; ``192.0.2.1:80`` -> ``192.0.2.1``."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node


def _forwarded_param(request, name: str) -> str | None:
    forwarded = request.requestHeaders.getRawHeaders(b"forwarded")
    if not forwarded:
        return None
    found = None
    for key, value in _FORWARDED_PAIR.findall(b",".join(forwarded).decode("latin-1")):
        if key.lower() == name:
            found = value.strip('"')
    return found


def resolve_client(request, networks) -> Client:
    """Resolve the real client of ``request`` given the trusted proxy networks.

    Walks the forwarded-for chain from the nearest hop outwards, skipping
    hops that are themselves trusted (like nginx's ``real_ip_recursive on``);
    the first untrusted hop is the client.
    """
    peer = _peer(request)
    scheme = "https" if request.isSecure() else "http"
    if not networks or not is_trusted(peer, networks):
        return Client(peer, scheme, None, peer, False)
    addr = peer
    for hop in reversed(_forwarded_for(request)):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # "unknown" or an obfuscated name: stop believing the chain here
        addr = hop
        if not is_trusted(hop, networks):
            break
    proto = _forwarded_param(request, "proto")
    if proto is None:
        raw = _last(request, b"x-forwarded-proto")
        proto = raw.decode("latin-1").split(",")[-1].strip() if raw else None
    if proto and proto.lower() in ("http", "https"):
        scheme = proto.lower()
    host = _forwarded_param(request, "host")
    host_bytes = host.encode("latin-1") if host else _last(request, b"x-forwarded-host")
    return Client(addr, scheme, host_bytes, peer, True)
