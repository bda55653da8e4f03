"""Resolve ``"pkg.mod:name"`` and ``"pkg.mod:factory()"`` targets from site.py.

Shared by ``WSGI`` and ``Resource`` so both find user code the same way: with
the config file's folder and the service's ``pythonpath`` first on
``sys.path``, and every failure reported as a ``ConfigError`` at the line of
the service in site.py (found by ``twisthost check``, not by the first request).
Workers forked from a master forget the modules the master imported for the
site, so that they import the site's code afresh.
"""

from __future__ import annotations

import importlib
import sys
import traceback

from .errors import ConfigError


def resolve(service, target: str, pythonpath=()):
    """Import ``target`` for ``service`` (a config object); call it if it ends in ``()``."""
    module_name, _, attr_path = target.partition(":")
    call = attr_path.endswith("()")
    attr_path = attr_path[:-2] if call else attr_path
    for folder in reversed((service.base_dir(), *pythonpath)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        obj = importlib.import_module(module_name)
    except Exception as error:
        raise ConfigError(
            f"cannot import {module_name!r} for {type(service).__name__}({target!r}): "
            f"{_one_line(error)}",
            service.where,
            "the module path is relative to the config file's folder or pythonpath=[...]",
        ) from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"module {module_name!r} has no attribute {attr_path!r}",
                service.where,
            ) from None
    if call:
        if not callable(obj):
            raise ConfigError(f"{target!r}: {attr_path!r} is not callable", service.where)
        try:
            obj = obj()
        except Exception as error:
            raise ConfigError(
                f"{target!r} raised {_one_line(error)}", service.where,
                "run the factory by hand to see the full traceback",
            ) from None
    return obj


def _one_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()


# ----------------------------------------------------------------- forked workers

#: Top-level packages a forked worker keeps from its master even when the
#: master imported them for a site: they hold no site state, and importing
#: them twice would break (Twisted's adapter registry refuses a second
#: registration) or waste the memory the fork shares.
_KEPT = frozenset(sys.stdlib_module_names) | {"twisted", "twisthost", "zope"}
_before_sites: frozenset | None = None
_forgotten: list = []  # kept alive: see forget_site_modules


def mark_site_free() -> None:
    """Remember the modules loaded now, before any site.py or app is imported."""
    global _before_sites
    _before_sites = frozenset(sys.modules)


def forget_site_modules() -> None:
    """In a forked worker: drop the site's code (and its libraries) from ``sys.modules``.

    The worker imports them afresh, so after a reload it serves the new
    code, as a worker started from scratch would.  The old module objects
    stay referenced here: freeing one could close a file descriptor number
    the fork closed and the worker has since reused.
    """
    if _before_sites is None:
        return
    names = [name for name in sys.modules
             if name not in _before_sites and name.partition(".")[0] not in _KEPT]
    _forgotten.extend(sys.modules.pop(name) for name in names)
