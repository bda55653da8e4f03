"""Lifecycle hooks from ``Site(hooks={...})``: gunicorn's server hooks, our way.

Users of gunicorn put setup and teardown in ``on_starting``/``when_ready``/
``post_worker_init``/``on_exit`` and cheap per-request work in
``pre_request``/``post_request``; site.py is Python, so hooks are plain
callables there.  A failing hook is logged and never takes the server down:
a typo in a hook must not turn a reload into an outage.
"""

from __future__ import annotations

HOOKS = {
    "on_starting": "the Site, before the listeners open (in the master, or the single process)",
    "when_ready": "the Site, once listening and (with workers) every worker is up",
    "post_worker_init": "the Site, in each worker (or the single process) once its tree is built",
    "on_reload": "the new Site, after a successful reload",
    "on_exit": "the Site, just before the process exits",
    "pre_request": "the twisted.web request, before it is routed",
    "post_request": "the twisted.web request, once its response is finished",
}


def check_hooks(site) -> dict:
    """Validate ``site.hooks`` (a config ``Spec``): known names, callable values."""
    hooks = site.hooks
    if hooks is None:
        return {}
    if not isinstance(hooks, dict):
        raise site.fail(
            f"Site(hooks=...) expects a dict of hook name to function, got {type(hooks).__name__} {hooks!r}",
            "write hooks={'when_ready': my_function}",
        )
    for name, function in hooks.items():
        if name not in HOOKS:
            raise site.fail(f"Site(hooks=...) has an unknown hook {name!r}", "hooks are: " + ", ".join(HOOKS))
        if not callable(function):
            raise site.fail(f"Site(hooks=...) {name!r} must be a function, got {function!r}")
    return dict(hooks)


def run_hook(site, name: str, *args) -> None:
    """Call hook ``name`` if the site has one; log (not raise) what it raises."""
    function = site.hooks.get(name)
    if function is None:
        return
    try:
        function(*args)
    except Exception:
        from twisted.logger import Logger

        Logger().failure("hook {name} raised", name=name)
