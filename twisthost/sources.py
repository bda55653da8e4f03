"""What the admin listener shows of a build: thread pools, upstreams, certificates.

Each capability keeps its numbers as plain attributes on its own objects
(``PoolStats``, ``Upstream.status()``, ``KeyPair``); this module turns them
into table rows for /status (and, through ``admin.SourceCollector``, into
Prometheus gauges) and into /readyz checks, so the capability modules need
not know about the admin listener.
"""

from __future__ import annotations

import datetime

from .asgi import AppLoop
from .threadpools import WorkerPool


def register(context) -> None:
    """Add the status sources and readiness checks of a finished build."""
    now = context.reactor.seconds
    pools = [service for service in context.services if isinstance(service, WorkerPool)]
    if pools:
        mounts = pool_mounts(context.mounts)
        context.status_sources["pools"] = lambda: [pool_row(pool, mounts.get(pool, ())) for pool in pools]
        context.readiness.append(lambda: pools_ready(pools))
    apps = [service for service in context.services if isinstance(service, AppLoop)]
    if apps:
        app_routes = asgi_mounts(context.mounts)
        context.status_sources["asgi"] = lambda: [asgi_row(app, app_routes.get(app, ())) for app in apps]
        context.readiness.append(lambda: asgi_ready(apps))
    upstreams = context.shared.get("upstreams")
    if upstreams:
        proxies = upstream_mounts(context.mounts)
        context.status_sources["upstreams"] = lambda: [
            upstream_row(u, now(), proxies.get(u, ("", ""))) for u in upstreams]
        context.readiness.append(lambda: upstreams_ready(upstreams, now()))
    listeners = context.shared.get("tls")
    if listeners:
        context.status_sources["certificates"] = lambda: certificate_rows(listeners)


def pool_mounts(mounts) -> dict:
    """pool -> [(host, route), ...] of the WSGI mounts it runs (several for a shared ``pool=``)."""
    found: dict = {}
    for host, route, resource in mounts:
        pool = getattr(resource, "pool", None)
        if isinstance(pool, WorkerPool):
            found.setdefault(pool, []).append((host, route))
    return found


def pool_row(pool: WorkerPool, mounts=()) -> dict:
    """A pool's numbers, named by the host and route it serves: two apps with the
    same import target on two hosts are two pools, and their names alike."""
    stats = pool.stats
    return {
        "host": ", ".join(host for host, _ in mounts),
        "route": ", ".join(route for _, route in mounts),
        "name": stats.name,
        "threads": stats.threads,
        "max_threads": stats.max_threads,
        "busy": stats.busy,
        "queued": stats.queued,
        "queue_limit": stats.queue_limit,
        "completed": stats.completed,
        "rejected_503": stats.rejected,
        "timeouts_504": stats.timeouts,
        "queue_wait_max_ms": round(stats.queue_wait_max * 1000, 3),
    }


def pools_ready(pools) -> tuple:
    stopped = [pool.stats.name for pool in pools if not pool.running]
    return ("wsgi pools", not stopped, f"not running: {', '.join(stopped)}" if stopped else "")


def asgi_mounts(mounts) -> dict:
    """app loop -> [(host, route), ...] of the ASGI mount it runs."""
    found: dict = {}
    for host, route, resource in mounts:
        apploop = getattr(resource, "apploop", None)
        if apploop is not None:
            found.setdefault(apploop, []).append((host, route))
    return found


def asgi_row(apploop, mounts=()) -> dict:
    """An ASGI app's numbers (its event loop), named by its host and route."""
    stats = apploop.stats
    return {
        "host": ", ".join(host for host, _ in mounts),
        "route": ", ".join(route for _, route in mounts),
        "name": stats.name,
        "active": stats.active,
        "max_concurrency": stats.max_concurrency,
        "websockets": stats.websockets,
        "completed": stats.completed,
        "rejected_503": stats.rejected,
        "timeouts_504": stats.timeouts,
    }


def asgi_ready(apps) -> tuple:
    stopped = [app.stats.name for app in apps if not app.ready]
    return ("asgi apps", not stopped, f"not running: {', '.join(stopped)}" if stopped else "")


def upstream_mounts(mounts) -> dict:
    """upstream -> (host, route) of the ``Proxy`` it belongs to.

    Each ``Proxy`` has upstreams of its own (health, failures, connections), so
    one URL behind two proxies is two rows; the mount tells them apart, on
    /status and as the labels of their /metrics series (which would otherwise
    be duplicates with conflicting values).
    """
    found: dict = {}
    for host, route, resource in mounts:
        gateway = getattr(resource, "gateway", None)
        for upstream in getattr(gateway, "upstreams", ()):
            found[upstream] = (host, route)
    return found


def upstream_row(upstream, now: float, mount: tuple[str, str] = ("", "")) -> dict:
    status = upstream.status()
    return {
        "host": mount[0],
        "route": mount[1],
        "url": status["url"],
        "healthy": bool(status["healthy"]) and status["down_until"] <= now,
        "backup": "yes" if status["backup"] else "no",
        "weight": status["weight"],
        "active": status["active"],
        "last_check": upstream.last_check or "-",
    }


def upstreams_ready(upstreams, now: float) -> tuple:
    """Ready when some upstream can take traffic (per-proxy detail is on /status)."""
    healthy = [u for u in upstreams if upstream_row(u, now)["healthy"]]
    return ("upstreams", bool(healthy), "" if healthy else "every upstream is down")


def certificate_rows(listeners) -> list:
    now = datetime.datetime.now(datetime.timezone.utc)
    pairs = {}
    for listener in listeners.values():
        for pair in [listener.default, *listener.names.values()]:
            pairs[pair.cert_path] = pair
    return [
        {"file": path, "names": " ".join(pair.names), "expires": f"{pair.expires:%Y-%m-%d %H:%M} UTC",
         "days_left": (pair.expires - now).days}
        for path, pair in sorted(pairs.items())
    ]
