"""The embedding API (issue #7): a service's lifecycle across tasks, exceptions as raised,
one owner per data root, events with replay, inventory, and the small ones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from actors import Hierarchy
from actors.errors import (
    DataRootLocked,
    HierarchyClosed,
    HierarchyFailed,
    NotSupported,
    UnknownPackage,
)
from actors.sitedb import JobState
from actors.status import StatusMessage, stored_messages
from bus import Actor, BusClosed, ManualClock, handler
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    HIERARCHY,
    SITE,
    TIME_SCALE,
    TIMEOUT,
    dp_library_root,
    open_hierarchy,
    write_tree,
)


async def test_start_in_one_task_and_aclose_in_another(tmp_path: Path) -> None:
    """The service pattern: startup and shutdown hooks run in different tasks."""
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    box: dict[str, Hierarchy] = {}

    async def startup() -> None:
        box["h"] = await Hierarchy.start(HIERARCHY, root=tmp_path / "data", time_scale=TIME_SCALE)

    async def shutdown() -> None:
        await box["h"].aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(startup)
    h = box["h"]
    pkg = await h.create_package("App", src, site=SITE)
    await h.distribute(pkg, [DP1])
    assert [s.state for s in await h.wait(pkg, timeout=TIMEOUT)] == ["Installed"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(shutdown)
    await h.aclose()  # idempotent
    with pytest.raises(HierarchyClosed):
        await h.content_status(pkg)
    # the root is free again
    async with open_hierarchy(tmp_path) as again:
        assert [p.pkg_id for p in await again.packages()] == [pkg.pkg_id]


async def test_exceptions_in_the_body_come_out_as_raised(tmp_path: Path) -> None:
    with pytest.raises(UnknownPackage) as info:
        async with open_hierarchy(tmp_path) as h:
            await h.distribute("PS1FFFFF", [DP1])
    assert not isinstance(info.value, BaseExceptionGroup)

    class Mine(Exception):
        pass

    with pytest.raises(Mine):
        async with open_hierarchy(tmp_path):
            raise Mine


class _Broken(msgspec.Struct, frozen=True):
    n: int


class _Fragile(Actor):
    @handler
    async def broken(self, msg: _Broken) -> None:
        raise RuntimeError(f"broken {msg.n}")


async def test_a_component_that_escalates_surfaces_as_hierarchy_failed(tmp_path: Path) -> None:
    # A clock that stands still: every failure is at the same clock time, so they add up
    # to the restart limit however slowly a loaded machine runs them.
    h = await Hierarchy.start(HIERARCHY, root=tmp_path / "data", clock=ManualClock())
    h.bus.spawn(_Fragile(), f"{SITE}/Fragile")

    async def stopped() -> bool:
        """Fail the component until its supervisor gives up."""
        try:
            await h.bus.send(f"{SITE}/Fragile", _Broken(0))
            await h.packages()
        except HierarchyFailed:
            return True
        except BusClosed:
            pass
        return False

    with anyio.fail_after(TIMEOUT):
        while not await stopped():
            await anyio.lowlevel.checkpoint()
    with pytest.raises(HierarchyFailed) as info:
        await h.aclose()
    assert "Fragile" in str(info.value.__cause__)


def test_the_data_root_has_one_owner(tmp_path: Path) -> None:
    """A second open fails at once naming the holder's PID, in another process or in this
    one; the lock goes with a killed process."""
    root = tmp_path / "data"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(HIERARCHY), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"

        async def second() -> None:
            with pytest.raises(DataRootLocked, match=f"process {holder.pid}"):
                async with Hierarchy.open(HIERARCHY, root=root, time_scale=TIME_SCALE):
                    pass

        anyio.run(second)
    finally:
        holder.kill()  # no clean close: the OS drops the lock with the process
        holder.wait()

    async def after_the_kill() -> None:
        async with Hierarchy.open(HIERARCHY, root=root, time_scale=TIME_SCALE):
            with pytest.raises(DataRootLocked):
                async with Hierarchy.open(HIERARCHY, root=root, time_scale=TIME_SCALE):
                    pass

    anyio.run(after_the_kill)


_HOLD = textwrap.dedent(
    """
    import sys, anyio
    from actors._runtime._hierarchy import Hierarchy

    async def main():
        async with Hierarchy.open(sys.argv[1], root=sys.argv[2], time_scale=0.0001):
            print("open", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)

    anyio.run(main)
    """
)


async def test_a_slow_subscriber_counts_what_it_dropped(tmp_path: Path) -> None:
    """Beside a subscriber that keeps everything, a slow one (2 events, drop_oldest) holds
    the last 2 events and counts every other one as dropped: nothing is lost silently."""
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with (
        open_hierarchy(tmp_path) as h,
        h.subscribe(buffer=100_000) as everything,
        h.subscribe(buffer=2, policy="drop_oldest") as slow,
    ):
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1, DP2])
        await h.wait(pkg, timeout=TIMEOUT)
        # both counted at one moment (no await between): publishes reach both at once
        kept, lagging = everything.statistics(), slow.statistics()
        assert kept.dropped == 0
        assert lagging.buffered == 2
        assert slow.dropped == lagging.dropped == kept.buffered - 2 > 0
        seen = [await anext(aiter(everything)) for _ in range(kept.buffered)]
        last = [await anext(aiter(slow)) for _ in range(2)]
        assert last == seen[-2:]
        assert slow.statistics().delivered == 2


async def test_replay_after_reopen_gives_every_stored_message_once(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
    async with open_hierarchy(tmp_path) as h:
        stored = await stored_messages(h.servers[SITE].db)
        seen: list[tuple[str, int]] = []
        async with h.subscribe(since=0, buffer=10_000) as sub:
            await h.distribute(pkg, [DP2])
            await h.wait(pkg, timeout=TIMEOUT)
            total = len(await stored_messages(h.servers[SITE].db))
            async for event in sub:
                # (the other sites' messages about the package DRS brought them interleave)
                if isinstance(event, StatusMessage) and event.site == SITE:
                    seen.append((event.site, event.record_id))
                if len(seen) == total:
                    break
        assert seen[: len(stored)] == [(m.site, m.record_id) for m in stored]
        assert len(seen) == len(set(seen)) == total  # live after replay: no gap, no duplicate
        assert sub.statistics().replayed >= len(stored)


async def test_inventory_of_packages_sites_and_dps(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        assert await h.packages() == []
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        (listed,) = await h.packages()
        assert (listed.pkg_id, listed.name, listed.site, listed.version) == (
            pkg.pkg_id,
            "App",
            SITE,
            1,
        )
        assert listed.source == str(src)
        assert await h.package(pkg.pkg_id) == listed
        assert await h.packages(site="PS2") == []
        sites = {s.code: s for s in await h.sites()}
        assert sites["SS1"].type == "secondary"
        assert sites["SS1"].parent == SITE
        names = [d.name for d in await h.dps(site=SITE)]
        assert DP1 in names
        assert "PS2DP1.CONTOSO.COM" not in names
        pull = [d for d in await h.dps() if d.pull]
        assert [(d.name, d.sources) for d in pull] == [
            ("P01PDP1.CONTOSO.COM", ("P01DP1.CONTOSO.COM",))
        ]


async def test_wait_with_no_time_on_a_final_package_returns(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        assert [s.state for s in await h.wait(pkg, timeout=0)] == ["Installed"]


def test_another_backend_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    pytest.importorskip("trio")

    async def main() -> None:
        with pytest.raises(NotSupported, match="asyncio"):
            async with Hierarchy.open(HIERARCHY, root=tmp_path / "data"):
                pass

    anyio.run(main, backend="trio")
    assert not (tmp_path / "data").exists()


async def test_close_with_a_transfer_in_flight_is_bounded_and_it_resumes(tmp_path: Path) -> None:
    """``shutdown_timeout`` bounds how long close waits for a transfer in flight; the job
    stays in the database and finishes at the next open."""
    src = write_tree(tmp_path / "Big", {"big.bin": os.urandom(1 << 20)})
    clock = ManualClock()  # never advanced: the throttled send never ends by itself
    h = await Hierarchy.start(HIERARCHY, root=tmp_path / "data", clock=clock, shutdown_timeout=0)
    site = h.servers[SITE]
    for name, link in site.links.items():
        link.latency = 0.0
        link.bandwidth = 1000.0 if name == DP1 else None
    pkg = await h.create_package("Big", src, site=SITE)
    await h.distribute(pkg, [DP1])

    staging = dp_library_root(h, DP1).parent / "SMS_DP$"

    async def sending() -> bool:
        """The send has begun moving bytes (not only been marked SENDING)."""
        jobs = [j.state for j in await site.db.distribution_jobs()]
        staged = staging.is_dir() and any(p.stat().st_size for p in staging.rglob("*"))
        return jobs == [JobState.SENDING] and staged

    with anyio.fail_after(TIMEOUT):
        while not await sending():
            await anyio.sleep(0.001)
    await h.aclose()  # returns: the send is cancelled, not waited for
    async with open_hierarchy(tmp_path) as again:
        status = await again.wait(pkg, timeout=TIMEOUT)
        assert [(s.state, s.version) for s in status] == [("Installed", 1)]
        # the second run went on from the staged bytes: it sent only the rest
        assert 0 < status[0].bytes_full < 1 << 20
