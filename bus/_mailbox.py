"""A bounded FIFO mailbox: deque fast paths, futures only when a side must wait.

Modelled on asyncio.Queue but leaner: the owner's workers pop the deque directly while
it has items, and ``close()`` zeroes ``maxsize`` so the put fast path needs no extra check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

from bus._errors import BusClosed

__all__ = ["Mailbox", "MailboxClosed", "Waiting"]


class MailboxClosed(Exception):
    """Raised to a worker waiting on a closed, empty mailbox."""


class Waiting:
    """An item that wants to know the future its sender waits on while the mailbox is full."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None


def wake_next(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(None)
            return


class Mailbox:
    __slots__ = (
        "capacity",
        "closed",
        "getters",
        "high_water",
        "items",
        "maxsize",
        "name",
        "on_idle",
        "putters",
        "waiting",
    )

    def __init__(self, maxsize: int, name: str) -> None:
        self.items: deque[Any] = deque()
        self.maxsize = maxsize
        self.capacity = maxsize
        self.name = name
        self.high_water = 0
        self.closed = False
        self.waiting = 0  # workers blocked in get()
        self.on_idle: Callable[[], None] | None = None  # set while someone waits for quiescence
        self.getters: deque[asyncio.Future[None]] = deque()
        self.putters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self.items)

    def try_put(self, item: Any) -> bool:
        items = self.items
        n = len(items)
        if n >= self.maxsize:
            return False
        items.append(item)
        if n >= self.high_water:
            self.high_water = n + 1
        if self.getters:
            wake_next(self.getters)
        return True

    async def put(self, item: Any) -> None:
        """Append, waiting while full (backpressure); BusClosed once closed."""
        items = self.items
        while len(items) >= self.maxsize:
            if self.closed:
                raise BusClosed(f"mailbox of {self.name} is closed")
            putter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.putters.append(putter)
            if isinstance(item, Waiting):
                item.waiter = putter
            try:
                await putter
            except BaseException:
                putter.cancel()
                with contextlib.suppress(ValueError):
                    self.putters.remove(putter)
                if len(items) < self.maxsize and not putter.cancelled():
                    wake_next(self.putters)  # pass on a wake-up we will not use
                raise
            finally:
                if isinstance(item, Waiting):
                    item.waiter = None
        self.try_put(item)

    def after_take(self) -> None:
        """Call after popping ``items`` directly: lets one blocked sender in."""
        if self.putters:
            wake_next(self.putters)

    async def get(self) -> Any:
        items = self.items
        while not items:
            if self.closed:
                raise MailboxClosed(self.name)
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.getters.append(getter)
            self.waiting += 1
            if self.on_idle is not None:
                self.on_idle()
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self.getters.remove(getter)
                if items and not getter.cancelled():
                    wake_next(self.getters)
                raise
            finally:
                self.waiting -= 1
        item = items.popleft()
        if self.putters:
            wake_next(self.putters)
        return item

    def close(self, keep: bool = False) -> list[Any]:
        """Refuse further puts and wake every waiter.

        Hands back what was never taken, unless ``keep``: then ``get`` still returns it.
        """
        self.closed = True
        self.maxsize = 0
        left = [] if keep else list(self.items)
        if not keep:
            self.items.clear()
        for waiters in (self.getters, self.putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
        return left
