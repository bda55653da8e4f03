"""Content-coding for static files: which encoding a client gets, and gzip on the fly.

Static files prefer precompressed sidecars (``app.js.br``) because they cost
nothing per request.  When a text file has none, a gzip of it is made once
and kept in a small memory-bounded cache keyed by the file's ETag, so a
changed file is recompressed and a popular one is not compressed per request.
"""

from __future__ import annotations

import gzip
import re
from collections import OrderedDict
from functools import lru_cache

#: Content-Coding name -> sidecar file suffix.
SIDECAR_SUFFIX = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}

_CODING = re.compile(rb"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:;\s*q\s*=\s*([0-9.]+)\s*)?$")
_COMPRESSIBLE = re.compile(
    r"^(text/|application/(javascript|ecmascript|json|xml|wasm|manifest\+json|x-javascript)"
    r"|image/svg\+xml|image/x-icon|font/(ttf|otf)|application/[\w.+-]+\+(json|xml))"
)


def is_compressible(content_type: str) -> bool:
    """Types worth compressing; for these a response always says ``Vary: Accept-Encoding``."""
    return bool(_COMPRESSIBLE.match(content_type))


@lru_cache(maxsize=256)  # clients send a handful of distinct values; parsing is ~10 µs
def accepted_codings(header: bytes | None) -> dict[str, float]:
    """Parse ``Accept-Encoding`` into ``{coding: q}``; malformed items are skipped.

    The dict is shared between calls with the same header: read it, never change it.
    """
    result: dict[str, float] = {}
    if not header:
        return result
    for item in header.split(b","):
        match = _CODING.match(item)
        if not match:
            continue
        try:
            q = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        if 0 <= q <= 1:
            name = match.group(1).decode("ascii").lower()
            result["gzip" if name == "x-gzip" else name] = q
    return result


def choose_coding(header: bytes | None, offered) -> str | None:
    """The offered coding the client likes best (q > 0); ties go to ``offered`` order."""
    prefs = accepted_codings(header)
    star = prefs.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = prefs.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best


class GzipCache:
    """Gzipped bodies keyed by (path, etag), evicting least recently used past ``limit`` bytes."""

    MAX_FILE = 2 * 1024 * 1024  # bigger text files go out uncompressed: ship a .gz sidecar

    def __init__(self, limit: int = 32 * 1024 * 1024):
        self.limit = limit
        self.size = 0
        self.entries: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, path: str, etag: bytes, read) -> bytes:
        """The gzip of the file's bytes; ``read()`` is only called on a miss."""
        key = (path, etag)
        body = self.entries.get(key)
        if body is not None:
            self.entries.move_to_end(key)
            return body
        body = gzip.compress(read(), compresslevel=6, mtime=0)
        self.entries[key] = body
        self.size += len(body)
        while self.size > self.limit and self.entries:
            _, old = self.entries.popitem(last=False)
            self.size -= len(old)
        return body
