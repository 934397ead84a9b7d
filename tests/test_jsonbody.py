"""`parse_json` takes msgspec's answer when msgspec accepts a body, else the standard library's
path: both must give the same value, or the same refusal, for every body."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3kms.http import jsonbody
from s3kms.http.jsonbody import parse_json


def outcome(parse: Any, body: bytes) -> tuple[str, Any]:
    try:
        value = parse(body)
    except ValueError:
        return ("refused", None)
    # NaN != NaN: compare the values through their JSON text (types kept: 1 and 1.0 differ).
    return ("value", json.dumps(value, sort_keys=True, allow_nan=True) + repr(_types(value)))


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


HOSTILE = [
    b'{"a":1,"a":2}',  # repeated keys: the last
    b'{"n":' + b"9" * 40 + b"}",  # an integer beyond 64 bits: whole
    b'{"n":' + b"9" * 5000 + b"}",  # beyond Python's digit limit: refused
    b'{"n":NaN}', b'{"n":Infinity}', b'{"n":-Infinity}', b'{"n":1e400}',
    b'{"s":"\\ud800"}', b'{"s":"\\udc00x"}', b'{"s":"\\ud83d\\ude00"}',  # lone halves, a pair
    b"[" * 5000 + b"]" * 5000,  # too deep
    b"[" * 100 + b"]" * 100,
    b"\xef\xbb\xbf{}", b" {} ", b"\t{}\n", b"", b"{", b'{"a":"\xff"}', b'"\xed\xa0\x80"',
    b'{"a":true}x', b"1", b"-0", b"-0.0", b"1.5e-300", b'"\\u0000"', b"null", b"[1,]", b"{,}",
    b'{"KeyId":"bench","NumberOfBytes":32}', b'{"f":12345678901234567890.5}',
]  # fmt: skip


@pytest.mark.parametrize("body", HOSTILE)
def test_the_standard_librarys_answer(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(jsonbody.parse_with_stdlib, body)


def test_repeated_keys_and_big_integers_as_before() -> None:
    assert parse_json(b'{"a":1,"a":2}') == {"a": 2}
    assert parse_json(b'{"n":' + b"9" * 40 + b"}") == {"n": int("9" * 40)}
    assert math.isnan(parse_json(b'{"n":NaN}')["n"])
    with pytest.raises(ValueError, match="lone surrogate"):
        parse_json(b'{"s":"\\ud800"}')
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(b"[" * 5000 + b"]" * 5000)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_any_json_text(value: Any, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(parse_json, body) == outcome(jsonbody.parse_with_stdlib, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text('{}[]",:0123456789.eE+-\\utrfalsnNI ').map(str.encode))
def test_any_bytes(body: bytes) -> None:
    assert outcome(parse_json, body) == outcome(jsonbody.parse_with_stdlib, body)
