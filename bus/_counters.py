"""A snapshot of one actor's counters, readable at run time."""

from __future__ import annotations

import msgspec

__all__ = ["ActorCounters"]


class ActorCounters(msgspec.Struct, frozen=True):
    address: str
    handled: int  # messages whose handler returned
    failed: int  # messages whose handler raised
    restarts: int
    mailbox_depth: int
    mailbox_high_water: int
    dead_letters: int  # messages of a type this actor has no handler for
    workers: int
