"""Run ``site.py`` and return its ``Site``, or raise a located ``ConfigError``.

The file is plain Python executed in a fresh namespace, so users get loops,
environment variables and helpers for free; the price is that any exception
can come out of it, and each must be turned into a message naming the line
of site.py at fault rather than a traceback into our package.  Mistakes
found by the config objects are collected (``errors.collecting``), so the
file runs to its end and every one of them is reported at once.
"""

from __future__ import annotations

import os
import re
import sys
import traceback

from .config import Site
from .errors import ConfigError, Where, collecting


def load(path: str) -> Site:
    """Execute the config file at ``path`` and return the ``Site`` bound to ``site``.

    Raises every mistake found; inside an outer ``collecting`` block (as in
    ``service.prepare``) those of config objects are left for it to raise,
    and the ``Site`` may then be marked ``failed``.
    """
    with collecting():
        return _load(path)


def _load(path: str) -> Site:
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
            syntax_hint(error, source.splitlines()),
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


# Python's SyntaxError messages, and what to do about each; the first match wins.
_SYNTAX_HINTS = (
    (r"forgot a comma", "put a comma after {first} and before {second}"),
    (r"'(?P<bracket>.)' was never closed", "the '{bracket}' opened here has no closing '{closing}': add it where the call or list ends"),
    (r"closing parenthesis '(?P<bracket>.)' does not match opening parenthesis '(?P<open>.)'",
     "a '{open}' opened earlier must be closed with '{open_closing}' before this '{bracket}'"),
    (r"unmatched '(?P<bracket>.)'", "this '{bracket}' closes nothing: remove it, or add the bracket it should close"),
    (r"unterminated (triple-quoted )?string", "a string starting here has no closing quote: end it with the quote it begins with"),
    (r"positional argument follows keyword argument",
     "give positional values (a host name, a service) before options written name=value"),
    (r"keyword argument repeated", "an option is given twice in one call: keep one"),
    (r"unexpected indent", "this line is indented further than the one before it: line it up with that statement"),
    (r"unindent|indented block", "the indentation of this line matches no block above it: indent with spaces, consistently"),
    (r"invalid (non-printable )?character", "remove the character (pasted typographic quotes or spaces?): use plain ASCII"),
    (r"expected ':'", "end the if/for/def/with/class line with ':'"),
    (r"Maybe you meant '==' or ':='", "options are written name=value inside a call's parentheses; compare with =="),
)
_CLOSING = {"(": ")", "[": "]", "{": "}"}


def syntax_hint(error: SyntaxError, lines: list[str]) -> str:
    """What to change for a SyntaxError, in words (the message and line number say where)."""
    for pattern, hint in _SYNTAX_HINTS:
        match = re.search(pattern, error.msg)
        if match:
            found = match.groupdict()
            return hint.format(
                **found,
                closing=_CLOSING.get(found.get("bracket", ""), ")"),
                open_closing=_CLOSING.get(found.get("open", ""), ")"),
                **(_comma_sides(error, lines) if "{first}" in hint else {}),
            )
    column = f"column {error.offset} of " if error.offset else ""
    return (f"Python could not read {column}this line: look for a missing or extra comma, "
            "bracket or quote here or at the end of the line before")


def _comma_sides(error: SyntaxError, lines: list[str]) -> dict:
    """The two things Python found side by side (``first``, ``second``) for the missing-comma hint."""
    start, end = error.lineno or 1, error.end_lineno or error.lineno or 1
    offset, end_offset = (error.offset or 1) - 1, (error.end_offset or 1) - 1
    if not (0 < start <= len(lines) and 0 < end <= len(lines)):
        return {"first": "one item", "second": "the next"}
    if start == end:
        parts = lines[start - 1][offset:end_offset].rsplit(None, 1)
        return {"first": parts[0], "second": parts[-1]}
    first = lines[start - 1][offset:].strip()
    second = lines[end - 1][:end_offset].strip()
    return {"first": f"{first} (line {start})", "second": f"{second} (line {end})"}
