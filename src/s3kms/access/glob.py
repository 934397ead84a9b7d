"""Glob patterns of policies: `*` any run of characters, `?` one character, compiled once and
matched without backtracking (see `glob_match`), so no pattern can make a check expensive."""

from __future__ import annotations

from dataclasses import dataclass


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
