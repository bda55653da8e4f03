"""Helpers for the TLS tests: certificates made with ``cryptography`` and a server.

Not a test module: ``tests/test_tls*.py`` import it.  Keys are EC P-256, so
generating a dozen certificates takes milliseconds.  ``ConfigServer`` runs
twistd on the config's own ``listen`` list (conftest's ``Server`` replaces it
with ``--listen``, which would drop the TLS listeners).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import TWISTD, Server, wait_for_port

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _name(common_name: str, org: str = "twisthost tests") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    """A self-signed CA that issues server and client certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "twisthost test CA"):
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, names=(), *, common_name=None, days=90, start_days=-1,
              client=False, key_in_cert=False) -> tuple[Path, Path]:
        """Write ``stem.pem`` (and ``stem.key`` unless ``key_in_cert``); return (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or (names[0] if names else stem)))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW + start_days * DAY).not_valid_after(NOW + days * DAY)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        chain = cert.public_bytes(serialization.Encoding.PEM)
        if key_in_cert:
            cert_path.write_bytes(chain + _pem_key(key))
            return cert_path, cert_path
        cert_path.write_bytes(chain)
        key_path.write_bytes(_pem_key(key))
        return cert_path, key_path


def common_name_of(der: bytes) -> str:
    """The subject CN of a DER certificate, as ``ssl.SSLSocket.getpeercert(True)`` returns it."""
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


class ConfigServer(Server):
    """``twistd -n twisthost`` listening where its config says; ``ports`` are waited for."""

    def __init__(self, config: Path, ports: list[int]):
        self.config, self.port = config, ports[0]
        self.log_path = config.parent / f"twistd-{ports[0]}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "twisthost", "--config", str(config)],
            stdout=self.log_file, stderr=subprocess.STDOUT, cwd=config.parent,
        )
        try:
            for port in ports:
                wait_for_port(port, self.proc)
        except RuntimeError:
            output = self.log()
            self.stop()
            raise RuntimeError(f"twistd did not start:\n{output}") from None


def client_context(ca: CA | None = None, *, alpn=None, cert=None, **versions) -> ssl.SSLContext:
    """A client context trusting ``ca`` (or nothing checked when None)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    else:
        context.load_verify_locations(str(ca.path))
    if alpn:
        context.set_alpn_protocols(alpn)
    if cert:
        context.load_cert_chain(*map(str, cert))
    for name, version in versions.items():
        setattr(context, name, version)
    return context


@dataclass
class Fetched:
    """What one TLS request saw: the response and the connection's facts."""

    response: bytes
    cert: bytes  # the server certificate, DER
    version: str
    session: ssl.SSLSession
    session_reused: bool
    alpn: str | None

    @property
    def cert_name(self) -> str:
        return common_name_of(self.cert)


def tls_get(port: int, context: ssl.SSLContext, sni: str | None, host: str | None = None,
            path: str = "/", session=None) -> Fetched:
    """One HTTP/1.1 GET over a fresh TLS connection, read until the server closes."""
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname=sni, session=session)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or sni}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return Fetched(b"".join(chunks), sock.getpeercert(binary_form=True), sock.version(),
                       sock.session, sock.session_reused, sock.selected_alpn_protocol())


def h2_request(port: int, sni: str, method: str = "GET", path: str = "/", body: bytes = b"",
               headers=(), context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    """One request with the ``h2`` library over a fresh connection negotiating h2 by ALPN."""
    import h2.config
    import h2.connection

    context = context or client_context(None, alpn=["h2"])
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=sni)
    with sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        request_headers = [(":method", method), (":path", path), (":scheme", "https"),
                           (":authority", sni), *headers]
        if body:
            request_headers.append(("content-length", str(len(body))))
        conn.send_headers(1, request_headers, end_stream=not body)
        sock.sendall(conn.data_to_send())
        response = {}
        while body:  # respect the server's flow-control window, as a real client must
            size = min(len(body), conn.local_flow_control_window(1), conn.max_outbound_frame_size)
            if size == 0:
                _h2_receive(sock, conn, response)
                continue
            conn.send_data(1, body[:size], end_stream=size == len(body))
            body = body[size:]
            sock.sendall(conn.data_to_send())
        while "ended" not in response:
            _h2_receive(sock, conn, response)
        return response["status"], response["headers"], response.get("data", b"")


def _h2_receive(sock, conn, response: dict) -> None:
    """Read once from ``sock``, feed ``conn``, record events for stream 1 in ``response``."""
    import h2.events

    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("server closed the HTTP/2 connection")
    for event in conn.receive_data(chunk):
        if isinstance(event, h2.events.ResponseReceived):
            response["headers"] = {k.decode(): v.decode() for k, v in event.headers}
            response["status"] = int(response["headers"][":status"])
        elif isinstance(event, h2.events.DataReceived):
            response["data"] = response.get("data", b"") + event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            response["ended"] = True
        elif isinstance(event, h2.events.StreamReset):
            raise ConnectionError(f"stream reset: {event.error_code!r}")
    sock.sendall(conn.data_to_send())
