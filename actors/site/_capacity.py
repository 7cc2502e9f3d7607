"""The sender's outbox: its sending capacity, taken in package priority order, and the
state of each send request, which the scheduler logs while the request runs.

The product's sender runs at most ``sending_threads_per_site`` sending threads per
destination and ``sending_threads_total`` in all; a send request waiting for a thread is
taken by package priority (``SMSPackages.Priority``: 1 high, 2 medium, 3 low), then first
come. The scheduler and the sender of a site share the send request list as the product's
share the send request files of ``schedule.box\\outboxes\\LAN``: the sender writes how far
a request got, the scheduler reads it for its periodic "Send Request ... Remaining" line.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio

__all__ = ["SendRequestList", "SendRequestState", "SendingCapacity", "SentBytes"]

SendRequestState = Literal["Pending", "Active", "Retry", "Completed", "Failed"]


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    dest: str = field(compare=False)
    event: anyio.Event = field(compare=False, default_factory=anyio.Event)
    granted: bool = field(compare=False, default=False)


class SendingCapacity:
    """Sending threads per destination and in all, granted by priority, then first come.

    A request that cannot start waits; whenever a thread is released, the waiting requests
    are granted in (priority, arrival) order, each one whose destination and the total
    still have a free thread (a request for a full destination does not hold back one for
    another destination).
    """

    def __init__(self, per_site: int, total: int) -> None:
        self.per_site = per_site
        self.total = total
        self._used: dict[str, int] = {}
        self._used_total = 0
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()
        self.max_used_per_site = 0
        self.max_used_total = 0

    def used(self, dest: str) -> int:
        return self._used.get(dest, 0)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def thread(self, dest: str, priority: int) -> AsyncIterator[None]:
        """Hold a sending thread to ``dest`` for the body."""
        waiter = _Waiter(priority, next(self._seq), dest)
        bisect.insort(self._waiting, waiter)
        self._grant()
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self._release(dest)
            else:
                self._waiting.remove(waiter)
            raise
        try:
            yield
        finally:
            self._release(dest)

    def _grant(self) -> None:
        still: list[_Waiter] = []
        for waiter in self._waiting:
            if self._used_total < self.total and self.used(waiter.dest) < self.per_site:
                self._used[waiter.dest] = self.used(waiter.dest) + 1
                self._used_total += 1
                self.max_used_per_site = max(self.max_used_per_site, self._used[waiter.dest])
                self.max_used_total = max(self.max_used_total, self._used_total)
                waiter.granted = True
                waiter.event.set()
            else:
                still.append(waiter)
        self._waiting = still

    def _release(self, dest: str) -> None:
        self._used[dest] -= 1
        self._used_total -= 1
        self._grant()


@dataclass
class SentBytes:
    """One send request as the sender keeps it: its state and the bytes of its package
    file at the remote end."""

    size: int
    state: SendRequestState = "Pending"
    sent: int = 0

    @property
    def remaining(self) -> int:
        return max(self.size - self.sent, 0)


class SendRequestList:
    """The site's send requests by ID, written by the sender, read by the scheduler."""

    def __init__(self) -> None:
        self._requests: dict[str, SentBytes] = {}

    def open(self, request_id: str, size: int) -> SentBytes:
        """The request's entry, created at the size of its package file if new."""
        entry = self._requests.get(request_id)
        if entry is None:
            entry = self._requests[request_id] = SentBytes(size)
        return entry

    def get(self, request_id: str) -> SentBytes | None:
        return self._requests.get(request_id)

    def close(self, request_id: str) -> None:
        self._requests.pop(request_id, None)
