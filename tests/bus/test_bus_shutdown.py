"""Lifecycle: start/stop hooks, drain on exit, cancel, stop_actor, and no task outliving the bus."""

from __future__ import annotations

import asyncio

import anyio
import msgspec
import pytest

from bus import Actor, Bus, BusClosed, BusError, ManualClock, UnknownAddress, handler


class Job(msgspec.Struct, frozen=True):
    n: int


class Stage(Actor):
    """Handles a job after a clock-free yield and forwards it to the next stage, if any."""

    def __init__(self, next_stage: str | None = None) -> None:
        self.next_stage = next_stage
        self.done: list[int] = []
        self.events: list[str] = []

    async def on_start(self) -> None:
        self.events.append("start")

    async def on_stop(self) -> None:
        self.events.append("stop")

    @handler
    async def job(self, msg: Job) -> None:
        await asyncio.sleep(0)
        self.done.append(msg.n)
        if self.next_stage is not None:
            await self.send(self.next_stage, msg)


class Stuck(Actor):
    def __init__(self) -> None:
        self.stopped = False
        self.cancelled = False

    async def on_start(self) -> None:
        self.start_task(self.forever)

    async def forever(self) -> None:
        await asyncio.Event().wait()

    async def on_stop(self) -> None:
        self.stopped = True

    @handler
    async def job(self, msg: Job) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_exit_drains_a_pipeline_then_runs_stop_hooks() -> None:
    async with Bus(clock=ManualClock()) as bus:
        first = bus.spawn(Stage("PS1/B"), "PS1/A", mailbox_size=10)
        second = bus.spawn(Stage(), "PS1/B", mailbox_size=10)
        for i in range(200):
            await bus.send("PS1/A", Job(i))
    # Everything sent before exit went through both stages.
    assert first.done == list(range(200))
    assert second.done == list(range(200))
    assert first.events == ["start", "stop"]
    assert second.events == ["start", "stop"]
    assert bus.undelivered_count == 0
    assert bus.counters("PS1/B").handled == 200


async def test_no_task_outlives_its_bus() -> None:
    before = asyncio.all_tasks()
    clock = ManualClock()
    async with Bus(clock=clock, drain_timeout=0) as bus:
        stuck = bus.spawn(Stuck(), "PS1/Stuck", mailbox_size=1)
        pool = Stage()
        pool.workers = 4
        bus.spawn(pool, "PS1/Pool")
        bus.spawn(Stage(), "PS1/Idle")
        await bus.send("PS1/Stuck", Job(1))  # its handler never returns
        await asyncio.sleep(0)
        await bus.send("PS1/Stuck", Job(2))  # fills the mailbox
        blocked_sender = asyncio.ensure_future(bus.send("PS1/Stuck", Job(3)))
        bus.send_later(300, "PS1/Pool", Job(4))
        sub = bus.subscribe("status")
        await sub.__aenter__()
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) > len(before) + 1
    assert asyncio.all_tasks() - {blocked_sender} == before
    with pytest.raises(BusClosed):
        await blocked_sender  # the sender blocked on a full mailbox is told, not left hanging
    assert asyncio.all_tasks() == before
    assert stuck.cancelled
    assert stuck.stopped
    assert bus.undelivered_count == 1  # Job(2) never reached a worker
    assert pool.done == []  # the 5-minute send_later was dropped with the bus
    assert sub.closed


async def test_drain_timeout_bounds_the_wait_for_a_stuck_handler() -> None:
    async with Bus(clock=ManualClock(), drain_timeout=0.05) as bus:
        stuck = bus.spawn(Stuck(), "PS1/Stuck")
        await bus.send("PS1/Stuck", Job(1))
    assert stuck.cancelled
    assert stuck.stopped


