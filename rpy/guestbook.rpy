"""A guestbook: an HTML form, escaped output and a CSRF token.

``GET /guestbook`` shows the entries and a form; ``POST /guestbook`` adds one
and redirects back (post/redirect/get, so reloading does not post twice).

What keeps it safe enough for a demo:

- every entry is HTML-escaped when shown, so ``<script>`` is shown, not run;
- the form carries a random token that must equal the ``gb_csrf`` cookie
  (double-submit cookie, ``SameSite=Strict``), so another site cannot post;
- bodies over 8 KiB are refused with 413, names and messages are trimmed,
  and only the newest 50 entries are kept.

The entries live in memory: they are lost when the server restarts or when
this file is saved (saving reloads the script).
"""

import html
import secrets
import time
from urllib.parse import parse_qs

from twisted.web.resource import Resource

MAX_BODY = 8192
MAX_ENTRIES = 50
COOKIE = b"gb_csrf"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Guestbook</title></head>
<body>
<h1>Guestbook</h1>
<form method="post">
  <input type="hidden" name="csrf" value="{token}">
  <p><label>Name <input name="name" maxlength="60" required></label></p>
  <p><label>Message <textarea name="message" maxlength="500" required></textarea></label></p>
  <p><button>Sign</button></p>
</form>
<ul>
{entries}
</ul>
</body></html>
"""


class Guestbook(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.entries = []  # (time, name, message), newest first

    def render_GET(self, request):
        token = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        if len(token) != 32 or not token.isalnum():
            token = secrets.token_hex(16)
            request.addCookie(COOKIE, token.encode(), path=b"/", httpOnly=True, sameSite="strict")
        items = "\n".join(
            f"<li><b>{html.escape(name)}</b> ({time.strftime('%Y-%m-%d %H:%M', time.gmtime(when))} UTC): "
            f"{html.escape(message)}</li>"
            for when, name, message in self.entries
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return PAGE.format(token=html.escape(token), entries=items).encode("utf-8")

    def render_POST(self, request):
        body = request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return self._refuse(request, 413, "The form is too large.")
        form = parse_qs(body.decode("utf-8", "replace"))
        token = form.get("csrf", [""])[0]
        cookie = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        if not cookie or not secrets.compare_digest(token, cookie):
            return self._refuse(request, 403, "Missing or wrong form token; reload the page and try again.")
        name = form.get("name", [""])[0].strip()[:60]
        message = form.get("message", [""])[0].strip()[:500]
        if not name or not message:
            return self._refuse(request, 400, "Both a name and a message are needed.")
        self.entries.insert(0, (time.time(), name, message))
        del self.entries[MAX_ENTRIES:]
        request.setResponseCode(303)
        request.setHeader(b"location", request.uri.split(b"?")[0].rsplit(b"/", 1)[-1] or b"./")
        return b""

    def _refuse(self, request, status, text):
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode("utf-8") + b"\n"


resource = Guestbook()
