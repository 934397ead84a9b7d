"""The canonical byte form of an encryption context, bound to every ciphertext as associated data.

Pairs are sorted by the UTF-8 bytes of their keys and written length-prefixed, so no two different
contexts share an encoding (a JSON or `k=v&` form has escaping pitfalls):

    u16 count || for each pair: u16 len(key) || key || u16 len(value) || value     (big-endian)

The empty context encodes as `00 00`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

_U16 = struct.Struct(">H")
EMPTY = _U16.pack(0)


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    if not context:
        return EMPTY
    pairs = sorted((k.encode(), v.encode()) for k, v in context.items())
    parts = [_U16.pack(len(pairs))]
    for key, value in pairs:
        parts += (_U16.pack(len(key)), key, _U16.pack(len(value)), value)
    return b"".join(parts)
