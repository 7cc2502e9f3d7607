"""Handler failures: RemoteError, restarts that keep the mailbox, escalation, dead letters."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from bus import (
    DEAD_LETTERS,
    Actor,
    Bus,
    DeadLetter,
    EscalationError,
    ManualClock,
    NoHandler,
    RemoteError,
    UnknownAddress,
    handler,
)


class Work(msgspec.Struct, frozen=True):
    n: int


class Unwanted(msgspec.Struct, frozen=True):
    text: str


class Flaky(Actor):
    """Fails on negative numbers; records starts and handled work."""

    def __init__(self) -> None:
        self.starts = 0
        self.handled: list[int] = []

    async def on_start(self) -> None:
        self.starts += 1

    @handler
    async def work(self, msg: Work) -> int:
        if msg.n < 0:
            raise ValueError(f"negative work {msg.n}")
        self.handled.append(msg.n)
        return msg.n


async def settle(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_failed_request_raises_remote_error_naming_actor_and_type() -> None:
    async with Bus(clock=ManualClock()) as bus:
        bus.spawn(Flaky(), "PS1/DistMgr")
        with pytest.raises(RemoteError) as info:
            await bus.request("PS1/DistMgr", Work(-7))
        err = info.value
        assert err.address == "PS1/DistMgr"
        assert err.message_type is Work
        assert isinstance(err.original, ValueError)
        assert err.__cause__ is err.original
        assert "PS1/DistMgr" in str(err)
        assert "Work" in str(err)
        assert "negative work -7" in str(err)


async def test_restart_reruns_on_start_and_keeps_the_mailbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Bus(clock=ManualClock()) as bus:
        flaky = Flaky()
        bus.spawn(flaky, "PS1/DistMgr")
        # Queue everything before the worker runs: the failure is in the middle.
        for n in (1, 2, -1, 3, 4):
            await bus.send("PS1/DistMgr", Work(n))
        with caplog.at_level(logging.ERROR):
            await settle()
        assert flaky.handled == [1, 2, 3, 4]
        assert flaky.starts == 2
        counters = bus.counters("PS1/DistMgr")
        assert (counters.handled, counters.failed, counters.restarts) == (4, 1, 1)
    failure = [r for r in caplog.records if r.name == "PS1/DistMgr" and r.levelno == logging.ERROR]
    assert len(failure) == 1
    assert "Work(n=-1)" in failure[0].getMessage()  # logged with the message


async def test_too_many_restarts_in_the_window_stops_the_bus() -> None:
    clock = ManualClock()
    flaky = Flaky()
    body_finished = False

    async def body() -> None:
        nonlocal body_finished
        async with Bus(clock=clock, max_restarts=2, restart_window=60.0) as bus:
            bus.spawn(flaky, "PS1/DistMgr")
            for _ in range(3):
                await bus.send("PS1/DistMgr", Work(-1))
            await settle()
            body_finished = True  # not reached: the escalation cancels the body

    with pytest.raises(EscalationError) as info:
        await body()
    assert not body_finished
    assert info.value.address == "PS1/DistMgr"
    assert isinstance(info.value.__cause__, ValueError)
    assert flaky.starts == 3  # the first start and two restarts, then escalation


async def test_failures_spread_beyond_the_window_do_not_escalate() -> None:
    clock = ManualClock()
    async with Bus(clock=clock, max_restarts=2, restart_window=60.0) as bus:
        flaky = bus.spawn(Flaky(), "PS1/DistMgr")
        for _ in range(5):
            await bus.send("PS1/DistMgr", Work(-1))
            await settle()
            await clock.advance(61)
        assert await bus.request("PS1/DistMgr", Work(9)) == 9
        assert bus.counters("PS1/DistMgr").restarts == 5
        assert flaky.starts == 6


async def test_failing_on_start_is_supervised_and_escalates() -> None:
    class Broken(Actor):
        async def on_start(self) -> None:
            raise RuntimeError("cannot open site database")

    async def body() -> None:
        async with Bus(clock=ManualClock(), max_restarts=3) as bus:
            bus.spawn(Broken(), "PS1/Broken")
            await asyncio.Event().wait()  # the escalation cancels this

    with pytest.raises(EscalationError, match=r"PS1/Broken failed 4 times.*cannot open site"):
        await body()


async def test_failing_background_task_restarts_the_actor() -> None:
    class Poller(Actor):
        def __init__(self) -> None:
            self.starts = 0

        async def on_start(self) -> None:
            self.starts += 1
            if self.starts == 1:
                self.start_task(self.poll)

        async def poll(self) -> None:
            raise OSError("poll failed")

    async with Bus(clock=ManualClock()) as bus:
        poller = bus.spawn(Poller(), "PS1/Poller")
        await settle()
        assert poller.starts == 2
        assert bus.counters("PS1/Poller").failed == 1


async def test_dead_letters_are_published_and_counted() -> None:
    async with Bus(clock=ManualClock()) as bus:
        flaky = bus.spawn(Flaky(), "PS1/DistMgr")
        async with bus.subscribe(DEAD_LETTERS) as letters:
            await bus.send("PS1/DistMgr", Unwanted("tell"))
            with pytest.raises(NoHandler, match="PS1/DistMgr has no handler for Unwanted"):
                await bus.request("PS1/DistMgr", Unwanted("ask"))
            with pytest.raises(UnknownAddress, match="PS9/Nobody"):
                await bus.send("PS9/Nobody", Work(1))
            got = [await letters.get() for _ in range(3)]
        assert got == [
            DeadLetter("PS1/DistMgr", Unwanted("tell"), "no handler"),
            DeadLetter("PS1/DistMgr", Unwanted("ask"), "no handler"),
            DeadLetter("PS9/Nobody", Work(1), "unknown address"),
        ]
        assert bus.dead_letter_count == 3
        assert bus.counters("PS1/DistMgr").dead_letters == 2
        assert flaky.handled == []
        assert bus.counters("PS1/DistMgr").failed == 0


async def test_escalation_while_draining_on_exit_is_raised() -> None:
    flaky = Flaky()

    async def body() -> None:
        async with Bus(clock=ManualClock(), max_restarts=0) as bus:
            bus.spawn(flaky, "PS1/DistMgr")
            await bus.send("PS1/DistMgr", Work(1))
            await bus.send("PS1/DistMgr", Work(-1))  # handled during the drain on exit
            await bus.send("PS1/DistMgr", Work(2))

    with pytest.raises(EscalationError, match="PS1/DistMgr failed 1 times"):
        await body()
    assert flaky.handled == [1]


class Answering(Flaky):
    """A ValueError is this actor's answer to a bad request, not a failure."""

    reply_errors = (ValueError,)


