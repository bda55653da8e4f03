"""``twisthost.loader`` and ``service.prepare``: every mistake of a config in one run, each at its line.

No sockets: a config is written to a temporary folder, loaded and built
in this process, and the text a user would read is checked.
"""

from __future__ import annotations

import pickle
import textwrap

import pytest

from twisthost.errors import ConfigError, ConfigErrors
from twisthost.loader import load, syntax_hint
from twisthost.service import prepare


def error_text(folder, source: str, build: bool = False) -> str:
    path = folder / "site.py"
    path.write_text(textwrap.dedent(source).lstrip())
    with pytest.raises(ConfigError) as caught:
        (prepare if build else load)(str(path))
    return str(caught.value)


def located(text: str, folder) -> list[str]:
    """The ``site.py:N: error: ...`` lines of ``text``, without the folder."""
    return [line.replace(f"{folder}/", "") for line in text.splitlines() if ": error: " in line]


def test_every_mistake_of_the_readme_example_in_one_run(tmp_path):
    # The README's example, with the typo it documents: fixing it took three rounds
    # of `twisthost check` when it stopped at the first error.
    text = error_text(tmp_path, """
        from twisthost import Site, Host, WSGI, Static, Proxy, Redirect, Resource

        site = Site(
            listen=["tcp:8080"],
            hosts=[
                Host("app.example.com", alias=["www.example.com"], routes={
                    "/": WSGI("myproject.wsgi:application"),
                    "/static": Static("static/", max_age=3600),
                }),
                Host("api.example.com", Proxy(["http://10.0.0.5:9000", "http://10.0.0.6:9000"])),
                Host("old.example.com", Redirect("https://app.example.com", status=308)),
                Host("*.example.com", Resource("mysite.pages:make_root()")),
            ],
            default=Host(Static("/srv/default")),
        )
    """, build=True)
    lines = located(text, tmp_path)
    assert [line.split(": error: ")[0] for line in lines] == [
        "site.py:6", "site.py:7", "site.py:8", "site.py:12", "site.py:14"]
    assert "Host() got an unknown option 'alias'" in lines[0]
    assert "cannot import 'myproject.wsgi'" in lines[1]  # found by building the host that is left
    assert "folder" in lines[2] and "static" in lines[2]
    assert "cannot import 'mysite.pages'" in lines[3]
    assert "'/srv/default' does not exist" in lines[4]
    assert "hint: did you mean aliases=?" in text
    assert text.endswith("5 errors")


def test_one_mistake_reads_as_before(tmp_path):
    text = error_text(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host("a.example", Redirect("/"), alias=["b.example"])])
    """)
    assert text == (f"{tmp_path}/site.py:2: error: Host() got an unknown option 'alias'\n"
                    "  hint: did you mean aliases=?")


def test_independent_mistakes_of_one_site_are_all_reported(tmp_path):
    text = error_text(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(
            listen=["tcp:8080", "tcp:eighty"],
            hosts=[Host("a.example", Redirect("/")), Host("b.example", Redirect("/"), aliases=["a.example"])],
            trusted_proxies=["10.0.0.0/8", "ten"],
            workers=0,
        )
    """)
    lines = located(text, tmp_path)
    assert any("site.py:3: error: invalid listen endpoint 'tcp:eighty'" in line for line in lines)
    assert any("duplicate host name 'a.example'" in line for line in lines)
    assert any("site.py:5: error: trusted_proxies: 'ten'" in line for line in lines)
    assert any("Site(workers=...) must be in 1..1024" in line for line in lines)
    assert len(lines) == 4


def test_a_bad_endpoint_is_reported_at_its_own_line(tmp_path):
    text = error_text(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(
            hosts=[Host("a.example", Redirect("/"))],
            listen=[
                "tcp:8080",
                "tcp:eighty",
            ],
            admin="tcp:nine",
        )
    """)
    lines = located(text, tmp_path)
    assert lines[0].startswith("site.py:6: error: invalid listen endpoint 'tcp:eighty'")
    assert lines[1].startswith("site.py:8: error: invalid listen endpoint 'tcp:nine'")


def test_an_endpoint_from_a_variable_is_reported_at_the_listen_line(tmp_path):
    text = error_text(tmp_path, """
        from twisthost import Site
        PORTS = ["tcp:eighty"]
        site = Site(
            listen=PORTS,
        )
    """)
    assert located(text, tmp_path)[0].startswith("site.py:4: error: invalid listen endpoint")


def test_a_crash_after_a_mistake_reports_both(tmp_path):
    text = error_text(tmp_path, """
        from twisthost import Site, Host, Redirect
        host = Host("a.example", Redirect("/"), alias=[])
        port = {}["missing"]
        site = Site(hosts=[host])
    """)
    lines = located(text, tmp_path)
    assert lines[0].startswith("site.py:2: error: Host() got an unknown option 'alias'")
    assert lines[1].startswith("site.py:3: error: KeyError")


def test_errors_survive_the_pickle_a_worker_check_sends(tmp_path):
    text = error_text(tmp_path, """
        from twisthost import Site, Host, Redirect
        site = Site(hosts=[Host("a.example", Redirect("/", status=1)), Host("b.example", Redirect("x"))])
    """)
    path = tmp_path / "site.py"
    with pytest.raises(ConfigErrors) as caught:
        load(str(path))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) == text
    assert copy.where == caught.value.where


@pytest.mark.parametrize("source, hint", [
    ('site = Site(\n    listen=["tcp:8080"]\nhosts=[])\n',
     'put a comma after ["tcp:8080"] (line 2) and before hosts (line 3)'),
    ("site = Site(listen=[1 2])\n", "put a comma after 1 and before 2"),
    ("site = Site(\n    listen=[],\n", "the '(' opened here has no closing ')'"),
    ("site = Site(listen=['tcp:8080')\n", "a '[' opened earlier must be closed with ']' before this ')'"),
    ("site = Site(listen=['tcp:8080])\n", "a string starting here has no closing quote"),
    ("site = Site(hosts=[], 'x')\n", "give positional values (a host name, a service) before options"),
    ("site = Site(hosts=[], hosts=[])\n", "an option is given twice in one call"),
    ("site = Site()\n  x = 1\n", "this line is indented further than the one before it"),
    ("site = Site(listen=[“tcp:8080”])\n", "remove the character"),
    ("site = Site()]\n", "this ']' closes nothing"),
    ("site = = 1\n", "Python could not read column 8 of this line"),
])
def test_syntax_hints_say_what_to_change(source, hint):
    with pytest.raises(SyntaxError) as caught:
        compile(source, "site.py", "exec")
    text = syntax_hint(caught.value, source.splitlines())
    assert text.startswith(hint), text
    assert text.strip() != (caught.value.text or "").strip()
