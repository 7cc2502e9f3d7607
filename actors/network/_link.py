"""The network model: bandwidth, latency and faults on the way to a site or a DP.

Every byte PkgXferMgr (or a sender) moves over a link is accounted here, so a link can
slow a transfer down (bandwidth, latency, ``slowdown``, all in simulated time through the
bus clock and so through ``time_scale``), refuse it (``down``, ``fail_probability``) or cut
it half way (``cut_after_bytes``, or :meth:`NetworkLink.inject_cut` at run time).
A pair of ends with no ``[[link]]`` in the hierarchy is a local, unthrottled path.
"""

from __future__ import annotations

import random

from actors.config import Link
from actors.errors import LinkCut, LinkDown
from bus import Clock

__all__ = ["NetworkLink"]


class NetworkLink:
    """One link, shared by every transfer that crosses it."""

    def __init__(self, name: str, clock: Clock, spec: Link | None = None) -> None:
        self.name = name
        self._clock = clock
        self.bandwidth: float | None = spec.bandwidth / spec.slowdown if spec else None
        self.latency = spec.latency if spec else 0.0
        self.down = spec.down if spec else False
        self.fail_probability = spec.fail_probability if spec else 0.0
        # Seeded by name: a fault plan in hierarchy.toml replays the same way every run.
        self._rng = random.Random(name)
        self.bytes_sent = 0
        self.transfers = 0
        self.cuts = 0
        self._cut_after: int | None = None
        self._cut_times = 0
        self._armed = 0
        if spec is not None and spec.cut_after_bytes is not None:
            self.inject_cut(spec.cut_after_bytes)

    @property
    def throttled(self) -> bool:
        """True when crossing this link takes simulated time (callers keep chunks small)."""
        return self.bandwidth is not None or self.latency > 0

    def inject_cut(self, after_bytes: int, times: int = 1) -> None:
        """Cut the next ``times`` transfers once ``after_bytes`` more bytes have crossed."""
        if after_bytes < 0 or times < 1:
            raise ValueError(
                f"link {self.name}: a cut needs after_bytes >= 0 and times >= 1,"
                f" got {after_bytes} and {times}"
            )
        self._cut_after = after_bytes
        self._cut_times = times
        self._armed = 0

    def allowance(self, nbytes: int) -> int:
        """How many of the next ``nbytes`` bytes cross before an armed cut fires."""
        if self._cut_after is None:
            return nbytes
        return max(0, min(nbytes, self._cut_after - self._armed))

    async def open(self) -> None:
        """Start a transfer: the link must be up; one latency for the connection."""
        self.transfers += 1
        if self.down:
            raise LinkDown(self.name)
        if self.fail_probability and self._rng.random() < self.fail_probability:
            raise LinkDown(self.name, "the connection failed (injected fault)")
        if self.latency:
            await self._clock.sleep(self.latency)

    async def carry(self, nbytes: int) -> None:
        """Account ``nbytes`` that crossed, waiting out the bandwidth.

        Raises :class:`LinkCut` once an armed cut is reached: the caller has then moved
        exactly what :meth:`allowance` allowed, as a real cut connection would leave it.
        """
        self.bytes_sent += nbytes
        if self.bandwidth is not None and nbytes:
            await self._clock.sleep(nbytes / self.bandwidth)
        if self._cut_after is None:
            return
        self._armed += nbytes
        if self._armed >= self._cut_after:
            sent, self._armed = self._armed, 0
            self.cuts += 1
            self._cut_times -= 1
            if self._cut_times <= 0:
                self._cut_after = None
            raise LinkCut(self.name, sent)
