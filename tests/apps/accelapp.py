"""Apps that hand their body to the host: X-Accel-Redirect and X-Sendfile (Flask), wsgi.file_wrapper (raw).

Files are read from ``www/`` in the server's working folder (the test's
site.py folder).  ``accel_app`` runs behind ``wsgiref.validate``; the
file_wrapper app does not, because the validator wraps the returned iterable
and so hides the ``FileWrapper`` a server can send with sendfile (the
validated variant is there to prove the plain iteration still works).
"""

import io
import os
from urllib.parse import parse_qs
from wsgiref.validate import validator

from flask import Flask, Response, request, send_file

flask_app = Flask(__name__)


@flask_app.route("/download/<path:name>", methods=["GET", "HEAD", "POST"])
def download(name):
    """What a real app does after checking the user may have ``name``."""
    response = Response("the app's own body, never sent", status=202, mimetype="text/html")
    response.headers["X-Accel-Redirect"] = f"/protected/{name}"
    response.headers["Content-Disposition"] = f'attachment; filename="{name.rpartition("/")[2]}"'
    response.headers["X-App-Only"] = "dropped"
    response.set_cookie("seen", "yes")
    if "private" in request.args:
        response.headers["Cache-Control"] = "private, max-age=5"
    return response


@flask_app.get("/raw")
def raw():
    """Redirect to exactly the ``to`` query value (bad targets for the refusal tests)."""
    response = Response("app body")
    response.headers["X-Accel-Redirect"] = request.args["to"]
    return response


@flask_app.get("/sendfile")
def sendfile():
    """``X-Sendfile`` of exactly the ``path`` query value, and ``X-Accel-Redirect`` of ``to`` if given."""
    response = Response("the app's own body, never sent", status=202, mimetype="text/html")
    response.headers["X-Sendfile"] = request.args["path"]
    if "to" in request.args:
        response.headers["X-Accel-Redirect"] = request.args["to"]
    response.headers["Content-Disposition"] = "attachment"
    response.headers["X-App-Only"] = "dropped"
    return response


@flask_app.get("/hello")
def hello():
    return "no redirect here"


@flask_app.get("/file/<name>")
def file(name):
    """Flask's own ``send_file``, which returns ``wsgi.file_wrapper``."""
    path = os.path.abspath(f"www/{name}")  # Flask resolves relative paths against the app's folder
    return send_file(path, mimetype="application/octet-stream")


accel_app = validator(flask_app)


def _note(what: str, file) -> None:
    with open("closed.log", "a") as log:
        log.write(f"{what} {file.name} read={file.bytes_read} {file.tag}\n")


class TrackedFile(io.FileIO):
    """A real file that notes in ``closed.log`` whether the server closed it or it was leaked.

    ``tag`` (the request's ``?tag=``) tells the notes of concurrent tests apart;
    ``bytes_read`` shows whether Python read the file or the kernel sent it.
    """

    tag = "-"
    bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def close(self):
        if not self.closed:
            _note("closed", self)
        super().close()

    def __del__(self):
        if not self.closed:
            _note("leaked", self)
            io.FileIO.close(self)


def file_app(environ, start_response):
    """``?name=big.bin&offset=N&length=M&tag=T``: the file (from offset, M bytes) via wsgi.file_wrapper."""
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if query.get("name") == "bytesio":
        data = io.BytesIO(b"z" * 200_000)  # no fileno(): iterated
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](data)
    file = TrackedFile(f"www/{query['name']}", "rb")
    file.tag = query.get("tag", "-")
    file.seek(int(query.get("offset", "0")))
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in query:
        headers.append(("Content-Length", query["length"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](file, 1 << 16)


validated_file_app = validator(file_app)
