"""What the end-to-end benchmarks watch: status messages, per package, from one listener.

A package is *created* at its first 2301 (from ``source_site`` when given: across sites
every site that receives the package raises its own 2301) and *installed* at its
``dps``-th 2330; its latency runs from ``started[pkg]`` (set by the caller just before
its distribute) to that 2330.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from actors import Hierarchy
from actors.status import STATUS_TOPIC, StatusMessage


class InstallTracker:
    def __init__(self, dps: int, *, source_site: str | None = None) -> None:
        self.dps = dps
        self.source_site = source_site
        self.expected_created = 0
        self.expected = 0
        self.started: dict[str, float] = {}
        self.latency: dict[str, float] = {}
        self.created = anyio.Event()
        self.all_done = anyio.Event()
        self._created: set[str] = set()
        self._installed: Counter[str] = Counter()

    def feed(self, msg: StatusMessage) -> None:
        pkg = msg.attributes.get(400, "")
        if msg.message_id == 2301:
            if self.source_site is None or msg.site == self.source_site:
                self._created.add(pkg)
                if len(self._created) >= self.expected_created:
                    self.created.set()
        elif msg.message_id == 2330:
            self._installed[pkg] += 1
            if self._installed[pkg] == self.dps and pkg in self.started:
                self.latency[pkg] = time.perf_counter() - self.started[pkg]
                if len(self.latency) >= self.expected:
                    self.all_done.set()


@asynccontextmanager
async def tracking(h: Hierarchy, tracker: InstallTracker) -> AsyncIterator[InstallTracker]:
    """Feed ``tracker`` every status message of ``h`` while the block runs."""
    async with anyio.create_task_group() as tg:
        ready = anyio.Event()

        async def listen() -> None:
            async with h.bus.subscribe(STATUS_TOPIC, buffer=1_000_000) as sub:
                ready.set()
                async for msg in sub:
                    if isinstance(msg, StatusMessage):
                        tracker.feed(msg)

        tg.start_soon(listen)
        await ready.wait()
        yield tracker
        tg.cancel_scope.cancel()