async def test_after_exit_the_bus_refuses_messages() -> None:
    async with Bus(clock=ManualClock()) as bus:
        bus.spawn(Stage(), "PS1/A")
    with pytest.raises(BusClosed):
        await bus.send("PS1/A", Job(1))
    with pytest.raises(BusClosed):
        await bus.request("PS1/A", Job(1))
    with pytest.raises(BusClosed):
        await bus.publish("status", Job(1))
    with pytest.raises(BusClosed):
        bus.spawn(Stage(), "PS1/B")
    with pytest.raises(BusError, match="runs once"):
        async with bus:
            pass


async def test_pending_requests_get_bus_closed_when_the_bus_stops() -> None:
    async with Bus(clock=ManualClock(), drain_timeout=0) as bus:
        bus.spawn(Stuck(), "PS1/Stuck")
        await bus.send("PS1/Stuck", Job(1))  # occupies the only worker
        asker = asyncio.ensure_future(bus.request("PS1/Stuck", Job(2), timeout=None))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not asker.done()
    with pytest.raises(BusClosed, match="PS1/Stuck stopped before handling it"):
        await asker
    assert bus.undelivered_count == 1


async def test_only_a_lost_message_warns_at_stop_not_a_request_whose_asker_was_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Bus(clock=ManualClock(), drain_timeout=0) as bus:
        bus.spawn(Stuck(), "PS1/Asked")
        bus.spawn(Stuck(), "PS1/Told")
        await bus.send("PS1/Asked", Job(1))  # each one's only worker stays busy
        await bus.send("PS1/Told", Job(1))
        asker = asyncio.ensure_future(bus.request("PS1/Asked", Job(2), timeout=None))
        gone = asyncio.ensure_future(bus.request("PS1/Asked", Job(3), timeout=None))
        await bus.send("PS1/Told", Job(2))
        for _ in range(20):
            await asyncio.sleep(0)
        gone.cancel()  # its asker stopped waiting: nobody to tell, nothing lost either
        for _ in range(5):
            await asyncio.sleep(0)
    with pytest.raises(BusClosed):
        await asker
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["PS1/Told stopped with 1 messages not handled"]
    assert bus.undelivered_count == 3


async def test_body_error_propagates_as_itself_and_stops_everything() -> None:
    stage = Stage()

    async def body() -> None:
        async with Bus(clock=ManualClock()) as bus:
            bus.spawn(stage, "PS1/A")
            await asyncio.sleep(0)
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await body()
    assert stage.events == ["start", "stop"]


async def test_stop_actor_drains_runs_on_stop_and_unregisters() -> None:
    async with Bus(clock=ManualClock()) as bus:
        stage = bus.spawn(Stage(), "PS1/A")
        for i in range(5):
            await bus.send("PS1/A", Job(i))
        await bus.stop_actor("PS1/A")
        assert stage.done == [0, 1, 2, 3, 4]
        assert stage.events == ["start", "stop"]
        assert bus.addresses() == []
        with pytest.raises(UnknownAddress):
            await bus.send("PS1/A", Job(9))
        with pytest.raises(UnknownAddress):
            await bus.stop_actor("PS1/A")
        assert bus.counters("PS1/A").handled == 5
        bus.spawn(Stage(), "PS1/A")  # the address is free again


async def test_cancelled_from_outside_the_bus_still_stops_every_actor() -> None:
    before = asyncio.all_tasks()
    stage = Stage()
    with anyio.CancelScope() as outer:
        async with Bus(clock=ManualClock()) as bus:
            bus.spawn(stage, "PS1/A")
            await bus.send("PS1/A", Job(1))
            outer.cancel()
            await asyncio.sleep(0)  # cancelled here
            pytest.fail("not cancelled")
    assert outer.cancelled_caught
    assert stage.events == ["start", "stop"]
    assert asyncio.all_tasks() == before


async def test_subscribing_to_a_stopped_bus_is_refused() -> None:
    async with Bus(clock=ManualClock()) as bus:
        pass
    with pytest.raises(BusClosed, match="status"):
        async with bus.subscribe("status"):
            pass
