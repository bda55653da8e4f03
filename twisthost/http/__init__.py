"""The HTTP layer: protocols only, knowing nothing of sites or services.

- :mod:`~twisthost.http.wire` -- the grammar both directions share: tokens,
  field lines, Host syntax (RFC 9110, RFC 3986).
- :mod:`~twisthost.http.h1` -- the sans-IO HTTP/1.1 request reader: bytes
  in, events out, no Twisted import (RFC 9112).
- :mod:`~twisthost.http.ranges` -- Range, If-Range and multipart/byteranges (RFC 9110 section 14).
"""
