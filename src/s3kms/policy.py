"""IAM-style access policies: parsing and evaluation, pure functions.

    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": ["kms:Decrypt", "admin:KMSKeyStatus"],
                    "Resource": ["arn:aws:kms:*:*:key/app-*"]},
                   {"Effect": "Deny", "Action": "kms:*", "Resource": "arn:minio:kms:::secret-*"}]}

Evaluation: an explicit Deny that matches wins; otherwise an Allow that matches allows; otherwise
deny. Actions match case-insensitively (as in IAM), resources case-sensitively; both take the
wildcards `*` (any run of characters) and `?` (one character); every other character is literal.
A request about a key is checked against the key's ARN and MinIO's `arn:minio:kms:::<key>`; a
request about no key (status, list, configure) against `*`, which only `"Resource": "*"` matches.

Patterns are compiled at parse time into `Glob`s, matched without backtracking (see `glob_match`),
and documents are bounded (`MAX_*` below): a policy cannot make the check of a request expensive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from s3kms.errors import InvalidRequest

VERSIONS = ("2012-10-17", "2008-10-17")

# Bounds on a policy document; a document over any of them is refused (KMSInvalidRequest).
MAX_DOCUMENT_BYTES = 32 * 1024  # UTF-8 of the text given, or of a dict as stored (sort_keys)
MAX_STATEMENTS = 100
MAX_PATTERNS = 100  # actions, and resources, per statement
MAX_PATTERN_LENGTH = 1024  # characters of one action or resource pattern
MAX_WILDCARDS = 32  # `*` and `?` together, in one pattern
MAX_DEPTH = 32  # nesting of JSON objects and arrays (a statement's lists are at depth 4)


@dataclass(frozen=True, slots=True)
class _Segment:
    """A run of a glob between two `*`: literal characters and `?`, so of fixed length."""

    length: int
    pieces: tuple[tuple[int, str], ...]  # (offset, literal run); the `?` are the gaps
    literal: str | None  # the whole segment when it has no `?`

    @classmethod
    def of(cls, text: str) -> _Segment:
        pieces, offset = [], 0
        for run in text.split("?"):
            if run:
                pieces.append((offset, run))
            offset += len(run) + 1
        return cls(len(text), tuple(pieces), None if "?" in text else text)

    def at(self, text: str, pos: int) -> bool:
        """Whether the segment matches `text` at `pos` (the caller ensures it fits)."""
        if self.literal is not None:
            return text.startswith(self.literal, pos)
        return all(text.startswith(run, pos + offset) for offset, run in self.pieces)

    def find(self, text: str, start: int, stop: int) -> int:
        """The leftmost position in `[start, stop - length]` where the segment matches, or -1."""
        if self.literal is not None:
            return text.find(self.literal, start, stop)
        last = stop - self.length
        if not self.pieces:  # only `?`
            return start if start <= last else -1
        offset, run = self.pieces[0]
        pos = start
        while pos <= last:
            # Candidates are where the first literal run occurs: each text position is scanned
            # once by find, and each candidate is checked in O(length).
            hit = text.find(run, pos + offset, last + offset + len(run))
            if hit < 0:
                return -1
            pos = hit - offset
            if self.at(text, pos):
                return pos
            pos += 1
        return -1


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled `*`/`?` pattern: `match` is `glob_match` without re-parsing the pattern."""

    pattern: str
    ignore_case: bool  # then the segments hold the pattern lowered
    head: _Segment  # before the first `*` (the whole pattern when it has none)
    middle: tuple[_Segment, ...]  # between `*`s, empty ones dropped
    tail: _Segment | None  # after the last `*`; None when the pattern has no `*`
    min_length: int
    # The common shapes, answered by one string operation: "*", "literal", "literal*".
    anything: bool
    exact: str | None
    prefix: str | None

    @classmethod
    def compile(cls, pattern: str, *, ignore_case: bool = False) -> Glob:
        folded = pattern.lower() if ignore_case else pattern
        parts = folded.split("*")
        head = _Segment.of(parts[0])
        if len(parts) == 1:
            return cls(pattern, ignore_case, head, (), None, head.length, False, head.literal, None)
        middle = tuple(_Segment.of(p) for p in parts[1:-1] if p)
        tail = _Segment.of(parts[-1])
        size = head.length + tail.length + sum(m.length for m in middle)
        prefix = head.literal if not middle and not tail.length else None
        return cls(pattern, ignore_case, head, middle, tail, size, prefix == "", None, prefix)

    def match(self, text: str) -> bool:
        """Whether `text` matches (lowered first when the glob ignores case)."""
        return self.match_folded(text.lower() if self.ignore_case else text)

    def match_folded(self, text: str) -> bool:
        """`match` for a text already lowered when the glob ignores case."""
        if self.anything:
            return True
        if self.exact is not None:
            return text == self.exact
        if self.prefix is not None:
            return text.startswith(self.prefix)
        n = len(text)
        head, tail = self.head, self.tail
        if tail is None:
            return n == head.length and head.at(text, 0)
        if n < self.min_length or not head.at(text, 0):
            return False
        pos, end = head.length, n - tail.length
        # Leftmost placement of each middle segment is never worse than any other: whatever
        # follows a later placement also follows an earlier one (a `*` takes up the gap).
        for segment in self.middle:
            found = segment.find(text, pos, end)
            if found < 0:
                return False
            pos = found + segment.length
        return tail.at(text, end)


