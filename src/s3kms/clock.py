"""Time as an injectable value, so SigV4 skew, deletion windows and rotation can be tested."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class OffsetClock:
    """The system clock shifted by an offset; tests move it forward to make deletions fall due."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def rfc3339(ts: float) -> str:
    """`2024-01-15T10:30:00Z`: RFC 3339, UTC, whole seconds, as the admin document writes times."""
    return _rfc3339(int(ts))


@lru_cache(maxsize=4096)  # creation times repeat on every status and list call
def _rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
