"""TLS listeners: per-host certificates chosen by SNI, modern defaults, ALPN/HTTP/2.

Twisted gives us ``CertificateOptions`` (a sound OpenSSL context: no
compression, TLS 1.2+) and ``TLSMemoryBIOFactory``.  Its ``tls:`` endpoint
picks certificates from a PEM folder by SNI, but hands clients without SNI
whichever certificate came first, rescans the folder on every unknown name
and knows nothing of the hosts in the config.  Here the certificate table is
built from the config (``Host(cert=...)``, ``TLS(certs_dir=...)``,
``TLS(cert=...)``) on every load, validated then, so ``twisthost check`` and a
reload refuse bad files, and each listener asks for the *current* table on
every new connection: a reload swaps certificates while established
connections keep the context they started with.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IStreamServerEndpoint
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.http import H2_ENABLED
from zope.interface import implementer

from . import config as c
from .errors import ConfigError, Where
from .forwarded import resolve_client
from .pages import ErrorPage
from .redirect import RedirectResource

log = Logger()

EXPIRY_WARNING = datetime.timedelta(days=14)

# Mozilla "intermediate" (https://ssl-config.mozilla.org/, v5.7): all TLS 1.3
# suites, and for TLS 1.2 only forward-secret AEAD suites.  The DHE suites of
# that profile are left out: Twisted disables them without DH parameters.
INTERMEDIATE_CIPHERS = AcceptableCiphers.fromOpenSSLCipherString(
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

MIN_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
ACME_CHALLENGE = [b".well-known", b"acme-challenge"]


# --------------------------------------------------------------------------- certificates


@dataclass
class KeyPair:
    """A certificate (with its chain) and the private key that matches it."""

    cert_path: str
    key_path: str
    leaf: x509.Certificate
    chain: list
    key: object
    where: Where | None

    @property
    def names(self) -> list[str]:
        """DNS names the certificate is valid for (SANs, else the subject CN)."""
        try:
            san = self.leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
            return [name.lower() for name in san.value.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            return [a.value.lower() for a in self.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]

    @property
    def expires(self) -> datetime.datetime:
        return self.leaf.not_valid_after_utc

    def covers(self, name: str) -> bool:
        return any(name_matches(pattern, name) for pattern in self.names)

    def label(self) -> str:
        return self.cert_path if self.key_path == self.cert_path else f"{self.cert_path} + {os.path.basename(self.key_path)}"


def name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching: a ``*.`` wildcard stands for exactly one label."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.S)


def _pem_blocks(path: str, where: Where | None, label: str) -> list[tuple[bytes, bytes]]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ConfigError(f"{label}: cannot read {path}: {error.strerror}", where) from None
    return [(match.group(1), match.group(0)) for match in _PEM_BLOCK.finditer(data)]


def load_pair(cert_path: str, key_path: str | None, where: Where | None, label: str,
              now: datetime.datetime | None = None) -> KeyPair:
    """Read and check a certificate chain and its key; every fault is a located ConfigError."""
    key_path = key_path or cert_path
    certs, keys = [], []
    for path in dict.fromkeys((cert_path, key_path)):
        for kind, block in _pem_blocks(path, where, label):
            try:
                if kind == b"CERTIFICATE":
                    certs.append(x509.load_pem_x509_certificate(block))
                elif kind.endswith(b"PRIVATE KEY"):
                    keys.append(serialization.load_pem_private_key(block, password=None))
            except (ValueError, TypeError) as error:
                hint = "twisthost cannot prompt for a passphrase; store the key unencrypted (mode 0600)" if (
                    "encrypted" in str(error) or "password" in str(error).lower()) else ""
                raise ConfigError(f"{label}: bad PEM {kind.decode().lower()} in {path}: {error}", where, hint) from None
    if not certs:
        raise ConfigError(f"{label}: no certificate in {cert_path}", where,
                          "give a PEM file with '-----BEGIN CERTIFICATE-----' (e.g. certbot's fullchain.pem)")
    if not keys:
        raise ConfigError(f"{label}: no private key in {key_path}", where,
                          "give key=... (e.g. certbot's privkey.pem), or put the key in the cert file")
    key = keys[0]
    leaf = next((cert for cert in certs if _same_key(cert, key)), None)
    if leaf is None:
        raise ConfigError(
            f"{label}: the private key in {key_path} does not match the certificate in {cert_path}",
            where, "cert and key must come from the same issuance; check you did not mix up files",
        )
    pair = KeyPair(cert_path, key_path, leaf, [cert for cert in certs if cert is not leaf], key, where)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if pair.expires <= now:
        raise ConfigError(f"{label}: certificate {cert_path} expired on {pair.expires:%Y-%m-%d %H:%M} UTC", where,
                          "renew it (e.g. certbot renew) and reload")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(f"{label}: certificate {cert_path} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC", where)
    return pair


def _same_key(cert: x509.Certificate, key) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def load_dir(folder: str, where: Where | None) -> list[KeyPair]:
    """Every certificate in ``folder``'s ``*.pem`` files paired with its key.

    The key may sit in the same file or in another one (``a.pem`` + ``a.key.pem``);
    certificates without a key in the folder are chain certificates.
    """
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".pem"))
    keyed: dict[bytes, str] = {}
    for path in files:
        for kind, block in _pem_blocks(path, where, f"TLS(certs_dir) {path}"):
            if kind.endswith(b"PRIVATE KEY"):
                try:
                    public = serialization.load_pem_private_key(block, password=None).public_key()
                except (ValueError, TypeError) as error:
                    raise ConfigError(f"TLS(certs_dir): bad private key in {path}: {error}", where) from None
                keyed[public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)] = path
    pairs = []
    for path in files:
        blocks = _pem_blocks(path, where, "TLS(certs_dir)")
        certs = [block for kind, block in blocks if kind == b"CERTIFICATE"]
        if not certs:
            continue
        try:
            leaf = x509.load_pem_x509_certificate(certs[0])
        except ValueError as error:
            raise ConfigError(f"TLS(certs_dir): bad certificate in {path}: {error}", where) from None
        spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if spki in keyed:
            pairs.append(load_pair(path, keyed[spki], where, "TLS(certs_dir)"))
    if not pairs:
        raise ConfigError(f"TLS(certs_dir): no certificate with its private key in {folder}", where,
                          "put each certificate chain and its key in .pem files there")
    return pairs


# --------------------------------------------------------------------------- contexts


@dataclass
class ListenerTLS:
    """The built TLS side of one ``TLS(...)`` listener: a context per certificate.

    Clients without SNI, or naming no known host, get ``default``; the rest
    get the certificate registered for their exact name, else for the
    one-label wildcard above it.
    """

    config: c.TLS
    default: KeyPair
    names: dict[str, KeyPair]  # exact names and "*.suffix" wildcards
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._session_id = os.urandom(16).hex().encode()  # one per listener: resumption across SNI switches
        self._client_cas = _ca_certs(self.config) if self.config.client_ca else None
        contexts: dict[int, SSL.Context] = {}
        for pair in [self.default, *self.names.values()]:
            if id(pair) not in contexts:
                contexts[id(pair)] = self._context(pair)
        self._contexts = {name: contexts[id(pair)] for name, pair in self.names.items()}
        self.default_context = contexts[id(self.default)]
        self.default_context.set_tlsext_servername_callback(self._on_servername)

    def context_for(self, name: str | None) -> SSL.Context:
        found = self._lookup(self._contexts, name)
        return found if found is not None else self.default_context

    @staticmethod
    def _lookup(table: dict, name: str | None):
        if not name:
            return None
        found = table.get(name)
        if found is None and "." in name:
            found = table.get("*." + name.partition(".")[2])
        return found

    def _on_servername(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = c.normalize_host(raw.decode("ascii", "replace")) if raw else None
        connection.set_context(self.context_for(name))

    def connection(self) -> SSL.Connection:
        return SSL.Connection(self.default_context)

    def _context(self, pair: KeyPair) -> SSL.Context:
        config = self.config
        verify = {}
        if self._client_cas:
            verify = {"verify": True, "caCerts": self._client_cas,
                      "requireCertificate": config.verify_client == "required"}
        options = CertificateOptions(
            privateKey=pair.key,
            certificate=pair.leaf,
            extraCertChain=pair.chain,
            raiseMinimumTo=MIN_VERSIONS[config.min_version],
            acceptableCiphers=INTERMEDIATE_CIPHERS,
            enableSessions=True,
            enableSessionTickets=True,
            **verify,
        )
        context = options.getContext()
        context.set_session_id(self._session_id)
        if verify:
            context.set_client_ca_list([ca.get_subject() for ca in verify["caCerts"]])
        protocols = [b"h2", b"http/1.1"] if config.http2 and H2_ENABLED else [b"http/1.1"]
        context.set_alpn_select_callback(lambda conn, offered: _choose(protocols, offered))
        return context


def _choose(ours: list[bytes], offered: list[bytes]):
    """Our first protocol the client offers; none in common means no ALPN, not a failure."""
    return next((proto for proto in ours if proto in offered), SSL.NO_OVERLAPPING_PROTOCOLS)


def _ca_certs(config: c.TLS) -> list:
    blocks = [block for kind, block in _pem_blocks(config.client_ca, config.where, "TLS(client_ca)")
              if kind == b"CERTIFICATE"]
    if not blocks:
        raise ConfigError(f"TLS(client_ca): no certificate in {config.client_ca}", config.where)
    # pyOpenSSL's X509Store takes only its own X509 objects.
    return [crypto.X509.from_cryptography(x509.load_pem_x509_certificate(block)) for block in blocks]


def build_listener(item: c.TLS, site: c.Site, now: datetime.datetime | None = None) -> ListenerTLS:
    """Load every certificate ``item`` serves and pick its default; warn about near expiry."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    names: dict[str, KeyPair] = {}
    own = load_pair(item.cert, item.key, item.where, "TLS(cert)", now) if item.cert else None
    # Lowest precedence first, so later registrations win: the listener's own
    # certificate, then the folder's (the one expiring last wins a shared
    # name), then each Host's own certificate.
    ranked = [own] if own else []
    if item.certs_dir:
        ranked += sorted(load_dir(item.certs_dir, item.where), key=lambda pair: pair.expires)
    for pair in ranked:
        names.update(dict.fromkeys(pair.names, pair))
    for host in site.hosts:
        if host.cert is None:
            continue
        pair = load_pair(host.cert, host.key, host.where, f"Host({host.name!r}, cert=...)", now)
        names.update(dict.fromkeys(host.names(), pair))
    default = _default(item, own, names)
    warnings = []
    for pair in {id(p): p for p in [default, *names.values()]}.values():
        if pair.expires - now < EXPIRY_WARNING:
            warnings.append(f"{pair.where or ''}: warning: certificate {pair.cert_path} expires on "
                            f"{pair.expires:%Y-%m-%d %H:%M} UTC ({(pair.expires - now).days} days)")
    for host in site.hosts:
        for name in host.names() if host.cert is not None else ():
            pair = names[name]
            if name not in pair.names and not pair.covers(name):
                warnings.append(f"{host.where}: warning: certificate {host.cert} does not cover {name!r} "
                                f"(it is for {', '.join(pair.names) or 'no names'})")
    return ListenerTLS(item, default, names, warnings)