async def test_reply_errors_answer_the_asker_without_restart_or_escalation() -> None:
    async with Bus(clock=ManualClock(), max_restarts=1) as bus:
        actor = bus.spawn(Answering(), "PS1DP1/DPProvider")
        for n in range(5):  # far more than max_restarts: none of them is a failure
            with pytest.raises(RemoteError) as info:
                await bus.request("PS1DP1/DPProvider", Work(-n - 1))
            assert isinstance(info.value.original, ValueError)
        assert await bus.request("PS1DP1/DPProvider", Work(3)) == 3
        counters = bus.counters("PS1DP1/DPProvider")
        assert (counters.failed, counters.restarts) == (0, 0)
        assert actor.starts == 1


async def test_an_injected_failure_restarts_the_actor_with_its_mailbox() -> None:
    async with Bus(clock=ManualClock()) as bus:
        flaky = bus.spawn(Flaky(), "PS1/DistMgr")
        await settle()
        bus.inject_failure("PS1/DistMgr", RuntimeError("injected"))
        await settle()
        assert flaky.starts == 2
        counters = bus.counters("PS1/DistMgr")
        assert (counters.failed, counters.restarts) == (1, 1)
        assert await bus.request("PS1/DistMgr", Work(3)) == 3  # still serving
        with pytest.raises(UnknownAddress, match="PS9/Nobody"):
            bus.inject_failure("PS9/Nobody", RuntimeError("nobody"))
