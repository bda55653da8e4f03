"""WSGI config mistakes: each a ConfigError naming the line of site.py at fault."""

from __future__ import annotations

import pytest

from conftest import ROOT, config_error, write_site
from twisthost.service import prepare

APPS = str(ROOT / "tests" / "apps")


def error_for(tmp_path, lines: list[str], build: bool = True) -> str:
    source = "from twisthost import Host, Site, WSGI\n" + "\n".join(lines) + "\n"
    return config_error(tmp_path, source, build)


@pytest.mark.parametrize("target, message", [
    ("no_such_module:app", "cannot import 'no_such_module'"),
    ("rawapps:missing", "has no attribute 'missing'"),
    ("rawapps:not_an_app", "is a int, not a WSGI application"),
    ("rawapps:sleepy_stuck_here()", "raised TypeError"),
    ("rawapps", "is not an import target"),
])
def test_bad_targets_point_at_the_wsgi_line(tmp_path, target, message):
    text = error_for(tmp_path, [
        "w = WSGI(",
        f"    {target!r}, pythonpath=[{APPS!r}])",
        "site = Site(hosts=[Host('a.test', w)])",
    ])
    assert "site.py:2" in text and message in text


@pytest.mark.parametrize("options, message", [
    ("threads=0", "WSGI(threads=...) must be in 1..1024"),
    ("threads='8'", "expects an integer"),
    ("threads=2, min_threads=3", "min_threads=3) is more than threads=2"),
    ("queue=-1", "WSGI(queue=...) must be in 0..inf"),
    ("max_body=1.5", "expects an integer"),
    ("timeout=0", "WSGI(timeout=...) must be in 0.001..inf"),
    ("pool=''", "expects a pool name"),
    ("debug='yes'", "expects True or False"),
    ("thread=4", "did you mean threads=?"),
])
def test_bad_options_point_at_the_wsgi_line(tmp_path, options, message):
    text = error_for(tmp_path, [
        "site = Site(hosts=[",
        f"    Host('a.test', WSGI('rawapps:sleep_app', {options})),",
        "])",
    ], build=False)
    assert "site.py:3" in text and message in text


def test_shared_pool_sizes_must_agree(tmp_path):
    text = error_for(tmp_path, [
        f"P = [{APPS!r}]",
        "site = Site(hosts=[",
        "    Host('a.test', WSGI('rawapps:sleep_app', pythonpath=P, pool='web', threads=4)),",
        "    Host('b.test', WSGI('rawapps:stream_app', pythonpath=P, pool='web', threads=8)),",
        "])",
    ])
    assert "site.py:5" in text and "pool='web'" in text and "at line 4" in text


def test_defaults_and_shared_pool(tmp_path):
    path = write_site(tmp_path, f"""
        from twisthost import Host, Site, WSGI
        P = [{APPS!r}]
        site = Site(hosts=[
            Host('a.test', WSGI('rawapps:sleep_app', pythonpath=P, pool='web')),
            Host('b.test', WSGI('rawapps:stream_app', pythonpath=P, pool='web')),
            Host('c.test', WSGI('rawapps:stream_app', pythonpath=P, threads=3)),
        ])
    """)
    prepared = prepare(str(path))
    (a, b, c) = (service for _, _, service in prepared.site.services())
    assert (a.threads, a.queue, a.max_body, a.timeout) == (8, 64, 1 << 30, None)
    assert c.queue == 24  # 8 x threads
    pools = list(prepared.context.services)
    assert len(pools) == 2 and {p.stats.max_threads for p in pools} == {8, 3}
