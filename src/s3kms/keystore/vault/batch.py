"""Concurrent transit calls of one operation on one key, sent as one `batch_input` call.

Under load, most of a Vault call's cost is per call, not per item (HTTP, token lookup, policy
check, JSON, and in s3kms the HTTP client): transit encrypts or decrypts a batch of items in one
request. Items are not held back to wait for others: while fewer than `max_calls` calls of a
lane (an operation and a key) are in flight, an item goes out at once, alone; past that, items
queue, and each call that finishes takes the whole queue (up to `max_items`) as its next batch.
So an idle node answers as fast as before, and a busy one sends fewer, larger calls.

Every item gets the `VaultResponse` a call of its own would have got, so the store reads it as
before: the item's result as `data` (status 200), the item's error as a 400 (transit answers a
batch in which any item failed with 400, and a 500 for an internal error), or, when transit
refused the whole call (a missing key, a denied token, an outage), that whole answer. An
exception (BackendUnavailable) reaches every item of the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from s3kms.keystore.vault.transport import VaultResponse
from s3kms.request import current_request_id, without_request

# Calls in flight per lane before items queue, and items per call. On 2 cores with OpenBao beside
# s3kms, 1, 2, 4, 8 and 16 calls did about as well within the noise (s3kms's own request handling
# is the bottleneck there, benchmarks/README.md): 2 lets Vault work on two batches at once.
MAX_CALLS = 2
MAX_ITEMS = 128

Send = Callable[[str, str, list[dict[str, Any]]], Awaitable[VaultResponse]]
# An item, its caller's future, and its caller's request id (for the call's log lines).
_Waiting = tuple[dict[str, Any], "asyncio.Future[VaultResponse]", str | None]


class _Lane:
    __slots__ = ("in_flight", "queue")

    def __init__(self) -> None:
        self.in_flight = 0
        self.queue: list[_Waiting] = []


def item_response(whole: VaultResponse, index: int) -> VaultResponse:
    """What item `index` of a batch call would have got as a call of its own."""
    results = whole.data.get("batch_results")
    if not isinstance(results, list) or whole.status not in (200, 400, 500):
        return whole  # refused as a whole (or not a batch answer): every item shares it
    if len(results) <= index or not isinstance(results[index], dict):
        return VaultResponse(500, {"errors": ["Vault answered a batch without this item"]})
    result = results[index]
    error = result.get("error")
    if error:
        status = whole.status if whole.status >= 500 else 400
        return VaultResponse(status, {"errors": [str(error)]}, whole.resent)
    return VaultResponse(200, {"data": result}, whole.resent)


class TransitBatcher:
    """Items of one operation on one key, sent together (see the module docstring)."""

    def __init__(self, send: Send, max_calls: int = MAX_CALLS, max_items: int = MAX_ITEMS) -> None:
        """`send(op, key_id, items)` makes one transit call with `batch_input: items`."""
        self._send = send
        self._max_calls = max_calls
        self._max_items = max_items
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # transit calls made, and the items they carried (observability, tests)
        self.items = 0

    async def call(self, op: str, key_id: str, item: dict[str, Any]) -> VaultResponse:
        """Transit `op` on `key_id` for one item; the answer a call of its own would get."""
        lane_id = (op, key_id)
        lane = self._lanes.get(lane_id)
        if lane is None:
            lane = self._lanes[lane_id] = _Lane()
        future: asyncio.Future[VaultResponse] = asyncio.get_running_loop().create_future()
        lane.queue.append((item, future, current_request_id.get()))
        if lane.in_flight < self._max_calls:
            lane.in_flight += 1
            drain = self._drain(lane_id, lane)
            task = asyncio.get_running_loop().create_task(drain, context=without_request())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self, lane_id: tuple[str, str], lane: _Lane) -> None:
        """Send the lane's queue, batch after batch, until it is empty."""
        try:
            while lane.queue:
                batch = lane.queue[: self._max_items]
                del lane.queue[: self._max_items]
                await self._one_call(lane_id, batch)
        finally:
            lane.in_flight -= 1
            if lane.in_flight == 0:
                # (Cancelled, by aclose: no call is left to take what still waits.)
                for _, future, _ in lane.queue:
                    if not future.done():
                        future.set_exception(asyncio.CancelledError())
                self._lanes.pop(lane_id, None)

    async def _one_call(self, lane_id: tuple[str, str], batch: list[_Waiting]) -> None:
        op, key_id = lane_id
        self.calls += 1
        self.items += len(batch)
        # The call's log lines name the request when it carries one request's item only.
        current_request_id.set(batch[0][2] if len(batch) == 1 else None)
        try:
            whole = await self._send(op, key_id, [item for item, _, _ in batch])
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else asyncio.CancelledError()
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for index, (_, future, _) in enumerate(batch):
            if not future.done():  # (a caller that was cancelled meanwhile)
                future.set_result(item_response(whole, index))

    async def aclose(self) -> None:
        """Stop the calls in flight (their items fail with CancelledError)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
