"""Reading the request corpus: the ``.http`` notation and the driver that feeds the core.

A ``.http`` file is text.  Its real line breaks are ignored (they are only
there to be read); the bytes are written with escapes:

``\\r`` ``\\n`` ``\\t`` ``\\\\``
    CR, LF, HTAB, a backslash.
``\\xHH``
    any byte (``\\x20`` for a space that must survive an editor at a line end).
``\\{TEXT*N}``
    TEXT (itself in this notation) N times: ``/\\{a*8000}``, ``\\{X-A: 1\\r\\n*100}``.

Anything else stands for itself (the file is read as UTF-8 and must hold
ASCII only: non-ASCII bytes are written ``\\xHH``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

from twisthost.config import Site
from twisthost.http.h1 import (
    NEED_DATA, PAUSED, BadRequest, Data, EndOfMessage, Head, RequestReader,
)

HERE = Path(__file__).resolve().parent
LIMIT_NAMES = ("max_request_line", "max_header_size", "max_headers")
DEFAULT_LIMITS = {f.name: f.default for f in dataclasses.fields(Site) if f.name in LIMIT_NAMES}

_SIMPLE = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}
_REPEAT_END = re.compile(r"\*(\d+)\}")


def decode(text: str) -> bytes:
    """The bytes a ``.http`` text stands for."""
    return _decode(text.replace("\r", "").replace("\n", ""))


def _decode(text: str) -> bytes:
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "\\":
            if ord(char) > 0x7E or (ord(char) < 0x20):
                raise ValueError(f"write {char!r} as an escape (at {i})")
            out += char.encode("ascii")
            i += 1
            continue
        code = text[i + 1:i + 2]
        if code in _SIMPLE:
            out += _SIMPLE[code]
            i += 2
        elif code == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        elif code == "{":
            depth, j = 1, i + 2  # find the matching '}' of this repeat (repeats may nest)
            while True:
                if j >= n:
                    raise ValueError(f"a repeat without its closing brace (at {i})")
                if text.startswith("\\\\", j):
                    j += 2
                elif text.startswith("\\{", j):
                    depth, j = depth + 1, j + 2
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                    j += 1
                else:
                    j += 1
            body = text[i + 2:j + 1]
            star = body.rfind("*")
            match = _REPEAT_END.fullmatch(body, star)
            if match is None:
                raise ValueError(f"a repeat is \\{{TEXT*N}} (at {i})")
            out += _decode(body[:star]) * int(match.group(1))
            i = j + 1
        else:
            raise ValueError(f"unknown escape \\{code} (at {i})")
    return bytes(out)


def to_bytes(text: str) -> bytes:
    """JSON strings in the expectations stand for bytes one to one (latin-1)."""
    return text.encode("latin-1")


@dataclasses.dataclass
class Case:
    name: str
    kind: str  # "valid" or "invalid"
    data: bytes
    expect: dict

    @property
    def limits(self):
        return SimpleNamespace(**{**DEFAULT_LIMITS, **self.expect.get("limits", {})})


def load_cases(kind: str) -> list[Case]:
    cases = []
    for path in sorted((HERE / kind).glob("*.http")):
        expect = json.loads(path.with_suffix(".json").read_text())
        cases.append(Case(path.stem, kind, decode(path.read_text(encoding="ascii")), expect))
    return cases


@dataclasses.dataclass
class Outcome:
    """What the reader made of one feeding of a case."""

    requests: list  # one dict per Head seen, its body and trailers so far, "complete" once ended
    refusal: tuple | None  # (status, detail)
    refused_at: int | None  # how many bytes had been fed when the refusal was raised
    waiting: bool  # at the end of the input, did the reader want more (NEED_DATA)?


def head_dict(head: Head) -> dict:
    return {
        "method": head.method, "target": head.target, "version": head.version,
        "headers": list(head.headers), "length": head.length, "chunked": head.chunked,
        "host": head.host, "body": b"", "trailers": [], "complete": False,
    }


def feed(case: Case, pieces: list[bytes]) -> Outcome:
    """Feed ``pieces`` one after the other, taking every event after each."""
    reader = RequestReader(case.limits)
    body_limit = case.expect.get("body_limit")
    requests: list[dict] = []
    fed = 0
    expecting = "head"  # what the protocol allows next: "head", "body" (Data or End), "pause"
    try:
        for piece in pieces:
            reader.feed(piece)
            fed += len(piece)
            while True:
                event = reader.next_event()
                if event is NEED_DATA:
                    assert expecting != "pause", "NEED_DATA before PAUSED after a message"
                    break
                if event is PAUSED:
                    assert expecting == "pause", f"PAUSED while expecting {expecting}"
                    reader.next_request()
                    expecting = "head"
                elif isinstance(event, Head):
                    assert expecting == "head", f"a Head while expecting {expecting}"
                    requests.append(head_dict(event))
                    expecting = "body"
                    if body_limit is not None:
                        reader.limit_body(body_limit)
                elif isinstance(event, Data):
                    assert expecting == "body", f"Data while expecting {expecting}"
                    assert event.data, "an empty Data event"
                    requests[-1]["body"] += event.data
                elif isinstance(event, EndOfMessage):
                    assert expecting == "body", f"EndOfMessage while expecting {expecting}"
                    requests[-1]["trailers"] = list(event.trailers)
                    requests[-1]["complete"] = True
                    expecting = "pause"
                else:
                    raise AssertionError(f"unknown event {event!r}")
    except BadRequest as error:
        assert reader.state == "error"
        return Outcome(requests, (error.status, error.detail), fed, False)
    waiting = reader.next_event() is NEED_DATA
    return Outcome(requests, None, None, waiting)


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def expected_request(spec: dict) -> dict:
    """An expectation's request, with the defaults filled in, in the shape of :func:`head_dict`."""
    request = {
        "method": to_bytes(spec["method"]),
        "target": to_bytes(spec["target"]),
        "version": to_bytes(spec.get("version", "HTTP/1.1")),
        "headers": [(to_bytes(n), to_bytes(v)) for n, v in spec["headers"]],
        "body": to_bytes(spec.get("body", "")),
        "trailers": [(to_bytes(n), to_bytes(v)) for n, v in spec.get("trailers", [])],
        "complete": spec.get("complete", True),
    }
    for key in ("length", "chunked", "host"):
        if key in spec:
            value = spec[key]
            request[key] = to_bytes(value) if isinstance(value, str) else value
    return request


def comparable(actual: dict, expected: dict) -> dict:
    """``actual`` with only the keys the expectation names."""
    return {key: actual[key] for key in expected}
