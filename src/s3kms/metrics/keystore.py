"""Timing the service's calls into a keystore, without changing the keystore.

`time_calls(store, metrics)` replaces, on that one store object, each KeyStore method the
service calls (every `async def` of the protocol but `status` and `close`) by a wrapper that
measures the call and counts what it raised. The object stays the same (its type, its other
attributes), so nothing that holds the store sees a difference. A store method that calls
another of its own public methods (a Vault `sign` reading the key with `get_key`) is timed for
both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from s3kms.errors import KMSError
from s3kms.keystore.base import KeyStore
from s3kms.metrics.registry import Metrics

TIMED = tuple(
    name
    for name, member in vars(KeyStore).items()
    if inspect.iscoroutinefunction(member) and name not in ("status", "close")
)


def error_code(exc: BaseException) -> str:
    """The label of what a call raised: the error tree's code, else the exception's class."""
    return exc.code if isinstance(exc, KMSError) else type(exc).__name__


def _timed(
    method: Callable[..., Awaitable[Any]], metrics: Metrics, backend: str, name: str
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        error: str | None = None
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            error = error_code(exc)
            raise
        finally:
            metrics.keystore_call(backend, name, perf_counter() - started, error)

    return call


def time_calls(store: KeyStore, metrics: Metrics) -> None:
    for name in TIMED:
        setattr(store, name, _timed(getattr(store, name), metrics, store.kind, name))
