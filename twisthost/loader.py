"""Run ``site.py`` and return its ``Site``, or raise a located ``ConfigError``.

The file is plain Python executed in a fresh namespace, so users get loops,
environment variables and helpers for free; the price is that any exception
can come out of it, and each must be turned into a message naming the line
of site.py at fault rather than a traceback into our package.
"""

from __future__ import annotations

import os
import sys
import traceback

from .config import Site
from .errors import ConfigError, Where


def load(path: str) -> Site:
    """Execute the config file at ``path`` and return the ``Site`` bound to ``site``."""
    path = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {path}: {error.strerror}",
            hint="pass the path of your site.py, e.g. --config examples/site.py",
        ) from None
    try:
        code = compile(source, path, "exec")
    except SyntaxError as error:
        raise ConfigError(
            f"syntax error: {error.msg}",
            Where(path, error.lineno or 1),
            (error.text or "").strip(),
        ) from None

    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    namespace = {"__file__": path, "__name__": "__twisthost_site__"}
    try:
        exec(code, namespace)  # noqa: S102 - running the user's config is the point
    except ConfigError as error:
        raise error.located(_line_in(path, error.__traceback__)) from None
    except Exception as error:
        where = _line_in(path, error.__traceback__)
        message = traceback.format_exception_only(type(error), error)[-1].strip()
        raise ConfigError(
            f"{message}", where, "the config file raised this while running"
        ) from None

    site = namespace.get("site")
    if site is None:
        raise ConfigError(
            "the config file does not define 'site'",
            Where(path, max(1, source.count("\n"))),
            "end the file with: site = Site(listen=[...], hosts=[...])",
        )
    if not isinstance(site, Site):
        raise ConfigError(
            f"'site' must be a Site(...), got {type(site).__name__}",
            Where(path, _assignment_line(source)),
            "write site = Site(listen=[...], hosts=[...])",
        )
    return site


def _line_in(path: str, tb) -> Where | None:
    """The deepest traceback frame that is in the config file itself."""
    where = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == path:
            where = Where(path, lineno)
    return where


def _assignment_line(source: str) -> int:
    for number, line in enumerate(source.splitlines(), 1):
        if line.startswith("site") and "=" in line:
            return number
    return 1
