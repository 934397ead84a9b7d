"""Key metadata as this node last read it from Vault KV, reused for at most `window` seconds.

The crypto path (encrypt, decrypt, sign, ...) needs a key's state for every request; reading
it from KV each time doubled the Vault calls. AWS KMS itself documents key state changes as
eventually consistent; here the bound is explicit: an entry is used only while less than
`window` seconds have passed since the read that made it *began*, so a change written to Vault
at time t is seen by every node's requests from t + window on. Changes made through this node
invalidate its entry at once, and a read that was under way when one did is not kept (it may
have returned the state from before). Concurrent misses for one key share one read. A missing
key is never cached (a key created on another node is usable here at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from s3kms.model import KeyMetadata

# Entries kept at most; the oldest-inserted go first (a bound on memory, not a tuning knob: a
# dropped entry costs one KV read).
MAX_ENTRIES = 10_000


class MetadataCache:
    """Key id -> (KeyMetadata, when the read that produced it began), within `window` seconds."""

    def __init__(
        self,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.window = window
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, tuple[KeyMetadata, float]] = {}
        # Reads under way: their answer, and when they began.
        self._reads: dict[str, tuple[asyncio.Future[KeyMetadata], float]] = {}
        # Bumped by every invalidation: a read that began before one is not kept (of any key:
        # invalidations are rare, and a count per key would grow with the keys).
        self._epoch = 0

    def fresh(self, key_id: str) -> KeyMetadata | None:
        """The entry for `key_id` if it is still within the window."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        if self._clock() - entry[1] < self.window:
            return entry[0]
        del self._entries[key_id]
        return None

    async def get(self, key_id: str, read: Callable[[], Awaitable[KeyMetadata]]) -> KeyMetadata:
        """The fresh entry, or `read()`'s result (shared with concurrent callers, kept unless an
        invalidation came while it ran). Exceptions of `read` reach every caller; none is kept."""
        cached = self.fresh(key_id)
        if cached is not None:
            return cached
        if self.window <= 0:
            return await read()
        while (shared := self._reads.get(key_id)) is not None:
            pending, began = shared
            if self._clock() - began >= self.window:
                break  # under way for too long: its answer may be older than the window
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller was cancelled (maybe together with the reader)
                # Only the caller that was reading was cancelled: read again.
        future: asyncio.Future[KeyMetadata] = asyncio.get_running_loop().create_future()
        began, epoch = self._clock(), self._epoch
        self._reads[key_id] = (future, began)
        try:
            meta = await read()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody shared it
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(meta)
            if epoch == self._epoch:
                self._store(key_id, meta, began)
            return meta
        finally:
            if self._reads.get(key_id, (None,))[0] is future:
                del self._reads[key_id]

    def _store(self, key_id: str, meta: KeyMetadata, began: float) -> None:
        self._entries.pop(key_id, None)
        if self._entries and len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[key_id] = (meta, began)

    def invalidate(self, key_id: str) -> None:
        """This node changed `key_id`: forget it, and keep no read that was under way."""
        self._epoch += 1
        self._entries.pop(key_id, None)
        self._reads.pop(key_id, None)