def _default(item: c.TLS, own: KeyPair | None, names: dict[str, KeyPair]) -> KeyPair:
    if item.default is not None:
        pair = ListenerTLS._lookup(names, item.default)
        if pair is None:
            raise ConfigError(f"TLS(default={item.default!r}) names no host or certificate of this listener",
                              item.where, "known names: " + ", ".join(sorted(names)) if names else "")
        return pair
    if own is not None:
        return own
    distinct = {id(pair): pair for pair in names.values()}
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    if not distinct:
        raise ConfigError(
            "TLS(...) has no certificate", item.where,
            "give TLS(cert=..., key=...), TLS(certs_dir=...) or Host(..., cert=..., key=...)",
        )
    raise ConfigError(
        "TLS(...) serves several certificates: which one for clients without SNI or unknown names?",
        item.where, "give TLS(cert=..., key=...) or TLS(default='a host name')",
    )


def build_tls(site: c.Site) -> dict[str, ListenerTLS]:
    """The TLS side of every ``TLS(...)`` listener of ``site``, keyed by its endpoint."""
    listeners = {item.endpoint: build_listener(item, site) for item in site.listen if isinstance(item, c.TLS)}
    if not listeners:
        for host in site.hosts:
            if host.cert is not None:
                raise ConfigError(f"Host({host.name!r}) has cert=... but Site(listen=...) has no TLS(...) listener",
                                  host.where, "add e.g. TLS('tcp:443') to Site(listen=[...])")
    for listener in listeners.values():
        for warning in listener.warnings:
            log.warn("{warning}", warning=warning)
    return listeners


