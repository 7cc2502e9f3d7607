"""Topics: bounded per-subscriber buffers, the "block" and "drop_oldest" policies."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from bus import Actor, Bus, BusClosed, ConfigError, ManualClock, handler


class Status(msgspec.Struct, frozen=True):
    message_id: int


async def settle(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_every_subscriber_gets_every_message_in_order() -> None:
    async with Bus(clock=ManualClock()) as bus:
        async with bus.subscribe("status") as a, bus.subscribe("status") as b:
            for mid in (2300, 2301, 2311):
                assert await bus.publish("status", Status(mid)) == 2
            assert [a.get_nowait().message_id for _ in range(3)] == [2300, 2301, 2311]
            assert [(await b.get()).message_id for _ in range(3)] == [2300, 2301, 2311]
            with pytest.raises(LookupError, match="status"):
                a.get_nowait()
        assert await bus.publish("status", Status(1)) == 0  # unsubscribed on exit


async def test_block_policy_is_backpressure_to_the_publisher() -> None:
    async with (
        Bus(clock=ManualClock()) as bus,
        bus.subscribe("status", buffer=2, policy="block") as sub,
    ):
        await bus.publish("status", Status(1))
        await bus.publish("status", Status(2))
        third = asyncio.ensure_future(bus.publish("status", Status(3)))
        await settle()
        assert not third.done()
        assert (await sub.get()).message_id == 1
        await third
        assert [(await sub.get()).message_id for _ in range(2)] == [2, 3]
        assert sub.dropped == 0


async def test_drop_oldest_policy_drops_and_counts() -> None:
    async with (
        Bus(clock=ManualClock()) as bus,
        bus.subscribe("status", buffer=3, policy="drop_oldest") as sub,
    ):
        for mid in range(10):
            await bus.publish("status", Status(mid))  # never waits
        assert sub.dropped == 7
        assert sub.received == 10
        assert [sub.get_nowait().message_id for _ in range(3)] == [7, 8, 9]


async def test_a_blocked_publisher_goes_on_when_the_subscriber_leaves() -> None:
    async with Bus(clock=ManualClock()) as bus:
        sub = bus.subscribe("status", buffer=1)
        async with sub:
            await bus.publish("status", Status(1))
            blocked = asyncio.ensure_future(bus.publish("status", Status(2)))
            await settle()
            assert not blocked.done()
        await blocked
        assert (await sub.get()).message_id == 1  # what was buffered stays readable
        with pytest.raises(BusClosed, match="status"):
            await sub.get()


async def test_actor_publishes_and_iteration_ends_when_the_bus_stops() -> None:
    class DistMgr(Actor):
        @handler
        async def status(self, msg: Status) -> None:
            await self.publish("status", Status(msg.message_id + 1))

    got: list[int] = []
    async with Bus(clock=ManualClock()) as bus:
        bus.spawn(DistMgr(), "PS1/DistMgr")
        sub = bus.subscribe("status", buffer=10)
        await sub.__aenter__()
        for mid in (2299, 2300):
            await bus.send("PS1/DistMgr", Status(mid))

        async def read() -> None:
            async for msg in sub:
                got.append(msg.message_id)

        reader = asyncio.ensure_future(read())
    await reader  # ends: the bus closed the subscription, after the buffered messages
    assert got == [2300, 2301]


def test_bad_subscriptions_are_refused() -> None:
    bus = Bus()
    with pytest.raises(ConfigError, match="policy for 'status'"):
        bus.subscribe("status", policy="newest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="buffer for 'status'"):
        bus.subscribe("status", buffer=0)
    with pytest.raises(ConfigError, match="topic"):
        bus.subscribe("")


async def test_one_subscription_to_several_topics_keeps_publish_order() -> None:
    async with Bus(clock=ManualClock()) as bus:
        async with bus.subscribe(("a", "b"), buffer=10) as sub:
            assert sub.topics == ("a", "b")
            for i in range(3):
                await bus.publish("a" if i % 2 == 0 else "b", _N(i))
            await bus.publish("c", _N(99))  # not subscribed
            got = [sub.get_nowait() for _ in range(len(sub))]
        assert got == [_N(0), _N(1), _N(2)]
        assert await bus.publish("a", _N(3)) == 0  # unsubscribed from every topic


class _N(msgspec.Struct, frozen=True):
    n: int
