"""This page: a list of the other scripts in this folder, with their summaries.

The list is made on every request from the folder itself, so a script
dropped next to this one shows up without a restart.  Each summary is the
first line of the script's docstring, HTML-escaped.
"""

import ast
import html
import os

from twisted.web.resource import Resource

FOLDER = os.path.dirname(os.path.abspath(__file__))


def summary(path):
    try:
        with open(path, encoding="utf-8") as handle:
            doc = ast.get_docstring(ast.parse(handle.read(), path))
    except (OSError, SyntaxError, ValueError):
        return "(unreadable)"
    return (doc or "").strip().splitlines()[0] if doc else ""


class Index(Resource):
    isLeaf = True

    def render_GET(self, request):
        rows = []
        for name in sorted(os.listdir(FOLDER)):
            if not name.endswith(".rpy") or name.startswith(".") or name == "index.rpy":
                continue
            stem = html.escape(name[: -len(".rpy")])
            rows.append(f'<li><a href="{stem}">{stem}</a>: {html.escape(summary(os.path.join(FOLDER, name)))}</li>')
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        page = (
            '<!doctype html><html><head><meta charset="utf-8"><title>rpy examples</title></head>'
            "<body><h1>.rpy examples</h1><ul>\n" + "\n".join(rows) + "\n</ul></body></html>\n"
        )
        return page.encode("utf-8")


resource = Index()