# --------------------------------------------------------------------------- listening


@implementer(IOpenSSLServerConnectionCreator)
class CurrentContexts:
    """Connection creator that asks for the current ``ListenerTLS`` per connection.

    ``current`` is called for every new connection, so after a reload new
    connections get the new certificates while open ones are untouched.
    """

    def __init__(self, current: Callable[[], ListenerTLS]):
        self.current = current

    def serverConnectionForTLS(self, protocol) -> SSL.Connection:
        return self.current().connection()


@implementer(IStreamServerEndpoint)
class TLSEndpoint:
    """Run TLS over any stream server endpoint (tcp:, unix:, systemd:)."""

    def __init__(self, endpoint, current: Callable[[], ListenerTLS], reactor=None):
        self.endpoint, self.creator, self.reactor = endpoint, CurrentContexts(current), reactor

    def listen(self, factory):
        return self.endpoint.listen(TLSMemoryBIOFactory(self.creator, False, factory, clock=self.reactor))


def describe(listeners: dict[str, ListenerTLS]) -> list[str]:
    """For ``twisthost check``: per TLS listener, which names get which certificate."""
    lines = []
    for endpoint, listener in listeners.items():
        config = listener.config
        flags = [f"TLS {config.min_version}+", "h2" if config.http2 and H2_ENABLED else "http/1.1 only"]
        if config.client_ca:
            flags.append(f"client certs {config.verify_client}")
        lines.append(f"  {endpoint}  ({', '.join(flags)})")
        rows = [("(no SNI / unknown)", listener.default)] + [
            *sorted(listener.names.items())]
        width = max(len(name) for name, _ in rows)
        for name, pair in rows:
            lines.append(f"    {name.ljust(width)}  -> {pair.label()}  (expires {pair.expires:%Y-%m-%d})")
    for listener in listeners.values():
        lines.extend(listener.warnings)
    return lines


