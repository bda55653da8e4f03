"""Every private name of Twisted, CPython or a library that twisthost still uses, fenced here.

Each name has a contract test (``tests/unit/test_compat.py``) that fails
with a clear message on a version that changed it, so an upgrade breaks CI
in one place instead of somewhere in a request path.  Keep this module
short: the goal is to need nothing in it.
"""

from __future__ import annotations

# HTTP/2 over TLS: Twisted's HTTP/2 connection has no public import path
# (``twisted.web.http`` imports it from here for its own protocol switch).
from twisted.web._http2 import H2Connection

__all__ = ["H2Connection"]
