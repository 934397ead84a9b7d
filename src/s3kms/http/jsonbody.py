"""Request bodies as JSON: one parser for both API surfaces, with every hostile input a ValueError.

`json.loads` lets three things through that later break the handlers: nesting deep enough to
overflow the interpreter's stack (`RecursionError`), invalid UTF-8 (`UnicodeDecodeError`, already a
ValueError), and lone surrogates written as escapes (`"\\ud800"`), which decode to a `str` that
cannot be encoded back to UTF-8. All three become `ValueError` here.

msgspec parses first: about 1.5 us less per request than `json.loads` (benchmarks/README.md,
*Hot path*). It rejects all three itself, and NaN, infinities and a byte order mark too; a body it
rejects goes through the standard library's path as before, so what is accepted, and every
error, is the standard library's. (Both keep the last of repeated keys, and integers whole.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

_decode = json.JSONDecoder().decode
_fast_decode = msgspec.json.Decoder().decode
# A surrogate escape (\uD800-\uDFFF). A valid pair decodes to one character; only a lone half stays.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(f"[{chr(0xD800)}-{chr(0xDFFF)}]")  # mypyc takes no surrogate literal


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def parse_json(body: bytes) -> Any:
    """The JSON value of `body` (UTF-8); ValueError for anything that is not clean JSON text."""
    try:
        return _fast_decode(body)
    except (msgspec.DecodeError, RecursionError):
        return parse_with_stdlib(body)


def parse_with_stdlib(body: bytes) -> Any:
    """`parse_json` by the standard library alone: the answer for every body msgspec refuses."""
    try:
        value = _decode(body.decode())
        # The common body has no escape at all: one C-speed scan, and the walk only when needed.
        if b"\\u" in body and _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
            raise ValueError("JSON string with a lone surrogate")
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return value
