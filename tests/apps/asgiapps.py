"""ASGI apps for tests/test_asgi.py: a real FastAPI app, a real Starlette app and raw ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from fastapi import FastAPI, File, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute

# ------------------------------------------------------------------ FastAPI

api = FastAPI()
STARTED = {"count": 0}


@api.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@api.get("/where")
async def where_am_i():
    return {"started": STARTED["count"]}


@api.get("/stream")
async def stream(n: int = 5):
    async def chunks():
        for i in range(n):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0.01)
    return StreamingResponse(chunks(), media_type="text/plain")


@api.post("/upload")
async def upload(file: UploadFile = File(...)):
    data = await file.read()
    import hashlib
    return {"filename": file.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@api.websocket("/ws/chat")
async def chat(websocket: WebSocket):
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if message["text"] == "close-4001":
                    await websocket.close(code=4001, reason="asked to")
                    return
                await websocket.send_text("echo: " + message["text"])
            else:
                await websocket.send_bytes(message["bytes"][::-1])
    except WebSocketDisconnect:
        return


@api.websocket("/ws/deny")
async def deny(websocket: WebSocket):
    await websocket.close(code=1008)


# ------------------------------------------------------------------ Starlette

async def homepage(request):
    return JSONResponse({"app": "starlette", "root_path": request.scope["root_path"],
                         "path": request.url.path, "state": request.state.greeting})


async def echo_ws(websocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text.upper())


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from lifespan"}


star = Starlette(routes=[Route("/", homepage), WebSocketRoute("/ws", echo_ws)], lifespan=lifespan)


def create_star():
    return star


# ------------------------------------------------------------------ raw ASGI apps

async def sleepy(scope, receive, send):
    """Blocks its own loop: time.sleep inside async def (what isolation is about)."""
    if scope["type"] != "http":
        return
    seconds = float(scope["query_string"].decode() or 2)
    time.sleep(seconds)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"slept"})


async def hang(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(3600)


async def scope_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    events = []
    while True:
        message = await receive()
        events.append({"type": message["type"], "size": len(message.get("body", b"")),
                       "more_body": message.get("more_body")})
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    shown = {k: v for k, v in scope.items() if k not in ("headers", "state", "raw_path", "query_string")}
    shown["raw_path"] = scope["raw_path"].decode("latin-1")
    shown["query_string"] = scope["query_string"].decode("latin-1")
    shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    shown["events"] = events
    shown["body_len"] = len(body)
    data = json.dumps(shown).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def fail_early(scope, receive, send):
    if scope["type"] != "http":
        return
    raise RuntimeError("boom before the response")


async def fail_late(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("boom after the response started")


async def big(scope, receive, send):
    """Streams ``size`` bytes (query string) in 64 KiB chunks; records how far it got."""
    if scope["type"] != "http":
        return
    size = int(scope["query_string"].decode() or 0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(size).encode())]})
    sent = 0
    block = b"x" * 65536
    while sent < size:
        chunk = block[:size - sent]
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += len(chunk)
        BIG_PROGRESS["sent"] = sent
    await send({"type": "http.response.body", "body": b""})


BIG_PROGRESS = {"sent": 0}


async def progress(scope, receive, send):
    if scope["type"] != "http":
        return
    data = json.dumps(BIG_PROGRESS).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": data})


async def failing_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the database is not there"})
        return


async def raising_startup(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise ConnectionError("cannot reach the database")


SHUTDOWN_FILE = os.environ.get("ASGI_SHUTDOWN_FILE")


async def with_lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["token"] = "from-startup"
                await send({"type": "lifespan.startup.complete"})
            else:
                if SHUTDOWN_FILE:
                    with open(SHUTDOWN_FILE, "w") as out:
                        out.write("shutdown ran")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["state"]["token"].encode()})


def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    return [b"wsgi"]


async def blocking(scope, receive, send):
    """Blocks its own loop with time.sleep(2) inside async def, again and again until the
    test creates the file ``<query>.release`` (at most 60 s); ``<query>.sleeping`` says it
    has started.  Nothing else can run on this app's loop meanwhile."""
    if scope["type"] != "http":
        return
    base = scope["query_string"].decode()
    with open(base + ".sleeping", "w"):
        pass
    deadline = time.monotonic() + 60
    while not os.path.exists(base + ".release") and time.monotonic() < deadline:
        time.sleep(2)  # never yields to the loop: the whole app is stuck meanwhile
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"unblocked"})



# Every app above, through the ASGI spec checker (tests/apps/asgicheck.py): the process tests
# mount these, so each scope and event twisthost gives is checked.
from asgicheck import checked  # noqa: E402

api_checked = checked(api)
star_checked = checked(star)
scope_checked = checked(scope_app)
