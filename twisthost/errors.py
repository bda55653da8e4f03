"""The one exception type a user sees for a wrong config, and where it points.

Every config mistake must end as a single readable line naming the file and
line the user has to edit, so all layers raise ``ConfigError`` and nothing
else reaches ``twistd`` or ``twisthost check``.
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from contextvars import ContextVar
from dataclasses import dataclass

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Where:
    """A place in a config file: what an error message points at."""

    filename: str
    line: int

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}"


def caller_location() -> Where | None:
    """The first frame outside this package: the line in site.py that built us.

    Config objects record it at construction so that checks which run later
    (duplicate names across hosts, missing files) still point at the right
    ``Host(...)`` or ``Static(...)`` call instead of at ``Site(...)``.
    """
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (
            os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)
            or filename.startswith("<")
        ):
            return Where(filename, frame.f_lineno)
        frame = frame.f_back
    return None


class ConfigError(Exception):
    """A config mistake: message, location and a one-line fix hint."""

    def __init__(self, message: str, where: Where | None = None, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def located(self, where: Where | None) -> "ConfigError":
        """This error, pointed at C{where} unless it already points somewhere."""
        if self.where is None and where is not None:
            self.where = where
        return self

    def __reduce__(self):
        # A worker's build check sends its errors to the master pickled.
        return type(self), (self.message, self.where, self.hint)

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        text = f"{prefix}error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigErrors(ConfigError):
    """Every mistake one run found, so a config is fixed in one round, not one per error.

    It is a ``ConfigError`` (the first one's message, place and hint) so that
    callers which handle one need no change; ``str()`` gives them all, in
    file and line order.
    """

    def __init__(self, errors: list[ConfigError]):
        flat = [e for error in errors for e in _each(error)]
        flat.sort(key=lambda e: (e.where is None, e.where.filename if e.where else "", e.where.line if e.where else 0))
        super().__init__(flat[0].message, flat[0].where, flat[0].hint)
        self.errors = flat

    def __reduce__(self):
        return type(self), (self.errors,)

    def __str__(self) -> str:
        return "\n".join([*map(ConfigError.__str__, self.errors), f"{len(self.errors)} errors"])


def _each(error: ConfigError) -> list[ConfigError]:
    return error.errors if isinstance(error, ConfigErrors) else [error]


def combined(errors: list[ConfigError]) -> ConfigError:
    """One error to raise for ``errors`` (not empty)."""
    return errors[0] if len(errors) == 1 else ConfigErrors(errors)


_found: ContextVar[list | None] = ContextVar("twisthost_config_errors", default=None)


@contextlib.contextmanager
def collecting():
    """Within this block config mistakes are gathered (see :func:`record`) and raised together at its end.

    A block inside another one adds to the outer block's list and leaves the
    raising to it (an error that ends the inner block early passes through),
    so ``load`` gathers alone when called by itself and, inside ``prepare``,
    lets the build look for more before everything is reported.
    """
    outer = _found.get()
    if outer is not None:
        yield outer
        return
    found: list = []
    token = _found.set(found)
    try:
        yield found
    except ConfigError as error:
        found.extend(e for e in _each(error) if e not in found)  # raise_collected's are in already
    finally:
        _found.reset(token)
    if found:
        raise combined(found) from None


def raise_collected():
    """End the :func:`collecting` block now with what it found, when going on would only meet its consequences."""
    raise combined(_found.get())


def record(error: ConfigError) -> bool:
    """Keep ``error`` for the end of the :func:`collecting` block; False when none is open (raise it then)."""
    found = _found.get()
    if found is None:
        return False
    found.append(error)
    return True


@contextlib.contextmanager
def noted():
    """Around one step of a build that others do not depend on: in a collecting run its
    ``ConfigError`` is recorded and the build goes on to the next step."""
    try:
        yield
    except ConfigError as error:
        if not record(error):
            raise


def gather(steps) -> None:
    """Run independent checks (callables) and raise what all of them found, not only the first."""
    errors = []
    for step in steps:
        try:
            step()
        except ConfigError as error:
            errors.append(error)
    if errors:
        raise combined(errors)


def item_where(where: Where | None, callee: str, keyword: str, item=None) -> Where | None:
    """The line of ``keyword=`` (or of its list element equal to ``item``) in the call at ``where``.

    Plain values such as endpoint strings carry no place of their own, so
    the config file is parsed again to point at the line the user wrote
    them on; ``where`` itself when the call cannot be found (a value built
    elsewhere, a file changed since it ran).
    """
    if where is None:
        return None
    try:
        with open(where.filename, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return where
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and node.lineno <= where.line <= (node.end_lineno or node.lineno)
        and _callee_name(node.func) == callee
    ]
    if not calls:
        return where
    call = max(calls, key=lambda node: node.lineno)  # the innermost one
    for kw in call.keywords:
        if kw.arg != keyword:
            continue
        node = kw.value
        if item is not None and isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                if isinstance(element, ast.Constant) and element.value == item:
                    return Where(where.filename, element.lineno)
        return Where(where.filename, node.lineno)
    return where


def _callee_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None
