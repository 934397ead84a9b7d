"""Markers and pages for the List operations.

A marker is opaque to the caller: base64 (URL-safe alphabet) of `<kind>:<last item>`, so a marker
from another listing, or one that was never issued, is an `InvalidMarkerException` rather than a
silent restart. A page answers `Truncated` and, when it is, the `NextMarker` to continue from.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from s3kms.errors import InvalidMarker
from s3kms.protocols.awskms import members
from s3kms.protocols.awskms.members import Params

T = TypeVar("T")

# The model's pattern, used with fullmatch (so `$` does not let a trailing newline through).
_MARKER_RE = re.compile(r"[\u0020-\u00FF]*")
_b64 = binascii.b2a_base64
_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


def marker(kind: str, last: str) -> str:
    return _b64(f"{kind}:{last}".encode(), newline=False).decode().translate(_TO_URLSAFE)


def after(p: Params, kind: str) -> str | None:
    """The last item of the previous page, as the request's `Marker` names it, or None."""
    value = members.opt_str(p, "Marker", 1, 1024)
    if value is None:
        return None
    if _MARKER_RE.fullmatch(value) is None:
        rule = f"satisfy regular expression pattern: {_MARKER_RE.pattern}"
        raise members.violation("marker", rule, f"'{value}'")
    try:
        raw = binascii.a2b_base64(value.translate(_FROM_URLSAFE), strict_mode=True).decode()
    except ValueError:
        raise InvalidMarker from None
    tag, sep, last = raw.partition(":")
    if tag != kind or not sep or not last:
        raise InvalidMarker
    return last


def page(
    items: Sequence[T], key: Callable[[T], str], after: str | None, limit: int, kind: str
) -> tuple[Sequence[T], dict[str, Any]]:
    """One page of `items` (sorted by `key`) after the marker, and the Truncated/NextMarker part."""
    start = 0
    if after is not None:
        start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
    chosen = items[start : start + limit]
    if start + limit < len(items):
        return chosen, {"Truncated": True, "NextMarker": marker(kind, key(chosen[-1]))}
    return chosen, {"Truncated": False}