def glob_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """Whether `text` matches `pattern` as a whole: `*` is any run of characters (empty too), `?`
    exactly one character, anything else itself. `ignore_case` compares both sides `str.lower`ed.

    No backtracking: the pattern is split on `*`; the part before the first `*` must match at the
    start, the part after the last at the end, and each part between is placed at its leftmost
    match after the previous one (literal parts with `str.find`, parts with `?` by a scan of
    candidate positions, each text position scanned once per part). Time O(len(pattern) *
    len(text)) in the worst case, whatever the pattern; memory O(len(pattern)). A regex
    translation (`*` as `.*`) backtracks exponentially instead: `key/*a*a*a*a*a*a*a*a*b` against
    a 60-character key id took 30 s, and 7 times longer for each further `*a`.
    """
    return Glob.compile(pattern, ignore_case=ignore_case).match(text)


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: tuple[Glob, ...]  # compiled case-insensitively
    resources: tuple[Glob, ...]  # compiled case-sensitively

    def matches(self, action: str, resources: Sequence[str]) -> bool:
        folded = action.lower()  # once, not per pattern
        for glob in self.actions:
            if glob.match_folded(folded):
                break
        else:
            return False
        for glob in self.resources:
            for resource in resources:
                if glob.match_folded(resource):
                    return True
        return False


@dataclass(frozen=True)
class Policy:
    name: str
    statements: tuple[Statement, ...]
    document: str  # the JSON as given, for listing


