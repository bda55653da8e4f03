"""``FastHeaders`` must answer exactly as Twisted's ``Headers`` for any sequence of calls.

Its fast paths (bytes names, bytes values without line breaks) skip work the
base class does; the property below drives both with the same random
operations, including ``str`` names and values, line breaks and invalid names,
and compares every answer and the final contents.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.http_headers import Headers

from twisthost.request import FastHeaders

_NAMES = [b"Content-Type", b"content-type", b"X-Request-Id", b"x-request-id", b"ETag", b"etag", b"te",
          b"WWW-Authenticate", "Content-Type", "x-custom", b"X-Custom", b"bad name", b"bad:name", "bad\nname"]
names = st.sampled_from(_NAMES) | st.binary(min_size=1, max_size=8)
values = (st.sampled_from([b"a", b"", b"a\r\nb", b"x\ny", b"\r", "t\u00e9xt", "a\nb", b"\xff"])
          | st.binary(max_size=8) | st.text(max_size=6))
operations = st.lists(st.one_of(
    st.tuples(st.just("setRawHeaders"), names, st.lists(values, max_size=3)),
    st.tuples(st.just("setRawHeaders"), names, st.lists(values, max_size=3).map(tuple)),
    st.tuples(st.just("addRawHeader"), names, values),
    st.tuples(st.just("getRawHeaders"), names),
    st.tuples(st.just("hasHeader"), names),
    st.tuples(st.just("removeHeader"), names),
), max_size=30)


def _call(headers, operation):
    method, *args = operation
    try:
        return "ok", getattr(headers, method)(*args)
    except Exception as error:  # the same kind of failure must happen on both
        return "raised", type(error)


@settings(max_examples=400, deadline=None)
@given(operations)
def test_fast_headers_answer_like_twisted_headers(ops):
    fast, plain = FastHeaders(), Headers()
    for operation in ops:
        assert _call(fast, operation) == _call(plain, operation), operation
    assert list(fast.getAllRawHeaders()) == list(plain.getAllRawHeaders())


def test_stored_values_are_not_the_callers_list():
    """Like the base class, a later change to the list given does not change the headers."""
    headers, given_values = FastHeaders(), [b"a"]
    headers.setRawHeaders(b"x-a", given_values)
    given_values.append(b"b")
    assert headers.getRawHeaders(b"x-a") == [b"a"]


def test_judged_fields_keep_order_and_repeats():
    headers = FastHeaders()
    headers.add_judged([(b"Accept", b"a"), (b"accept", b"b"), (b"Host", b"h")])
    assert headers.getRawHeaders(b"accept") == [b"a", b"b"]
    assert list(headers.getAllRawHeaders()) == [(b"Accept", [b"a", b"b"]), (b"Host", [b"h"])]


@pytest.mark.parametrize("name", [b"bad name", b"", b"a\x00b"])
def test_invalid_names_are_refused_as_twisted_refuses_them(name):
    with pytest.raises(ValueError):
        Headers().setRawHeaders(name, [b"v"])
    with pytest.raises(ValueError):
        FastHeaders().setRawHeaders(name, [b"v"])
