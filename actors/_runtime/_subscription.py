"""Events of a running hierarchy: status messages and transfer progress, replay included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal, TypeAlias

import msgspec

from actors.site.messages import TransferProgress
from actors.status import StatusMessage
from bus import Subscription as BusSubscription

__all__ = ["Event", "Subscription", "SubscriptionStatistics"]

Event: TypeAlias = StatusMessage | TransferProgress


class SubscriptionStatistics(msgspec.Struct, frozen=True):
    """A subscription's counters at one moment (as anyio's memory streams report theirs)."""

    buffer: int  # how many events it holds at most
    policy: Literal["block", "drop_oldest"]
    buffered: int  # events received and not yet read
    replayed: int  # stored status messages given before the live ones
    delivered: int  # events handed to the reader, replayed ones included
    dropped: int  # live events lost because the reader was slow ("drop_oldest")


class Subscription:
    """``async for event in sub``: first the replayed stored status messages (``since``),
    then live events, with no gap and no duplicate. A slow reader under ``"block"`` slows
    the components that publish; under ``"drop_oldest"`` it loses the oldest buffered
    events, counted in :attr:`dropped`."""

    def __init__(self, live: BusSubscription, replay: Sequence[StatusMessage]) -> None:
        self._live = live
        self._replay = list(replay)
        self._replayed = len(replay)
        self._delivered = 0
        # The last replayed record per site: a live message at or before it is a duplicate.
        self._seen: dict[str, int] = {}
        for msg in replay:
            self._seen[msg.site] = max(self._seen.get(msg.site, 0), msg.record_id)

    @property
    def dropped(self) -> int:
        return self._live.dropped

    def statistics(self) -> SubscriptionStatistics:
        return SubscriptionStatistics(
            buffer=self._live.buffer,
            policy="block" if self._live.policy == "block" else "drop_oldest",
            buffered=len(self._live) + len(self._replay),
            replayed=self._replayed,
            delivered=self._delivered,
            dropped=self._live.dropped,
        )

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while self._replay:
            self._delivered += 1
            yield self._replay.pop(0)
        async for event in self._live:
            if isinstance(event, StatusMessage) and event.record_id <= self._seen.get(
                event.site, 0
            ):
                continue  # replayed already
            self._delivered += 1
            yield event


def replay_order(messages: Mapping[str, Sequence[StatusMessage]]) -> list[StatusMessage]:
    """Stored messages of every site in one sequence: by time, then site and record."""
    merged = [m for msgs in messages.values() for m in msgs]
    return sorted(merged, key=lambda m: (m.time, m.site, m.record_id))