# --------------------------------------------------------------------------- per-host HTTPS policy


def https_port(site: c.Site) -> int:
    """The port of the first TCP ``TLS(...)`` listener, for redirects; 443 without one."""
    ports = tls_ports(site)
    return ports[0] if ports else 443


def tls_ports(site: c.Site) -> list[int]:
    """The ports of the TCP ``TLS(...)`` listeners of ``site``, in order."""
    ports = []
    for item in site.listen:
        if isinstance(item, c.TLS):
            found = re.match(r"^tcp6?:(?:port=)?(\d+)(:|$)", item.endpoint)
            if found:
                ports.append(int(found.group(1)))
    return ports


def redirects_without_tls(site: c.Site) -> str | None:
    """The warning for ``--listen`` replacing ``site``'s listeners, or None.

    ``--listen`` takes endpoint strings only, so the config's ``TLS(...)``
    listeners are gone, while ``https_redirect`` hosts still send plain-HTTP
    clients to their ports: the redirects lead nowhere.  Only redirects to a
    port of a dropped listener are named; one to a port the config did not
    serve either (a TLS proxy in front) is not this override's doing.
    """
    dropped = tls_ports(site)
    stranded: dict[int, list[str]] = {}
    for host in site.hosts:
        if host.https_redirect:
            port = host.https_redirect if type(host.https_redirect) is int else https_port(site)
            if port in dropped:
                stranded.setdefault(port, []).append(host.name)
    if not stranded:
        return None
    where = "; ".join(f"{', '.join(names)} to port {port}" for port, names in sorted(stranded.items()))
    return ("--listen replaces every listener of the config, its TLS ones too, but https_redirect "
            f"hosts still send plain-HTTP clients to HTTPS ports nothing listens on now: {where}. "
            "Leave out --listen, or start another process serving those ports")


