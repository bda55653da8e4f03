"""An ASGI 3 conformance checker, the counterpart of ``wsgiref.validate``, for the test apps.

``checked(app)`` wraps an app: every scope the server gives, every event its ``receive``
returns and every message the app sends is checked against the ASGI spec (HTTP 2.3,
WebSocket 2.3, lifespan 2.0).  A violation raises ``ASGISpecViolation`` inside the server,
whose log the process tests search for "ASGISpecViolation".
"""

from __future__ import annotations


class ASGISpecViolation(AssertionError):
    pass


def _require(condition, what: str) -> None:
    if not condition:
        raise ASGISpecViolation(what)


def _pair_list(headers, what: str) -> None:
    for pair in headers:
        _require(len(pair) == 2, f"{what}: {pair!r} is not a pair")
        name, value = pair
        _require(isinstance(name, bytes) and isinstance(value, bytes), f"{what}: {pair!r} is not bytes")


def check_scope(scope) -> None:
    _require(isinstance(scope, dict), "scope is not a dict")
    kind = scope.get("type")
    _require(kind in ("http", "websocket", "lifespan"), f"scope type {kind!r}")
    asgi = scope.get("asgi")
    _require(isinstance(asgi, dict) and asgi.get("version") == "3.0", f"scope asgi {asgi!r}")
    _require(isinstance(scope.get("state", {}), dict), "state is not a dict")
    if kind == "lifespan":
        return
    _require(scope.get("http_version") in ("1.0", "1.1", "2"), f"http_version {scope.get('http_version')!r}")
    _require(isinstance(scope.get("scheme"), str), "scheme is not a str")
    path = scope.get("path")
    _require(isinstance(path, str) and path.startswith("/"), f"path {path!r}")
    _require(isinstance(scope.get("raw_path"), bytes), "raw_path is not bytes")
    _require(isinstance(scope.get("query_string"), bytes), "query_string is not bytes")
    root = scope.get("root_path")
    _require(isinstance(root, str) and path.startswith(root), f"root_path {root!r} not a prefix of {path!r}")
    headers = scope.get("headers")
    _pair_list(headers, "scope headers")
    _require(all(name == name.lower() for name, _ in headers), "header names are not lower-case")
    client, server = scope.get("client"), scope.get("server")
    _require(client is None or (len(client) == 2 and isinstance(client[0], str) and isinstance(client[1], int)),
             f"client {client!r}")
    _require(server is None or (len(server) == 2 and isinstance(server[0], str)
                                and (server[1] is None or isinstance(server[1], int))), f"server {server!r}")
    if kind == "http":
        method = scope.get("method")
        _require(isinstance(method, str) and method == method.upper(), f"method {method!r}")
        _require(scope["scheme"] in ("http", "https"), f"http scheme {scope['scheme']!r}")
    else:
        _require(scope["scheme"] in ("ws", "wss"), f"websocket scheme {scope['scheme']!r}")
        subprotocols = scope.get("subprotocols", [])
        _require(all(isinstance(p, str) for p in subprotocols), f"subprotocols {subprotocols!r}")


def check_event(kind: str, event) -> None:
    """What the server's ``receive`` returned."""
    _require(isinstance(event, dict), "event is not a dict")
    name = event.get("type")
    if kind == "http":
        _require(name in ("http.request", "http.disconnect"), f"http event {name!r}")
        if name == "http.request":
            _require(isinstance(event.get("body", b""), bytes), "body is not bytes")
            _require(isinstance(event.get("more_body", False), bool), "more_body is not a bool")
    elif kind == "websocket":
        _require(name in ("websocket.connect", "websocket.receive", "websocket.disconnect"), f"ws event {name!r}")
        if name == "websocket.receive":
            text, data = event.get("text"), event.get("bytes")
            _require((text is None) != (data is None), "websocket.receive needs exactly one of text/bytes")
            _require(text is None or isinstance(text, str), "text is not a str")
            _require(data is None or isinstance(data, bytes), "bytes is not bytes")
        if name == "websocket.disconnect":
            _require(isinstance(event.get("code"), int), "disconnect code is not an int")
    else:
        _require(name in ("lifespan.startup", "lifespan.shutdown"), f"lifespan event {name!r}")


def checked(app):
    async def wrapper(scope, receive, send):
        check_scope(scope)
        kind = scope["type"]
        state = {"started": False, "done": False}

        async def checked_receive():
            event = await receive()
            check_event(kind, event)
            return event

        async def checked_send(message):
            name = message.get("type")
            if kind == "http":
                if name == "http.response.start":
                    _require(not state["started"], "http.response.start twice")
                    _require(isinstance(message["status"], int), "status is not an int")
                    _pair_list(message.get("headers", []), "response headers")
                    state["started"] = True
                elif name == "http.response.body":
                    _require(state["started"] and not state["done"], "http.response.body out of order")
                    state["done"] = not message.get("more_body", False)
            await send(message)

        await app(scope, checked_receive, checked_send)

    return wrapper
