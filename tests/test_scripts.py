"""``Scripts(folder)``: .rpy resource scripts through a real twistd.

The repo's own ``rpy/`` examples are served as users would mount them; the
behaviour around them (reload on change, load errors, path safety) uses
scripts written into the test's tmp folder.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, config_error, raw_request

RPY = ROOT / "rpy"


def script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "from twisted.web.resource import Resource\n"
        "class Page(Resource):\n"
        "    isLeaf = True\n"
        "    def render_GET(self, request):\n"
        f"        return {text!r}.encode()\n"
        "resource = Page()\n"
    )
    return path


@pytest.fixture
def examples(serve):
    return serve(f"""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[Host("localhost", routes={{"/": Scripts({str(RPY)!r}), "/tools": Scripts({str(RPY)!r})}})])
    """)


def test_hello_by_name_and_by_file_name(examples):
    for path in ("/hello", "/hello.rpy", "/tools/hello"):
        status, _, body = examples.request(path=path)
        assert (status, body) == (200, b"Hello, world!\n"), path
    assert examples.request(path="/hello?name=Ada")[2] == b"Hello, Ada!\n"


def test_time_is_json(examples):
    status, headers, body = examples.request(path="/time")
    assert status == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert abs(data["unix"] - time.time()) < 60
    assert data["iso"].endswith("Z")


def test_index_lists_the_other_examples(examples):
    for path in ("/", "/tools/"):
        status, _, body = examples.request(path=path)
        assert status == 200
        links = re.findall(rb'href="([a-z]+)"', body)
        assert links == [b"guestbook", b"hello", b"time", b"wait"]


def test_folder_url_without_slash_redirects(examples):
    status, headers, _ = examples.request(path="/tools?x=1")
    assert status == 301 and headers["location"] == "tools/?x=1"


def test_deferred_script_does_not_block_others(examples):
    slow = {}

    def wait():
        slow["answer"] = examples.request(path="/wait?seconds=2")

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert examples.request(path="/hello")[0] == 200
    assert waiter.is_alive(), "hello should be answered while wait.rpy is still waiting"
    waiter.join(10)
    status, _, body = slow["answer"]
    assert status == 200 and json.loads(body) == {"waited": 2.0}
    assert examples.request(path="/wait?seconds=99")[0] == 400


def test_guestbook_form_escapes_and_wants_its_token(examples):
    status, headers, page = examples.request(path="/guestbook")
    assert status == 200
    cookie = re.search(r"gb_csrf=(\w+)", headers["set-cookie"]).group(1)
    assert f'value="{cookie}"'.encode() in page
    form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"gb_csrf={cookie}"}

    body = f"csrf={cookie}&name=Mallory&message=%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    status, headers, _ = examples.request("POST", "/guestbook", headers=form, body=body)
    assert status == 303 and headers["location"] == "guestbook"
    page = examples.request(path="/guestbook", headers={"Cookie": f"gb_csrf={cookie}"})[2]
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page and b"<script>" not in page

    no_cookie = {"Content-Type": "application/x-www-form-urlencoded"}
    assert examples.request("POST", "/guestbook", headers=no_cookie, body=body)[0] == 403
    wrong = f"csrf={'0' * 32}&name=a&message=b"
    assert examples.request("POST", "/guestbook", headers=form, body=wrong)[0] == 403
    huge = body + "&pad=" + "x" * 10000
    assert examples.request("POST", "/guestbook", headers=form, body=huge)[0] == 413


def test_script_runs_once_and_reloads_when_edited(serve, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    counter = tmp_path / "runs"
    page = folder / "page.rpy"
    source = (
        "from twisted.web.static import Data\n"
        f"with open({str(counter)!r}, 'a') as f: f.write('run\\n')\n"
        "resource = Data(b'{text}', 'text/plain')\n"
    )
    page.write_text(source.format(text="first"))
    server = serve("""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[
            Host("localhost", Scripts("scripts")),
            Host("frozen.localhost", Scripts("scripts", reload=False)),
        ])
    """)
    for _ in range(5):
        assert server.request(path="/page")[2] == b"first"
    assert counter.read_text() == "run\n"
    assert server.request(path="/page", host="frozen.localhost")[2] == b"first"
    assert counter.read_text() == "run\nrun\n"  # each mount has its own cache

    page.write_text(source.format(text="second version"))
    assert server.request(path="/page")[2] == b"second version"
    assert server.request(path="/page")[2] == b"second version"
    assert counter.read_text() == "run\nrun\nrun\n"
    assert server.request(path="/page", host="frozen.localhost")[2] == b"first"


def test_load_errors_are_500_without_traceback_but_logged(serve, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "syntax.rpy").write_text("resource = (\n")
    (folder / "raises.rpy").write_text("raise RuntimeError('database password is hunter2')\n")
    (folder / "empty.rpy").write_text("x = 1\n")
    server = serve("""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[Host("localhost", Scripts("scripts")), Host("debug.localhost", Scripts("scripts", debug=True))])
    """)
    for name in ("syntax", "raises", "empty"):
        status, _, body = server.request(path=f"/{name}")
        assert status == 500, name
        assert b"Traceback" not in body and b"hunter2" not in body and b"syntax.rpy" not in body
        assert body.startswith(b"500 Internal Server Error")
    log = server.log()
    assert "SyntaxError" in log and "RuntimeError: database password is hunter2" in log
    assert "did not assign a twisted.web resource" in log

    status, _, body = server.request(path="/raises", host="debug.localhost")
    assert status == 500 and b"Traceback" in body and b"hunter2" in body

    # fixing the file fixes the page
    script(folder, "syntax.rpy", "fixed")
    status, _, body = server.request(path="/syntax")
    assert (status, body) == (200, b"fixed")


def test_traversal_and_symlink_escape_are_refused(serve, tmp_path):
    folder = tmp_path / "scripts"
    outside = tmp_path / "outside"
    marker = tmp_path / "escaped"
    script(folder, "ok.rpy", "ok")
    outside.mkdir()
    (outside / "evil.rpy").write_text(f"open({str(marker)!r}, 'w').close()\nfrom twisted.web.static import Data\nresource = Data(b'evil', 'text/plain')\n")
    (folder / "link.rpy").symlink_to(outside / "evil.rpy")
    (folder / "alias.rpy").symlink_to(folder / "ok.rpy")  # inside the folder: fine
    (folder / "linkdir").symlink_to(outside, target_is_directory=True)
    (folder / "secret.txt").write_text("do not serve")
    (folder / ".hidden.rpy").write_text("resource = None\n")
    server = serve("""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[Host("localhost", Scripts("scripts"))])
    """)
    for path in ("/link", "/link.rpy", "/linkdir/evil", "/linkdir/evil.rpy", "/secret.txt",
                 "/.hidden", "/.hidden.rpy", "/%2e%2e/outside/evil", "/..%2foutside%2fevil.rpy"):
        response = raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        assert response.startswith(b"HTTP/1.1 404 "), (path, response[:80])
    assert not marker.exists()
    assert server.request(path="/alias")[2] == b"ok"
    # below a script, the rest of the path is the script's business, not a file path
    assert server.request(path="/ok.rpy/..%2f..%2foutside%2fevil.rpy")[2] == b"ok"
    assert not marker.exists()


def test_static_files_only_when_asked(serve, tmp_path):
    folder = tmp_path / "scripts"
    script(folder, "sub/index.rpy", "sub index")
    script(folder, "sub/page.rpy", "sub page")
    (folder / "style.css").write_text("body { color: red }")
    (folder / "sub" / ".env").write_text("SECRET=1")
    server = serve("""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[
            Host("localhost", Scripts("scripts")),
            Host("static.localhost", Scripts("scripts", static=True)),
        ])
    """)
    assert server.request(path="/style.css")[0] == 404
    assert server.request(path="/sub/")[2] == b"sub index"
    assert server.request(path="/sub/page")[2] == b"sub page"
    status, headers, _ = server.request(path="/sub")
    assert status == 301 and headers["location"] == "sub/"
    assert server.request(path="/")[0] == 404  # no index.rpy at the top, no listing

    status, headers, body = server.request(path="/style.css", host="static.localhost")
    assert (status, body) == (200, b"body { color: red }") and headers["content-type"] == "text/css"
    # a script is run, never shown as source, and dotfiles stay hidden
    assert server.request(path="/sub/page.rpy", host="static.localhost")[2] == b"sub page"
    assert server.request(path="/sub/.env", host="static.localhost")[0] == 404


def test_twisted_style_script_runs_unmodified(serve, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "legacy.rpy").write_text(
        "import os\n"
        "from twisted.web.static import Data\n"
        "cache()\n"
        "registry.setComponent(type(registry), registry)\n"
        "resource = Data(os.path.basename(__file__).encode(), 'text/plain')\n"
    )
    server = serve("""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[Host("localhost", Scripts("scripts"))])
    """)
    status, _, body = server.request(path="/legacy")
    assert (status, body) == (200, b"legacy.rpy")


@pytest.mark.parametrize(
    "options, message",
    [
        ('"missing"', "does not exist"),
        ('"scripts", index=["index.html"]', "'index.html' is not a .rpy script"),
        ('"scripts", index=["../x.rpy"]', "must be a plain file name"),
        ('"scripts", debug="yes"', "expects True or False"),
        ('"scripts", reloads=False', "did you mean reload=?"),
    ],
)
def test_config_mistakes_point_at_the_line(tmp_path, options, message):
    (tmp_path / "scripts").mkdir()
    text = config_error(tmp_path, f"""
        from twisthost import Site, Host, Scripts

        site = Site(hosts=[
            Host("localhost", Scripts({options})),
        ])
    """)
    assert "site.py:4" in text and message in text


def test_index_html_allowed_with_static(serve, tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "index.html").write_text("<p>home</p>")
    server = serve("""
        from twisthost import Site, Host, Scripts
        site = Site(hosts=[Host("localhost", Scripts("scripts", static=True, index=["index.rpy", "index.html"]))])
    """)
    assert server.request(path="/")[2] == b"<p>home</p>"
