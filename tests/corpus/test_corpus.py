"""The request corpus: raw requests fed straight to the sans-IO reader, no sockets.

``valid/NAME.http`` with ``valid/NAME.json`` ``{"requests": [...]}``: the
requests the bytes must parse into, in order.  ``invalid/NAME.http`` with
``invalid/NAME.json`` ``{"status": 400, "detail": "..."}``: the refusal
(``detail`` a substring of it), the ``requests`` read before it, and
``refuse_by``: a piece of the input (in the .http notation) by whose last
byte the refusal must have come, whatever follows.  Either may say
``limits`` (overrides of the Site defaults) and ``body_limit`` (what
``limit_body`` is told after each head).  See casefile.py for the notation
and docs/security.md for how to add a case.

Every case is fed whole, byte by byte, in pieces of a few bytes, and (when
short) in two pieces split at every offset; each feeding must give the same
requests and the same refusal, and a refusal must come at the first piece
boundary at or after the byte that decided it.
"""

from __future__ import annotations

import pytest

from casefile import (
    HERE, Case, decode, expected_request, comparable, feed, load_cases, pieces_of, to_bytes,
)

VALID = load_cases("valid")
INVALID = load_cases("invalid")
PIECE_SIZES = (2, 3, 7)
LONG = 2048  # longer cases: fewer piece sizes (the reader is fed ~once per piece)
SPLIT_EVERYWHERE = 400  # shorter cases are also cut in two at every offset


def feedings(case: Case):
    """(label, pieces, offset at which a refusal decided at byte k shows) for every way of feeding."""
    data = case.data
    n = len(data)
    sizes = PIECE_SIZES if n <= LONG else (61,)
    for size in sizes:
        yield f"pieces of {size}", pieces_of(data, size), lambda k, s=size: min(-(-k // s) * s, n)
    if n <= SPLIT_EVERYWHERE:
        for cut in range(1, n):
            yield f"cut at {cut}", [data[:cut], data[cut:]], lambda k, c=cut: c if k <= c else n


def ids(cases):
    return [case.name for case in cases]


def test_corpus_size():
    assert len(VALID) + len(INVALID) >= 150


@pytest.mark.parametrize("kind", ["valid", "invalid"])
def test_every_case_has_both_files(kind):
    folder = HERE / kind
    assert sorted(p.stem for p in folder.glob("*.http")) == sorted(p.stem for p in folder.glob("*.json"))
    assert {p.suffix for p in folder.iterdir()} <= {".http", ".json"}


@pytest.mark.parametrize("case", VALID, ids=ids(VALID))
def test_valid(case: Case):
    whole = feed(case, [case.data])
    assert whole.refusal is None, f"refused: {whole.refusal}"
    expected = [expected_request(spec) for spec in case.expect["requests"]]
    assert [comparable(actual, spec) for actual, spec in zip(whole.requests, expected)] == expected
    assert len(whole.requests) == len(expected)
    assert whole.waiting, "the reader should be waiting for the next request"

    bytewise = feed(case, pieces_of(case.data, 1))
    assert bytewise == whole
    for label, pieces, _ in feedings(case):
        assert feed(case, pieces) == whole, label


@pytest.mark.parametrize("case", INVALID, ids=ids(INVALID))
def test_invalid(case: Case):
    expect = case.expect
    data = case.data
    whole = feed(case, [data])
    assert whole.refusal is not None, f"not refused; read {len(whole.requests)} request(s)"
    status, detail = whole.refusal
    assert status == expect["status"], detail
    assert expect["detail"] in detail
    expected = [expected_request(spec) for spec in expect.get("requests", [])]
    assert [comparable(actual, spec) for actual, spec in zip(whole.requests, expected)] == expected
    assert len(whole.requests) == len(expected)

    # Byte by byte: the byte whose arrival brought the refusal.
    bytewise = feed(case, pieces_of(data, 1))
    decided = bytewise.refused_at
    assert (bytewise.requests, bytewise.refusal) == (whole.requests, whole.refusal)
    if "refuse_by" in expect:
        part = decode(expect["refuse_by"])
        assert part in data, "refuse_by is not in the input"
        by = data.index(part) + len(part)
        assert decided <= by, f"refused after byte {decided}, should be by byte {by}"
    # The refusal depends on the bytes seen, not on how they came.
    prefix = feed(case, [data[:decided]])
    assert (prefix.requests, prefix.refusal, prefix.refused_at) == (whole.requests, whole.refusal, decided)
    for label, pieces, shows_at in feedings(case):
        outcome = feed(case, pieces)
        assert (outcome.requests, outcome.refusal) == (whole.requests, whole.refusal), label
        assert outcome.refused_at == shows_at(decided), label


def test_notation():
    assert decode("GET / HTTP/1.1\\r\\n\n\\x00\\t\\\\x") == b"GET / HTTP/1.1\r\n\x00\t\\x"
    assert decode("/\\{a*3}\\{X: \\{b*2}\\r\\n*2}") == b"/aaaX: bb\r\nX: bb\r\n"
    assert decode("\\{\\\\*2}") == b"\\\\"
    assert to_bytes("caf\u00e9") == b"caf\xe9"
