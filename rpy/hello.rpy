"""Hello, world: the smallest useful .rpy script.

A .rpy file is plain Python that binds the name ``resource`` to a
twisted.web resource.  twisthost runs the file once, keeps the resource, and
runs it again only when you save the file.  ``/hello`` and ``/hello.rpy``
both reach it.
"""

from twisted.web.resource import Resource


class Hello(Resource):
    isLeaf = True  # answer /hello/anything too, instead of 404

    def render_GET(self, request):
        name = request.args.get(b"name", [b"world"])[0].decode("utf-8", "replace")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"Hello, {name}!\n".encode("utf-8")


resource = Hello()
