"""ThreadHop: small blocking calls on one worker thread, in order, with anyio's
cancellation rule (a cancelled caller waits for its call's end)."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from contentlib import ThreadHop


async def test_calls_run_off_the_loop_in_order_and_return_their_results() -> None:
    hop = ThreadHop()
    loop_thread = threading.get_ident()
    order: list[int] = []

    def work(i: int) -> int:
        assert threading.get_ident() != loop_thread
        order.append(i)
        return i * i

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(hop.run, work, i)
    assert order == list(range(20))  # one thread, submission order
    assert await hop.run(work, 7) == 49
    assert hop.calls == 21


async def test_an_error_reaches_its_caller_alone() -> None:
    hop = ThreadHop()

    def fail() -> None:
        raise FileNotFoundError("gone.STA")

    with pytest.raises(FileNotFoundError, match=r"gone\.STA"):
        await hop.run(fail)
    assert await hop.run(lambda: "still serving") == "still serving"


def _join(name: str) -> None:
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join()


async def test_the_thread_ends_when_idle_and_the_next_call_starts_another() -> None:
    hop = ThreadHop("hop-idle-test", idle=0)  # ends as soon as its queue is empty
    seen = []
    for i in range(5):
        seen.append(await hop.run(lambda i=i: (i, threading.get_ident())))
        await anyio.to_thread.run_sync(_join, "hop-idle-test")  # gone before the next call
    assert [i for i, _ in seen] == list(range(5))
    assert not any(t.name == "hop-idle-test" for t in threading.enumerate())


async def test_a_cancelled_caller_waits_for_its_call_to_end() -> None:
    hop = ThreadHop()
    started, release = threading.Event(), threading.Event()
    ran: list[bool] = []
    exited: list[bool] = []
    scopes: list[anyio.CancelScope] = []

    def slow() -> None:
        started.set()
        release.wait()
        ran.append(True)

    async def caller() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await hop.run(slow)
        exited.append(bool(ran))

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await anyio.to_thread.run_sync(started.wait)
        scopes[0].cancel()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert not exited  # still waiting for the call, not abandoned
        release.set()
    assert exited == [True]
    assert scopes[0].cancelled_caught
