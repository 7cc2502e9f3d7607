"""One lock per key, kept only while someone holds it or waits for it.

For work that must run one at a time per package, per DP and package, or per file, where
keys come and go by the thousand: a dict of locks that were never dropped would hold one
per key ever seen.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import anyio

__all__ = ["KeyedLocks"]

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, anyio.Lock] = {}

    def busy(self, key: K) -> bool:
        """Whether someone holds or waits for the key's lock."""
        return key in self._locks

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        try:
            async with lock:
                yield
        finally:
            idle = not lock.locked() and not lock.statistics().tasks_waiting
            if idle and self._locks.get(key) is lock:
                del self._locks[key]
