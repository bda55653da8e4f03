"""Helpers for the hardening tests: a site with probe resources, raw exchanges, RSS."""

from __future__ import annotations

import re
import socket
import time

from conftest import ROOT, Server, free_port, write_site

RESOURCES = str(ROOT / "tests" / "resources")


def site_source(**options) -> str:
    """A site.py for host ``a.test`` with the probe resources of hardening_app.py."""
    extra = "".join(f", {name}={value!r}" for name, value in options.items())
    return f"""
        from twisthost import Host, Resource, Site
        R = lambda name: Resource(f"hardening_app:{{name}}()", pythonpath=[{RESOURCES!r}])
        site = Site(
            hosts=[Host("a.test", routes={{
                "/": R("echo"), "/slow": R("slow"), "/zeros": R("zeros"),
                "/boom": R("boom"), "/get-only": R("get_only"),
            }})]{extra},
        )
    """


def start(folder, **options) -> Server:
    return Server(write_site(folder, site_source(**options)), free_port())


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data``; read until the server closes (True) or ``timeout`` passes (False)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    chunks, deadline = [], time.monotonic() + timeout
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return b"".join(chunks), False
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Split a byte stream into (status, lower-cased headers, body) by Content-Length."""
    found = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0]).group(1))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        found.append((status, headers, rest[:length]))
        raw = rest[length:]
    return found


def vm_rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")
