"""KeyedLocks: one holder per key at a time, keys independent, nothing kept once idle."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from actors.site._keyed import KeyedLocks


async def test_one_holder_per_key_and_nothing_kept_once_idle() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    both = anyio.Event()

    async def hold(key: str) -> None:
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            if inside["a"] and inside["b"]:
                both.set()  # another key's holder runs meanwhile
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            inside[key] -= 1

    async with anyio.create_task_group() as tg:
        for key in ("a", "a", "a", "b", "b"):
            tg.start_soon(hold, key)
        await anyio.lowlevel.checkpoint()
        assert locks.busy("a")
        assert locks.busy("b")
    assert most == {"a": 1, "b": 1}
    assert both.is_set()
    assert not locks.busy("a")
    assert not locks.busy("b")
