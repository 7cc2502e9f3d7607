"""Publish/subscribe: each subscriber has a bounded buffer and a slow-subscriber policy."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

from bus._errors import BusClosed, ConfigError
from bus._mailbox import Mailbox, MailboxClosed

__all__ = ["POLICIES", "Policy", "Subscription", "Topics"]

Policy = Literal["block", "drop_oldest"]
POLICIES: tuple[str, ...] = ("block", "drop_oldest")


class Subscription:
    """A subscriber's bounded buffer on one topic; ``async with`` subscribes and unsubscribes.

    Policy for a full buffer: ``"block"`` makes the publisher wait (backpressure);
    ``"drop_oldest"`` drops the oldest buffered message and counts it in ``dropped``.
    Iteration ends when the subscription or the bus closes (after the buffer is read).
    """

    def __init__(
        self, topics: Topics, topic: str | tuple[str, ...], buffer: int, policy: str
    ) -> None:
        names = (topic,) if isinstance(topic, str) else topic
        if not isinstance(names, tuple) or not names:
            raise ConfigError(f"a subscription needs one or more topics, got {topic!r}")
        for name in names:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"a topic must be a non-empty str, got {name!r}")
        topic = ", ".join(names)
        if not isinstance(buffer, int) or buffer < 1:
            raise ConfigError(
                f"subscription buffer for {topic!r} must be an int >= 1, got {buffer!r}"
            )
        if policy not in POLICIES:
            raise ConfigError(
                f"subscription policy for {topic!r} must be one of {POLICIES}, got {policy!r}"
            )
        self.topic = topic
        self.topics = names  # one buffer for all of them: messages in publish order
        self.buffer = buffer
        self.policy = policy
        self.received = 0  # messages accepted into the buffer
        self.dropped = 0  # messages dropped by "drop_oldest"
        self._topics = topics
        self._box = Mailbox(buffer, f"subscription to {topic!r}")
        self._entered = False

    async def __aenter__(self) -> Subscription:
        if self._entered:
            raise ConfigError(f"subscription to {self.topic!r} is already open")
        self._entered = True
        self._topics.add(self)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe; publishers blocked on this subscriber go on."""
        self._topics.discard(self)
        self._box.close(keep=True)

    @property
    def closed(self) -> bool:
        return self._box.closed

    def __len__(self) -> int:
        return len(self._box)

    def offer(self, msg: Any) -> bool:
        """Buffer without waiting; False when full and the policy is "block"."""
        box = self._box
        if box.try_put(msg):
            self.received += 1
            return True
        if box.closed:
            return True
        if self.policy == "block":
            return False
        box.items.popleft()
        self.dropped += 1
        box.try_put(msg)
        self.received += 1
        return True

    async def put(self, msg: Any) -> None:
        """Buffer, waiting for room (the "block" policy); a closed subscription ignores it."""
        try:
            await self._box.put(msg)
        except BusClosed:
            return
        self.received += 1

    async def get(self) -> Any:
        """The next message; BusClosed once closed and empty."""
        try:
            return await self._box.get()
        except MailboxClosed:
            raise BusClosed(f"subscription to {self.topic!r} is closed") from None

    def get_nowait(self) -> Any:
        """The next buffered message; LookupError when none is buffered."""
        box = self._box
        if not box.items:
            raise LookupError(f"no message buffered on {self.topic!r}")
        item = box.items.popleft()
        box.after_take()
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._box.get()
        except MailboxClosed:
            raise StopAsyncIteration from None


class Topics:
    def __init__(self) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        self.closed = False

    def add(self, sub: Subscription) -> None:
        if self.closed:
            raise BusClosed(f"cannot subscribe to {sub.topic!r}: the bus is stopped")
        for topic in sub.topics:
            self._subs.setdefault(topic, []).append(sub)

    def discard(self, sub: Subscription) -> None:
        for topic in sub.topics:
            subs = self._subs.get(topic)
            if subs is not None and sub in subs:
                subs.remove(sub)

    def subscribers(self, topic: str) -> int:
        return len(self._subs.get(topic, ()))

    async def publish(self, topic: str, msg: Any) -> int:
        subs = self._subs.get(topic)
        if not subs:
            return 0
        for sub in tuple(subs):
            if not sub.offer(msg):
                await sub.put(msg)
        return len(subs)

    def close_all(self) -> None:
        self.closed = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()
