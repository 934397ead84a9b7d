"""MetadataCache (src/s3kms/keystore/vault/cache.py) on its own: a fake clock, real asyncio.

Every read is a `Reads` call the test answers by hand (its future), so a read "takes" whatever
fake time the test lets pass before answering it, and concurrent callers really overlap.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from s3kms.errors import BackendUnavailable, KeyNotFound
from s3kms.keystore.vault.cache import MetadataCache
from s3kms.model import KeyMetadata, KeyState

T = TypeVar("T")

KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
START = 100.0
WINDOW = 1.0


class Clock:
    """A clock that moves only when the test sets it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Reads:
    """The read function: each call waits for the test to answer it (`answer`/`fail`)."""

    def __init__(self) -> None:
        self.calls: list[asyncio.Future[KeyMetadata]] = []

    def __call__(self) -> Awaitable[KeyMetadata]:
        future: asyncio.Future[KeyMetadata] = asyncio.get_running_loop().create_future()
        self.calls.append(future)
        return future

    def answer(self, index: int, meta: KeyMetadata) -> None:
        self.calls[index].set_result(meta)

    def fail(self, index: int, exc: BaseException) -> None:
        self.calls[index].set_exception(exc)


def meta(description: str = "", key_id: str = KEY) -> KeyMetadata:
    return KeyMetadata(
        key_id=key_id, state=KeyState.ENABLED, created_at=1_700_000_000.0, description=description
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def settle() -> None:
    """Let every ready task run until it waits on something the test controls."""
    for _ in range(20):
        await asyncio.sleep(0)


def start(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    return asyncio.get_running_loop().create_task(coro)


async def immediate(value: KeyMetadata) -> KeyMetadata:
    return value


def counting(value: KeyMetadata, counter: list[int]) -> Callable[[], Awaitable[KeyMetadata]]:
    """A read that answers at once and counts its calls in `counter[0]`."""

    def read() -> Awaitable[KeyMetadata]:
        counter[0] += 1
        return immediate(value)

    return read


# --------------------------------------------------------------------------- the window


def test_fresh_within_the_window_counted_from_when_the_read_began() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MetadataCache(WINDOW, clock)
        reads = Reads()
        first, second = meta("first"), meta("second")
        assert cache.fresh(KEY) is None

        task = start(cache.get(KEY, reads))
        await settle()
        assert len(reads.calls) == 1
        clock.now = START + 0.75  # the read takes 0.75 s
        reads.answer(0, first)
        assert await task is first

        assert cache.fresh(KEY) is first
        clock.now = START + 0.999
        assert cache.fresh(KEY) is first
        assert await cache.get(KEY, reads) is first
        assert len(reads.calls) == 1  # served from the cache

        # Exactly `window` after the read *began* (0.25 s after it ended): expired.
        clock.now = START + WINDOW
        assert cache.fresh(KEY) is None
        task = start(cache.get(KEY, reads))
        await settle()
        assert len(reads.calls) == 2
        reads.answer(1, second)
        assert await task is second
        assert cache.fresh(KEY) is second
        clock.now = START + 2 * WINDOW - 0.001
        assert cache.fresh(KEY) is second
        clock.now = START + 2 * WINDOW
        assert cache.fresh(KEY) is None

    run(main())


def test_window_zero_reads_every_time() -> None:
    async def main() -> None:
        cache = MetadataCache(0.0, Clock())
        count = [0]
        value = meta()
        read = counting(value, count)
        for _ in range(3):
            assert await cache.get(KEY, read) is value
        assert count[0] == 3
        assert cache.fresh(KEY) is None

        # Concurrent gets do not share either.
        reads = Reads()
        tasks = [start(cache.get(KEY, reads)) for _ in range(3)]
        await settle()
        assert len(reads.calls) == 3
        answers = [meta(str(i)) for i in range(3)]
        for i, answer in enumerate(answers):
            reads.answer(i, answer)
        assert await asyncio.gather(*tasks) == answers
        assert cache.fresh(KEY) is None

    run(main())


# --------------------------------------------------------------------------- shared reads


def test_concurrent_gets_share_one_read() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MetadataCache(WINDOW, clock)
        reads = Reads()
        value = meta("shared")
        tasks = [start(cache.get(KEY, reads)) for _ in range(10)]
        await settle()
        clock.now = START + 0.5
        tasks += [start(cache.get(KEY, reads)) for _ in range(5)]  # arriving while it runs
        await settle()
        assert len(reads.calls) == 1
        assert not any(t.done() for t in tasks)
        reads.answer(0, value)
        results = await asyncio.gather(*tasks)
        assert all(r is value for r in results)
        assert cache.fresh(KEY) is value
        assert len(reads.calls) == 1

        # Another key is read on its own.
        other = meta("other", key_id="other-key")
        task = start(cache.get("other-key", reads))
        await settle()
        assert len(reads.calls) == 2
        reads.answer(1, other)
        assert await task is other

    run(main())


def test_a_read_under_way_for_a_window_is_not_joined() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MetadataCache(WINDOW, clock)
        reads = Reads()
        old, new = meta("old"), meta("new")
        first = start(cache.get(KEY, reads))
        await settle()
        clock.now = START + WINDOW - 0.001
        joined = start(cache.get(KEY, reads))  # began less than a window ago: joins
        await settle()
        assert len(reads.calls) == 1
        clock.now = START + WINDOW  # the shared read began a whole window ago
        late = start(cache.get(KEY, reads))
        await settle()
        assert len(reads.calls) == 2
        later = start(cache.get(KEY, reads))  # joins the new read, not the old one
        await settle()
        assert len(reads.calls) == 2

        reads.answer(1, new)
        assert await late is new
        assert await later is new
        reads.answer(0, old)
        assert await first is old
        assert await joined is old
        # Whatever is kept, nothing is served from a read that began a window ago or more.
        clock.now = START + WINDOW + 0.5
        assert cache.fresh(KEY) in (new, None)

    run(main())


# --------------------------------------------------------------------------- invalidation


def test_invalidate_drops_a_fresh_entry() -> None:
    async def main() -> None:
        cache = MetadataCache(WINDOW, Clock())
        count = [0]
        value = meta()
        read = counting(value, count)
        await cache.get(KEY, read)
        assert cache.fresh(KEY) is value
        cache.invalidate(KEY)
        assert cache.fresh(KEY) is None
        await cache.get(KEY, read)
        assert count[0] == 2
        cache.invalidate("never-cached")  # harmless

    run(main())


def test_invalidate_during_a_read() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MetadataCache(WINDOW, clock)
        reads = Reads()
        before, after = meta("before the write"), meta("after the write")
        reader = start(cache.get(KEY, reads))
        sharer = start(cache.get(KEY, reads))
        await settle()
        assert len(reads.calls) == 1

        cache.invalidate(KEY)  # this node wrote the key while the read was under way
        newcomer = start(cache.get(KEY, reads))  # does not join the old read
        await settle()
        assert len(reads.calls) == 2

        clock.now = START + 0.1
        reads.answer(0, before)
        assert await reader is before  # its callers get it...
        assert await sharer is before
        assert cache.fresh(KEY) is None  # ...but it is not kept

        reads.answer(1, after)
        assert await newcomer is after
        assert cache.fresh(KEY) is after  # a read that began after the invalidation is kept
        assert await cache.get(KEY, reads) is after
        assert len(reads.calls) == 2

    run(main())


def test_invalidate_alone_during_a_read_then_the_next_get_reads_again() -> None:
    async def main() -> None:
        cache = MetadataCache(WINDOW, Clock())
        reads = Reads()
        reader = start(cache.get(KEY, reads))
        await settle()
        cache.invalidate(KEY)
        reads.answer(0, meta("stale"))
        assert (await reader).description == "stale"
        assert cache.fresh(KEY) is None
        again = start(cache.get(KEY, reads))
        await settle()
        assert len(reads.calls) == 2
        reads.answer(1, meta("current"))
        assert (await again).description == "current"

    run(main())


# --------------------------------------------------------------------------- failures


def test_an_exception_reaches_every_sharer_and_is_not_cached() -> None:
    async def main() -> None:
        cache = MetadataCache(WINDOW, Clock())
        reads = Reads()
        tasks = [start(cache.get(KEY, reads)) for _ in range(5)]
        await settle()
        assert len(reads.calls) == 1
        error = KeyNotFound(key_id=KEY)
        reads.fail(0, error)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is error for r in results), results
        assert cache.fresh(KEY) is None

        value = meta()
        task = start(cache.get(KEY, reads))  # read again, not the cached exception
        await settle()
        assert len(reads.calls) == 2
        reads.answer(1, value)
        assert await task is value

    run(main())


def test_no_future_exception_was_never_retrieved() -> None:
    """A failed read, shared or not, leaves no future whose exception nobody retrieved (the
    loop's exception handler is told of one when it is collected: checked first here with a
    future that does leak, so the check can see one)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))

        def leak() -> None:
            loop.create_future().set_exception(RuntimeError("control"))

        leak()
        gc.collect()
        assert [c["message"] for c in reported] == ["Future exception was never retrieved"]
        reported.clear()

        cache = MetadataCache(WINDOW, Clock())
        reads = Reads()

        # Nobody shares the read.
        alone = start(cache.get(KEY, reads))
        await settle()
        reads.fail(0, BackendUnavailable("Vault is down"))
        with pytest.raises(BackendUnavailable):
            await alone

        # Shared, and one sharer is cancelled before the read fails.
        tasks = [start(cache.get(KEY, reads)) for _ in range(3)]
        await settle()
        tasks[1].cancel()
        await settle()
        reads.fail(1, BackendUnavailable("Vault is down"))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], BackendUnavailable)
        assert isinstance(results[1], asyncio.CancelledError)
        assert isinstance(results[2], BackendUnavailable)

        del alone, tasks, results
        reads.calls.clear()
        gc.collect()
        await settle()
        gc.collect()
        assert reported == []

    run(main())


def test_cancelled_reader_does_not_cancel_the_sharers() -> None:
    async def main() -> None:
        cache = MetadataCache(WINDOW, Clock())
        reads = Reads()
        reader = start(cache.get(KEY, reads))
        await settle()
        sharers = [start(cache.get(KEY, reads)) for _ in range(4)]
        await settle()
        assert len(reads.calls) == 1

        reader.cancel()
        await settle()
        assert reader.cancelled()
        assert not any(t.done() for t in sharers)
        assert len(reads.calls) == 2  # one of them reads again; the others share that read
        value = meta()
        reads.answer(1, value)
        results = await asyncio.gather(*sharers)
        assert all(r is value for r in results)
        assert cache.fresh(KEY) is value

    run(main())


def test_a_sharer_cancelled_together_with_the_reader_stays_cancelled() -> None:
    """Both cancelled at once (a shutdown, a task group): the sharer must end cancelled, not
    start a read of its own and return its result."""

    async def main() -> None:
        cache = MetadataCache(WINDOW, Clock())
        reads = Reads()
        reader = start(cache.get(KEY, reads))
        await settle()
        sharer = start(cache.get(KEY, reads))
        await settle()
        reader.cancel()
        sharer.cancel()
        await settle()
        for i in range(1, len(reads.calls)):  # (answered, so that the bug cannot hang the test)
            reads.answer(i, meta("read again"))
        await asyncio.wait([reader, sharer], timeout=5)
        assert reader.cancelled()
        assert sharer.cancelled(), f"the sharer returned {sharer.result()!r}"
        assert len(reads.calls) == 1

    run(main())


def test_cancelled_sharer_does_not_cancel_the_read() -> None:
    async def main() -> None:
        cache = MetadataCache(WINDOW, Clock())
        reads = Reads()
        reader = start(cache.get(KEY, reads))
        await settle()
        sharers = [start(cache.get(KEY, reads)) for _ in range(3)]
        await settle()
        sharers[0].cancel()
        await settle()
        assert sharers[0].cancelled()
        assert not reads.calls[0].done()
        value = meta()
        reads.answer(0, value)
        assert await reader is value
        assert await sharers[1] is value
        assert await sharers[2] is value
        assert len(reads.calls) == 1
        assert cache.fresh(KEY) is value

    run(main())


# --------------------------------------------------------------------------- memory bound


def test_max_entries_drops_the_oldest_inserted() -> None:
    async def main() -> None:
        clock = Clock()
        cache = MetadataCache(10.0, clock, max_entries=3)
        values = {k: meta(key_id=k) for k in ("k1", "k2", "k3", "k4", "k5")}
        count = [0]
        for key in ("k1", "k2", "k3"):
            clock.now += 0.1
            await cache.get(key, counting(values[key], count))
        assert cache.fresh("k1") is values["k1"]  # (a hit does not make it newer)
        await cache.get("k4", counting(values["k4"], count))
        assert cache.fresh("k1") is None  # the oldest inserted
        assert [cache.fresh(k) for k in ("k2", "k3", "k4")] == [
            values[k] for k in ("k2", "k3", "k4")
        ]

        # Re-reading k2 inserts it anew: k3 is now the oldest.
        cache.invalidate("k2")
        await cache.get("k2", counting(values["k2"], count))
        await cache.get("k5", counting(values["k5"], count))
        assert cache.fresh("k3") is None
        assert [cache.fresh(k) for k in ("k2", "k4", "k5")] == [
            values[k] for k in ("k2", "k4", "k5")
        ]
        assert count[0] == 6

    run(main())
