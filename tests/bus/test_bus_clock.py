"""Clocks: a 5-minute retry under ManualClock takes no wall time; request timeouts; scaling."""

from __future__ import annotations

import asyncio
import datetime
import time

import msgspec
import pytest

from bus import Actor, Bus, ConfigError, ManualClock, RealClock, RequestTimeout, handler


class Retry(msgspec.Struct, frozen=True):
    attempt: int


class Despooler(Actor):
    """Retries every 5 minutes until its third attempt, like despooler's scheduled retry."""

    def __init__(self) -> None:
        self.attempts: list[tuple[int, float]] = []

    @handler
    async def retry(self, msg: Retry) -> None:
        self.attempts.append((msg.attempt, self.clock.now()))
        if msg.attempt < 3:
            self.send_later(300, self.address, Retry(msg.attempt + 1))


class Silent(Actor):
    @handler
    async def retry(self, msg: Retry) -> None:
        await asyncio.Event().wait()


async def test_five_minute_send_later_fires_only_when_the_clock_is_advanced() -> None:
    clock = ManualClock()
    started = time.monotonic()
    async with Bus(clock=clock) as bus:
        desp = bus.spawn(Despooler(), "PS1/Despooler")
        await bus.send("PS1/Despooler", Retry(1))
        await clock.settle()
        assert desp.attempts == [(1, 0.0)]
        await clock.advance(299)
        assert desp.attempts == [(1, 0.0)]
        await clock.advance(1)
        assert desp.attempts == [(1, 0.0), (2, 300.0)]
        await clock.advance(3600)  # fires the third at its own deadline, in order
        assert desp.attempts == [(1, 0.0), (2, 300.0), (3, 600.0)]
        assert clock.now() == 3900.0
    assert time.monotonic() - started < 5  # (sanity, not a timing assertion: no real waits)


async def test_cancelled_send_later_is_not_delivered() -> None:
    clock = ManualClock()
    async with Bus(clock=clock) as bus:
        desp = bus.spawn(Despooler(), "PS1/Despooler")
        scheduled = bus.send_later(60, "PS1/Despooler", Retry(3))
        scheduled.cancel()
        await clock.advance(120)
        assert desp.attempts == []


async def test_manual_sleepers_wake_in_deadline_order() -> None:
    clock = ManualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    tasks = [
        asyncio.ensure_future(sleeper(n, s)) for n, s in (("c", 30.0), ("a", 10.0), ("b", 20.0))
    ]
    await clock.settle()
    await clock.advance(15)
    assert woke == [("a", 10.0)]
    await clock.advance(100)
    assert woke == [("a", 10.0), ("b", 20.0), ("c", 30.0)]
    await asyncio.gather(*tasks)
    assert clock.wall() == datetime.datetime(2024, 1, 1, 0, 1, 55, tzinfo=datetime.UTC)
    with pytest.raises(ConfigError, match="negative"):
        await clock.advance(-1)


async def test_request_times_out_on_the_clock() -> None:
    clock = ManualClock()
    async with Bus(clock=clock, drain_timeout=0) as bus:
        bus.spawn(Silent(), "PS1/Silent")
        ask = asyncio.ensure_future(bus.request("PS1/Silent", Retry(1), timeout=30))
        await clock.settle()  # the request starts (and its timeout with it)
        await clock.advance(29)
        assert not ask.done()
        await clock.advance(1)
        with pytest.raises(RequestTimeout) as info:
            await ask
        assert info.value.address == "PS1/Silent"
        assert info.value.message_type is Retry
        assert "within 30 s" in str(info.value)


async def test_request_times_out_while_waiting_for_mailbox_room() -> None:
    clock = ManualClock()
    async with Bus(clock=clock, drain_timeout=0) as bus:
        bus.spawn(Silent(), "PS1/Silent", mailbox_size=1)
        await bus.send("PS1/Silent", Retry(1))  # the worker takes it and never returns
        await clock.settle()
        await bus.send("PS1/Silent", Retry(2))  # fills the mailbox
        ask = asyncio.ensure_future(bus.request("PS1/Silent", Retry(3), timeout=5))
        await clock.settle()
        assert not ask.done()
        await clock.advance(5)
        with pytest.raises(RequestTimeout):
            await ask
        assert bus.counters("PS1/Silent").mailbox_depth == 1  # the request never went in


async def test_real_clock_scales_time() -> None:
    with pytest.raises(ConfigError, match="time_scale"):
        RealClock(time_scale=0)
    clock = RealClock(time_scale=0.001)  # 1 simulated second = 1 real millisecond
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    before = clock.now()
    clock.call_later(2.0, fired.set_result, "x")
    await clock.sleep(5.0)  # 5 ms real
    assert fired.done()
    assert clock.now() - before >= 5.0
    assert clock.wall().tzinfo is datetime.UTC


async def test_many_requests_under_a_manual_clock_leave_no_timers_behind() -> None:
    class Echo(Actor):
        @handler
        async def retry(self, msg: Retry) -> int:
            return msg.attempt

    clock = ManualClock()
    async with Bus(clock=clock) as bus:
        bus.spawn(Echo(), "PS1/Echo")
        for i in range(5000):
            assert await bus.request("PS1/Echo", Retry(i), timeout=30) == i
        assert clock.pending == 0
        assert len(clock._timers) < 3000  # cancelled timeouts are compacted away
