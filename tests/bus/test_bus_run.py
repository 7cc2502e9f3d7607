"""The run helper picks uvloop where installed and can be told which loop to use."""

from __future__ import annotations

import msgspec

from bus import Actor, Bus, handler, loop_name, run, uvloop_available


class Add(msgspec.Struct, frozen=True):
    a: int
    b: int


class Adder(Actor):
    @handler
    async def add(self, msg: Add) -> int:
        return msg.a + msg.b


async def _main(x: int) -> tuple[str, int]:
    async with Bus() as bus:
        bus.spawn(Adder(), "CS1/Adder")
        total: int = await bus.request("CS1/Adder", Add(x, 1))
        return loop_name(), total


def test_run_uses_uvloop_where_installed_and_asyncio_on_request() -> None:
    expected = "uvloop" if uvloop_available() else "asyncio"
    assert run(_main, 41) == (expected, 42)
    assert run(_main, 1, use_uvloop=False) == ("asyncio", 2)
