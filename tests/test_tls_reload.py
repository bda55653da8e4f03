"""Certificates are re-read on reload (SIGHUP); open connections keep theirs and go on."""

from __future__ import annotations

import signal
import socket

from tls_support import CA, ConfigServer, client_context, tls_get

from conftest import free_port, wait_until, write_site


def wait_for_log(server, text: str, count: int = 1, timeout: float = 15.0) -> None:
    wait_until(lambda: server.log().count(text) >= count, timeout, what=f"{count} x {text!r} in the log")


def keep_alive_get(sock) -> bytes:
    """A GET on an open HTTP/1.1 connection; the response is read by its Content-Length."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().partition(b"content-length: ")[2].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_reload_swaps_certificates_without_dropping_connections(tmp_path):
    ca = CA(tmp_path)
    ca.issue("a", ["a.test"])
    port = free_port()
    config = write_site(tmp_path, f"""
        from twisthost import TLS, Host, Redirect, Site
        site = Site(listen=[TLS("tcp:{port}:interface=127.0.0.1")],
                    hosts=[Host("a.test", Redirect("https://elsewhere.test/"), cert="a.pem", key="a.key")])
    """)
    server = ConfigServer(config, [port])
    try:
        context = client_context(ca)
        first = tls_get(port, context, "a.test").cert
        open_conn = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                        server_hostname="a.test")
        assert keep_alive_get(open_conn).startswith(b"HTTP/1.1 301")

        ca.issue("a", ["a.test"])  # renewed: same names, new key and certificate
        server.signal(signal.SIGHUP)
        wait_for_log(server, "reloaded")
        renewed = tls_get(port, context, "a.test").cert
        assert renewed != first
        assert open_conn.getpeercert(binary_form=True) == first
        assert keep_alive_get(open_conn).startswith(b"HTTP/1.1 301")  # still served

        (tmp_path / "a.key").write_bytes(ca.issue("other", ["a.test"])[1].read_bytes())  # mismatch
        server.signal(signal.SIGHUP)
        wait_for_log(server, "reload failed")
        assert "does not match the certificate" in server.log()
        assert tls_get(port, context, "a.test").cert == renewed  # the last good one
        assert keep_alive_get(open_conn).startswith(b"HTTP/1.1 301")
        open_conn.close()
    finally:
        server.stop()
