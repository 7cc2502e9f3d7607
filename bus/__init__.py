"""The actor runtime: actors, mailboxes, addressing, request/reply, topics, supervision, clock.

Runs on asyncio (uvloop where installed); every task is owned by an anyio task group.
"""

from bus._actor import Actor, handler
from bus._bus import Bus, ScheduledSend
from bus._clock import Clock, ManualClock, RealClock
from bus._counters import ActorCounters
from bus._errors import (
    AddressInUse,
    BusClosed,
    BusError,
    ConfigError,
    EscalationError,
    InvalidMessage,
    NoHandler,
    RemoteError,
    RequestTimeout,
    UnknownAddress,
)
from bus._messages import DEAD_LETTERS, DeadLetter
from bus._run import loop_name, run, uvloop_available
from bus._topics import Subscription

__all__ = [
    "DEAD_LETTERS",
    "Actor",
    "ActorCounters",
    "AddressInUse",
    "Bus",
    "BusClosed",
    "BusError",
    "Clock",
    "ConfigError",
    "DeadLetter",
    "EscalationError",
    "InvalidMessage",
    "ManualClock",
    "NoHandler",
    "RealClock",
    "RemoteError",
    "RequestTimeout",
    "ScheduledSend",
    "Subscription",
    "UnknownAddress",
    "handler",
    "loop_name",
    "run",
    "uvloop_available",
]
