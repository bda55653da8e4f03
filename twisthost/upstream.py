"""One upstream server of a ``Proxy``: where it is, how to reach it, whether to use it now.

An ``Upstream`` holds the parsed URL, the client endpoint that opens
connections to it (TCP, TLS or a unix socket) and its live state: requests in
flight, passive failures (nginx ``max_fails``/``fail_timeout``) and the
verdict of active health checks.  ``status()`` is what a metrics or status
page shows; the objects are listed in ``BuildContext.shared["upstreams"]``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint, wrapClientTLS,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from .config import Proxy


class Upstream:
    """An upstream server and its health; ``available()`` is asked per request."""

    def __init__(self, url: str, index: int, config: Proxy, reactor, backup: bool = False):
        self.url = url
        self.weight = config.weight_of(url)
        self.backup = backup
        self.max_active = config.max_connections_per_upstream
        self.max_fails, self.fail_timeout = config.max_fails, config.fail_timeout
        if url.startswith("unix:"):
            # Agent routes by URL: give the socket a private name no DNS will resolve.
            self.origin = b"http://unix-%d.invalid" % index
            self.netloc = b"localhost"
            self.base_path = b""
            self.endpoint = UNIXClientEndpoint(reactor, url[len("unix:"):], timeout=config.connect_timeout)
        else:
            parts = urlsplit(url)
            self.origin = f"{parts.scheme}://{parts.netloc}".encode("ascii")
            self.netloc = parts.netloc.encode("ascii")
            self.base_path = parts.path.rstrip("/").encode("ascii")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self.endpoint = tcp_endpoint(reactor, parts.hostname, port, config.connect_timeout)
            if parts.scheme == "https":
                self.endpoint = wrapClientTLS(tls_creator(config, parts.hostname, port), self.endpoint)
        self.active = 0  # requests in flight
        self.current_weight = 0  # smooth weighted round robin state (balance.py)
        self._fails = 0
        self._window_end = 0.0
        self.down_until = 0.0  # passive: marked down until then
        self.healthy = True  # active checks' verdict
        self._streak = 0  # consecutive active results pointing away from `healthy`
        self.last_check = ""  # the last active check's time and result, for /status

    def available(self, now: float) -> bool:
        return (
            self.healthy
            and now >= self.down_until
            and (self.max_active is None or self.active < self.max_active)
        )

    def failed(self, now: float) -> None:
        """A connection error or timeout: ``max_fails`` of them within ``fail_timeout`` mark it down."""
        if not self.max_fails:
            return
        if now > self._window_end:
            self._fails, self._window_end = 0, now + self.fail_timeout
        self._fails += 1
        if self._fails >= self.max_fails:
            self.down_until, self._fails = now + self.fail_timeout, 0

    def checked(self, ok: bool, passes: int, fails: int) -> None:
        """One active health check result; flip after ``passes``/``fails`` in a row."""
        if ok == self.healthy and not (ok and self.down_until):
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= (passes if ok else fails):
            self.healthy, self._streak = ok, 0
            if ok:
                self.down_until = 0.0  # a passing check overrides a passive mark-down

    def status(self) -> dict:
        return {
            "url": self.url,
            "backup": self.backup,
            "weight": self.weight,
            "healthy": self.healthy,
            "down_until": self.down_until,
            "active": self.active,
        }

    def __repr__(self) -> str:
        return f"<Upstream {self.url}>"


@implementer(IAgentEndpointFactory)
class UpstreamEndpoints:
    """Lets ``Agent`` reach each upstream through the endpoint built for it."""

    def __init__(self, upstreams):
        self.by_origin = {}
        for upstream in upstreams:
            parts = urlsplit(upstream.origin)
            port = parts.port or (443 if parts.scheme == b"https" else 80)
            self.by_origin[(parts.scheme, parts.hostname, port)] = upstream.endpoint

    def endpointForURI(self, uri):
        return _QuietEndpoint(self.by_origin[(uri.scheme, uri.host, uri.port)])


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """An upstream's endpoint that makes the factories it connects quiet.

    ``Agent`` builds a factory per connection, and a factory logs "Starting
    factory" and "Stopping factory" around each one: two info lines per
    health check, nearly the whole log of a host with ``interval=1``.
    """

    def __init__(self, endpoint):
        self.endpoint = endpoint

    def connect(self, factory):
        factory.noisy = False
        return self.endpoint.connect(factory)


def tcp_endpoint(reactor, host: str, port: int, timeout: float):
    """A client endpoint for ``host``; an IP address is connected to directly.

    ``HostnameEndpoint`` resolves even an address literal (``getaddrinfo`` in
    a thread, a Deferred chain and a class built per call: ~0.5 ms more CPU per
    connection than a direct TCP endpoint on loopback), so it is kept for names.
    """
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


def tls_creator(config: Proxy, hostname: str, port: int):
    """The TLS client policy for one https upstream: verified (system or own CA) or not."""
    if not config.verify:
        return _Unverified(hostname)
    if config.ca is not None:
        with open(config.ca, "rb") as file:
            authority = ssl.Certificate.loadPEM(file.read())
        return ssl.optionsForClientTLS(hostname, trustRoot=authority)
    return BrowserLikePolicyForHTTPS().creatorForNetloc(hostname.encode("idna"), port)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS with SNI but no certificate checks, for ``Proxy(verify=False)``."""

    def __init__(self, hostname: str):
        self.hostname = hostname.encode("idna")
        self.context = ssl.CertificateOptions().getContext()

    def clientConnectionForTLS(self, protocol):
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(protocol)
        connection.set_tlsext_host_name(self.hostname)
        return connection
