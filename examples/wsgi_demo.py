"""The demo's WSGI app (Flask): mounted at wsgi.localhost, see docs/wsgi.md."""

import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.get("/")
def index():
    return f"Hello from Flask on twisthost (SCRIPT_NAME={request.script_root!r}, client {request.remote_addr})\n"


@app.get("/stream")
def stream():
    def ticks():
        for i in range(5):
            yield f"tick {i}\n"
            time.sleep(0.2)
    return Response(ticks(), mimetype="text/plain")


@app.get("/slow")
def slow():
    """Sleeps ?s= seconds: try ?s=5 against the 3 s deadline to see a 504 and a stack in the log."""
    time.sleep(float(request.args.get("s", "1")))
    return "done\n"


@app.get("/download/<name>")
def download(name):
    """The app decides, the host sends: X-Accel-Redirect to the internal Static at /protected.

    curl -i http://wsgi.localhost:8080/download/report.txt  (ETag, Range, sendfile: docs/static.md);
    ?deny=1 shows the refusal a real permission check would give.
    """
    if "deny" in request.args:
        return Response("not yours\n", status=403, mimetype="text/plain")
    response = Response(headers={"Content-Disposition": f'attachment; filename="{name}"'})
    response.headers["X-Accel-Redirect"] = f"/protected/{name}"
    return response