def _patterns(name: str, value: Any, field: str, *, ignore_case: bool) -> tuple[Glob, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise InvalidRequest(
            f"policy {name!r}: {field} must be a non-empty string or list of strings"
        )
    if len(items) > MAX_PATTERNS:
        raise InvalidRequest(
            f"policy {name!r}: a statement may have at most {MAX_PATTERNS} {field} entries"
        )
    for item in items:
        if len(item) > MAX_PATTERN_LENGTH:
            raise InvalidRequest(
                f"policy {name!r}: a {field} may be at most {MAX_PATTERN_LENGTH} characters"
            )
        if item.count("*") + item.count("?") > MAX_WILDCARDS:
            raise InvalidRequest(
                f"policy {name!r}: a {field} may have at most {MAX_WILDCARDS} wildcards (* and ?)"
            )
    return tuple(Glob.compile(i, ignore_case=ignore_case) for i in items)


def _too_big(name: str) -> InvalidRequest:
    return InvalidRequest(
        f"policy {name!r}: the document may be at most {MAX_DOCUMENT_BYTES} bytes of JSON"
    )


def _check_nesting(name: str, value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, without recursion; and, as every JSON value takes at
    least one byte, more values than MAX_DOCUMENT_BYTES (so the walk itself is bounded)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    budget = MAX_DOCUMENT_BYTES - 1
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                f"policy {name!r}: objects and arrays may be nested at most {MAX_DEPTH} deep"
            )
        budget -= len(item)
        if budget < 0:
            raise _too_big(name)
        stack.extend((child, depth + 1) for child in children)


def _load(name: str, document: str | dict[str, Any]) -> tuple[Any, str]:
    """The document parsed, and as JSON text; bounded in size and nesting before anything else."""
    if isinstance(document, str):
        # A character takes at most 4 bytes of UTF-8: the length alone settles most cases.
        if len(document) > MAX_DOCUMENT_BYTES or (
            len(document) * 4 > MAX_DOCUMENT_BYTES
            and len(document.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES
        ):
            raise _too_big(name)
        try:
            doc = json.loads(document)
        except (ValueError, RecursionError):  # RecursionError: nested too deep for the parser
            raise InvalidRequest(f"policy {name!r} is not valid JSON") from None
        _check_nesting(name, doc)
        return doc, document
    _check_nesting(name, document)
    try:
        text = json.dumps(document, sort_keys=True)  # ASCII: ensure_ascii escapes the rest
    except (RecursionError, TypeError, ValueError):
        raise InvalidRequest(f"policy {name!r} is not a JSON document") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise _too_big(name)
    return document, text


def parse_policy(name: str, document: str | dict[str, Any]) -> Policy:
    """Validate a policy document; every problem is KMSInvalidRequest naming what is wrong.

    Size and nesting are checked before the statements are looked at (for a JSON text, the size
    before it is parsed); then the number of statements, patterns, their length and wildcards.
    """
    doc, text = _load(name, document)
    if not isinstance(doc, dict):
        raise InvalidRequest(f"policy {name!r} must be a JSON object")
    if doc.get("Version", VERSIONS[0]) not in VERSIONS:
        raise InvalidRequest(f"policy {name!r}: Version must be one of {', '.join(VERSIONS)}")
    raw_statements = doc.get("Statement")
    if isinstance(raw_statements, dict):
        raw_statements = [raw_statements]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise InvalidRequest(f"policy {name!r}: Statement must be a non-empty list")
    if len(raw_statements) > MAX_STATEMENTS:
        raise InvalidRequest(f"policy {name!r}: at most {MAX_STATEMENTS} statements are allowed")
    statements = []
    for raw in raw_statements:
        if not isinstance(raw, dict):
            raise InvalidRequest(f"policy {name!r}: each Statement must be an object")
        effect = raw.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise InvalidRequest(f"policy {name!r}: Effect must be Allow or Deny")
        if "NotAction" in raw or "NotResource" in raw or "Condition" in raw:
            raise InvalidRequest(
                f"policy {name!r}: NotAction, NotResource and Condition are not supported"
            )
        statements.append(
            Statement(
                allow=effect == "Allow",
                actions=_patterns(name, raw.get("Action"), "Action", ignore_case=True),
                resources=_patterns(name, raw.get("Resource"), "Resource", ignore_case=False),
            )
        )
    return Policy(name, tuple(statements), text)


def decide(policies: Iterable[Policy], action: str, resources: Sequence[str]) -> bool | None:
    """True when a statement allows `action` on `resources` and none denies it, False when one
    denies it (an explicit Deny wins over every Allow), None when no statement matches."""
    allowed: bool | None = None
    for policy in policies:
        for statement in policy.statements:
            if statement.matches(action, resources):
                if not statement.allow:
                    return False
                allowed = True
    return allowed


def is_allowed(policies: Iterable[Policy], action: str, resources: Sequence[str]) -> bool:
    return decide(policies, action, resources) is True


def key_resources(key_id: str | None, region: str, account_id: str) -> tuple[str, ...]:
    """The resource names a request is checked against."""
    if key_id is None:
        return ("*",)
    return (f"arn:aws:kms:{region}:{account_id}:key/{key_id}", f"arn:minio:kms:::{key_id}")
