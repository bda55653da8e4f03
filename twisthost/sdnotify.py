"""systemd's readiness protocol: ``READY=1``, ``RELOADING=1``, ``STOPPING=1``.

With ``Type=notify`` (or ``notify-reload``) systemd starts ordering and
reports ``systemctl reload`` as done only when told, over the datagram socket
named by ``$NOTIFY_SOCKET``.  The protocol is one datagram of ``KEY=value``
lines, so a dozen lines here beat a dependency.  Without the variable every
call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``) to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(states).encode(), address)
        except OSError:
            return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` with the timestamp systemd's notify-reload expects."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
