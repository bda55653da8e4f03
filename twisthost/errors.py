"""The one exception type a user sees for a wrong config, and where it points.

Every config mistake must end as a single readable line naming the file and
line the user has to edit, so all layers raise ``ConfigError`` and nothing
else reaches ``twistd`` or ``twisthost check``.
"""

from __future__ import annotations

import os
import sys
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

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        text = f"{prefix}error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text
