"""A real Flask app for the WSGI tests, always served through wsgiref.validate."""

from wsgiref.validate import validator

from flask import Flask, Response, jsonify, request, stream_with_context, url_for

flask_app = Flask(__name__)


@flask_app.get("/")
def index():
    return "hello from flask"


@flask_app.get("/where")
def where():
    return jsonify(
        script_name=request.environ["SCRIPT_NAME"],
        path_info=request.environ["PATH_INFO"],
        url=url_for("where", _external=True),
        remote_addr=request.remote_addr,
        scheme=request.scheme,
    )


@flask_app.post("/echo")
def echo():
    data = request.get_data()
    return jsonify(length=len(data), head=data[:20].decode("latin-1"), form=request.form.to_dict())


@flask_app.get("/stream")
def stream():
    def numbers():
        for i in range(5):
            yield f"line {i}\n"
    return Response(stream_with_context(numbers()), mimetype="text/plain")


class _SizedReads:
    """Between the validator and Flask: ``wsgiref.validate`` insists on ``read(size)``,
    while Werkzeug reads an input marked ``wsgi.input_terminated`` with ``read()``."""

    def __init__(self, stream):
        self.stream = stream

    def read(self, size=-1):
        if size is None or size < 0:
            return b"".join(iter(lambda: self.stream.read(65536), b""))
        return self.stream.read(size)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _sized_reads(environ, start_response):
    environ["wsgi.input"] = _SizedReads(environ["wsgi.input"])
    return flask_app(environ, start_response)


def create_app():
    """Factory form: ``WSGI("flaskapp:create_app()")``."""
    return validator(_sized_reads)


app = validator(_sized_reads)
