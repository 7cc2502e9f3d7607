"""Clocks: simulated monotonic time, scaled sleeps and timers; a manual clock for tests."""

from __future__ import annotations

import abc
import asyncio
import datetime
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

from bus._errors import ConfigError

__all__ = ["Clock", "ManualClock", "RealClock", "TimerHandle"]

_UTC = datetime.UTC


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(abc.ABC):
    """Simulated time. ``now()`` is monotonic seconds; every delay is in simulated seconds."""

    time_scale: float

    @abc.abstractmethod
    def now(self) -> float:
        """Monotonic simulated seconds."""

    @abc.abstractmethod
    def wall(self) -> datetime.datetime:
        """UTC wall time, advancing with ``now()`` (for status messages and logs)."""

    def wall_time(self) -> float:
        """:meth:`wall` as POSIX seconds (cheaper: no datetime built)."""
        return self.wall().timestamp()

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time."""

    @abc.abstractmethod
    def call_later(
        self, delay: float, callback: Callable[..., object], *args: object
    ) -> TimerHandle:
        """Call ``callback(*args)`` on the running loop after ``delay`` simulated seconds."""


class RealClock(Clock):
    """Loop time scaled by ``time_scale``: ``sleep(s)`` takes ``s * time_scale`` real seconds."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0:
            raise ConfigError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self._origin = time.monotonic()
        self._wall_origin = datetime.datetime.now(_UTC)
        self._wall_origin_time = self._wall_origin.timestamp()

    def now(self) -> float:
        return (time.monotonic() - self._origin) / self.time_scale

    def wall(self) -> datetime.datetime:
        return self._wall_origin + datetime.timedelta(seconds=self.now())

    def wall_time(self) -> float:
        return self._wall_origin_time + self.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) * self.time_scale)

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: object
    ) -> TimerHandle:
        return asyncio.get_running_loop().call_later(
            max(0.0, delay) * self.time_scale, callback, *args
        )


class _ManualTimer:
    __slots__ = ("args", "callback", "cancelled", "clock")

    def __init__(
        self, clock: ManualClock, callback: Callable[..., object], args: tuple[object, ...]
    ) -> None:
        self.clock = clock
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.clock._cancelled += 1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ManualClock(Clock):
    """A clock that only moves when a test calls ``await clock.advance(seconds)``.

    ``advance`` fires every timer whose deadline is reached, in deadline order, and lets
    the woken tasks run (``settle_steps`` loop iterations) after each deadline, so a
    5-minute retry takes no wall time.
    """

    time_scale = 1.0

    def __init__(
        self,
        start: float = 0.0,
        wall_start: datetime.datetime | None = None,
        settle_steps: int = 64,
    ) -> None:
        self._now = float(start)
        self._wall_origin = wall_start or datetime.datetime(2024, 1, 1, tzinfo=_UTC)
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()
        self._cancelled = 0
        self.settle_steps = settle_steps

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime.datetime:
        return self._wall_origin + datetime.timedelta(seconds=self._now)

    def wall_time(self) -> float:
        return self._wall_origin.timestamp() + self._now

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: object
    ) -> TimerHandle:
        if self._cancelled > 1024 and self._cancelled * 2 > len(self._timers):
            # Every request arms a timeout that is usually cancelled: compact the heap.
            self._timers = [e for e in self._timers if not e[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled = 0
        timer = _ManualTimer(self, callback, args)
        heapq.heappush(self._timers, (self._now + max(0.0, delay), next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()

    @property
    def pending(self) -> int:
        """Timers not yet fired nor cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None."""
        for deadline, _, timer in sorted(self._timers):
            if not timer.cancelled:
                return deadline
        return None

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in deadline order and letting them run."""
        if seconds < 0:
            raise ConfigError(f"cannot advance a clock by a negative time ({seconds!r})")
        target = self._now + seconds
        timers = self._timers
        while timers and timers[0][0] <= target:
            deadline = timers[0][0]
            self._now = max(self._now, deadline)
            while timers and timers[0][0] <= deadline:
                _, _, timer = heapq.heappop(timers)
                if timer.cancelled:
                    self._cancelled -= 1
                else:
                    timer.cancelled = True
                    timer.callback(*timer.args)
            await self.settle()
        self._now = target
        await self.settle()

    async def settle(self) -> None:
        """Let ready tasks run (and what they wake, up to ``settle_steps`` hops)."""
        for _ in range(self.settle_steps):
            await asyncio.sleep(0)
