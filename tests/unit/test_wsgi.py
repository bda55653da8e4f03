"""``twisthost.wsgi``: an async (ASGI) callable mounted with ``WSGI()`` is a config error."""

from __future__ import annotations

import functools

import pytest
from conftest import config_error, write_site

from twisthost.service import prepare
from twisthost.wsgi import is_async

APPS = '''
import functools

async def asgi_app(scope, receive, send):
    pass

class Starlette:
    async def __call__(self, scope, receive, send):
        pass

starlette = Starlette()
partial_app = functools.partial(asgi_app)

def make_asgi():
    return Starlette()

def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

class WSGIObject:
    def __call__(self, environ, start_response):
        return wsgi_app(environ, start_response)

wsgi_object = WSGIObject()
'''


def site_for(tmp_path, target: str) -> str:
    (tmp_path / "async_or_not.py").write_text(APPS)  # a name no other test imports: modules stay cached
    return f"""
        from twisthost import WSGI, Host, Site
        site = Site(hosts=[
            Host("a.test",
                 WSGI({target!r}, pythonpath=["."])),
        ])
    """


@pytest.mark.parametrize("target", ["async_or_not:asgi_app", "async_or_not:starlette",
                                    "async_or_not:partial_app", "async_or_not:make_asgi()"])
def test_an_async_app_fails_check_at_its_line_with_the_way_out(tmp_path, target):
    message = config_error(tmp_path, site_for(tmp_path, target), build=True)
    first, hint = message.split("\n", 1)
    assert first.startswith(f"{tmp_path / 'site.py'}:4: error: WSGI({target!r}) is an async callable")
    assert f"mount it with ASGI({target!r}) instead" in hint


@pytest.mark.parametrize("target", ["async_or_not:wsgi_app", "async_or_not:wsgi_object",
                                    "async_or_not:WSGIObject()"])
def test_wsgi_apps_are_still_accepted(tmp_path, target):
    prepare(str(write_site(tmp_path, site_for(tmp_path, target))))


class AsyncClass:
    async def __call__(self, scope, receive, send):
        pass


async def coroutine_function(scope, receive, send):
    pass


@pytest.mark.parametrize("app, expected", [
    (coroutine_function, True),
    (AsyncClass(), True),
    (functools.partial(coroutine_function), True),
    (AsyncClass, False),               # the class is a factory: calling it makes the app
    (lambda environ, start_response: [], False),
    (print, False),
])
def test_is_async(app, expected):
    assert is_async(app) is expected
