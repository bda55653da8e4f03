"""A tiny ASGI app for the demo (asgi.localhost in examples/site.py): raw ASGI 3, no framework.

    curl http://asgi.localhost:8080/                 # JSON, with the lifespan's state
    curl -N http://asgi.localhost:8080/stream        # a streamed response, one line a second
    curl http://asgi.localhost:8080/block            # blocks this app's loop 2 s (time.sleep in async def):
    curl http://static.localhost:8080/               #   ... meanwhile every other host still answers at once
    python -m websockets ws://asgi.localhost:8080/ws # an echo WebSocket (any client works)

Under FastAPI or Starlette you write the same with their routing; mount them the same way:
``ASGI("myproject.main:app")``.  See docs/asgi.md.
"""

import asyncio
import json
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = time.strftime("%H:%M:%S")
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await echo(receive, send)
    elif scope["path"] == scope["root_path"] + "/stream":
        await stream(send)
    elif scope["path"] == scope["root_path"] + "/block":
        time.sleep(2)  # a blocking call in async def: it stalls this app only
        await answer(send, {"blocked": "2 s"})
    else:
        await answer(send, {"hello": "from an ASGI app", "path": scope["path"],
                            "started": scope["state"].get("started")})


async def answer(send, document) -> None:
    body = json.dumps(document).encode() + b"\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def stream(send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(5):
        await send({"type": "http.response.body", "body": f"line {i}\n".encode(), "more_body": True})
        await asyncio.sleep(1)
    await send({"type": "http.response.body", "body": b""})


async def echo(receive, send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