def host_guard(host: c.Host, site: c.Site):
    """The per-host hook of ``vhost`` routing: https redirect and HSTS, or None.

    "Secure" is the scheme as resolved through trusted proxies, so a host
    behind a TLS-terminating proxy is neither redirected in a loop nor denied
    its HSTS header.  ACME HTTP-01 challenges are never redirected.
    """
    if not host.https_redirect and host.hsts is None:
        return None
    port = host.https_redirect if type(host.https_redirect) is int else https_port(site)
    hsts = host.hsts.header_value().encode() if host.hsts is not None else None

    def guard(request, name: str):
        if resolve_client(request, site.trusted_proxies).scheme == "https":
            if hsts is not None:
                request.setHeader(b"strict-transport-security", hsts)
            return None
        if not host.https_redirect or request.postpath[:2] == ACME_CHALLENGE:
            return None
        if not name:
            return _NEED_HOST
        authority = f"[{name}]" if ":" in name else name
        if port != 443:
            authority += f":{port}"
        return RedirectResource(f"https://{authority}/", 308, keep_path=True)

    return guard


_NEED_HOST = ErrorPage(400, "This site is served over HTTPS only; send a Host header.")


# --------------------------------------------------------------------------- for WSGI


def ssl_environ(request) -> dict[str, str]:
    """mod_ssl-style variables for ``request``: empty unless it came over TLS to us.

    ``HTTPS``, ``SSL_PROTOCOL``, ``SSL_CIPHER``, ``SSL_TLS_SNI`` and, with a
    client certificate (always verified against ``client_ca`` when present),
    ``SSL_CLIENT_VERIFY=SUCCESS``, ``SSL_CLIENT_S_DN``/``_I_DN`` (RFC 4514),
    ``SSL_CLIENT_S_DN_CN``, ``SSL_CLIENT_M_SERIAL`` (hex),
    ``SSL_CLIENT_V_START``/``_V_END`` and ``SSL_CLIENT_CERT`` (PEM); without
    one ``SSL_CLIENT_VERIFY=NONE``.
    """
    connection = _tls_connection(request)
    if connection is None:
        return {}
    environ = {
        "HTTPS": "on",
        "SSL_PROTOCOL": connection.get_protocol_version_name(),
        "SSL_CIPHER": connection.get_cipher_name() or "",
    }
    servername = connection.get_servername()
    if servername:
        environ["SSL_TLS_SNI"] = servername.decode("ascii", "replace")
    cert = connection.get_peer_certificate(as_cryptography=True)
    if cert is None:
        environ["SSL_CLIENT_VERIFY"] = "NONE"
        return environ
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    environ.update({
        "SSL_CLIENT_VERIFY": "SUCCESS",
        "SSL_CLIENT_S_DN": cert.subject.rfc4514_string(),
        "SSL_CLIENT_I_DN": cert.issuer.rfc4514_string(),
        "SSL_CLIENT_M_SERIAL": format(cert.serial_number, "X"),
        "SSL_CLIENT_V_START": f"{cert.not_valid_before_utc:%b %d %H:%M:%S %Y} GMT",
        "SSL_CLIENT_V_END": f"{cert.not_valid_after_utc:%b %d %H:%M:%S %Y} GMT",
        "SSL_CLIENT_CERT": cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    })
    if common_names:
        environ["SSL_CLIENT_S_DN_CN"] = str(common_names[0].value)
    return environ


def _tls_connection(request) -> SSL.Connection | None:
    """The OpenSSL connection under ``request``, over HTTP/1.x or HTTP/2.

    An HTTP/2 request's channel is a stream whose connection (``_conn``, no
    public accessor in Twisted) owns the transport.
    """
    channel = getattr(request, "channel", None)
    transport = getattr(getattr(channel, "_conn", channel), "transport", None)
    handle = getattr(transport, "getHandle", lambda: None)()
    return handle if isinstance(handle, SSL.Connection) else None
