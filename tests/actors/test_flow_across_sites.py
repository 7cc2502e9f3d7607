"""Across sites, the sender's order and the scheduler's status: sends taken by package
priority within the sending capacity, the send request's status line repeated while the
send runs, and the priority kept when a site forwards a package one hop down. On a
``ManualClock``: what happens in between is ordered by the clock alone."""

from __future__ import annotations

import random
import re
from pathlib import Path

import msgspec

from actors import Hierarchy, addresses
from actors.config import HierarchyConfig, load_hierarchy
from actors.site.messages import MiniJobCreated
from actors.sitedb import ops
from bus import ManualClock
from tests.actors.flow_helpers import (
    HIERARCHY,
    TIME_SCALE,
    TIMEOUT,
    advance_until,
    site_log,
    until,
    write_tree,
)

PS1DP1 = "PS1DP1.CONTOSO.COM"
SS1DP1 = "SS1DP1.CONTOSO.COM"
HIGH, MEDIUM, LOW = 1, 2, 3  # SMSPackages.Priority


def _config(tmp_path: Path, **settings: object) -> HierarchyConfig:
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    return msgspec.structs.replace(cfg, settings=msgspec.structs.replace(cfg.settings, **settings))


def _random(n: int) -> bytes:
    return random.Random(n).randbytes(n)


async def test_sends_are_taken_by_package_priority_within_the_capacity(tmp_path: Path) -> None:
    """One sending thread per site: while a first send holds it, a low, a high and a
    medium priority package queue (in that order); they go high, medium, low. The high one
    goes to SS1 through PS1, which forwards it with its priority."""
    clock = ManualClock()
    cfg = _config(tmp_path, sending_threads_per_site=1, sending_threads_total=2)
    trees = {
        name: write_tree(tmp_path / name, {f"{name}.bin": _random(size)})
        for name, size in (("first", 300_000), ("low", 1000), ("high", 1001), ("medium", 1002))
    }
    async with Hierarchy.open(cfg, clock=clock) as h:
        cs1 = h.servers["CS1"]
        sender = cs1.sender
        assert sender is not None
        ids = {}
        for name, priority in (("first", MEDIUM), ("low", LOW), ("high", HIGH), ("medium", MEDIUM)):
            ids[name] = await cs1.provider.create_package(name, trees[name], priority=priority)
        # the first send takes the thread and stays on the link: the clock stands still
        await h.distribute(ids["first"], [PS1DP1])
        capacity = sender.capacity

        async def holding() -> bool:
            return capacity.used("PS1") == 1

        await until(holding)
        for name in ("low", "high", "medium"):
            queued = capacity.waiting + 1
            await h.distribute(ids[name], [SS1DP1 if name == "high" else PS1DP1])

            async def waiting(n: int = queued) -> bool:
                return capacity.waiting == n

            await until(waiting)
        assert capacity.used("PS1") == 1

        async def sent() -> bool:
            return site_log(h, "CS1", "sender.log").count("Sending completed successfully") == 4

        await advance_until(clock, sent, step=0.01)
        finished = re.findall(
            r"Finished sending SWD package (\w+) version 1 to site PS1",
            site_log(h, "CS1", "sender.log"),
        )
        by_id = {v: k for k, v in ids.items()}
        assert [by_id[p] for p in finished] == ["first", "high", "medium", "low"]
        assert (sender.max_active_per_site, sender.max_active_total) == (1, 1)
        sender_log = site_log(h, "CS1", "sender.log")
        assert (
            sender_log.count("Checking for site-specific sending capacity.  Used 0 out of 1.~") == 1
        )
        assert (
            sender_log.count("Checking for site-specific sending capacity.  Used 1 out of 1.~") == 3
        )
        sched = site_log(h, "CS1", "sched.log")
        for name in ("low", "high", "medium"):
            assert f"Package ID = {ids[name]}]~" in sched
        assert "Destination site:  PS1, Preferred Address: *, Priority: 1" in sched
        assert "Destination site:  PS1, Preferred Address: *, Priority: 3" in sched

        # PS1 stores the high one and forwards it to SS1 with its priority (once DRS has
        # brought the package's row there: the despooler retries until then)
        async def forwarded() -> bool:
            return "Destination site:  SS1, Preferred Address: *, Priority: 1" in site_log(
                h, "PS1", "sched.log"
            )

        await advance_until(clock, forwarded, step=20.0)


async def test_the_send_request_status_is_logged_while_the_send_runs(tmp_path: Path) -> None:
    """sched.log repeats "Send Request ... State ... Total size ... Remaining" every
    scheduler_poll_interval while a send crosses a slow link, the remaining bytes going
    down, as the reference's scheduler refreshes its send request list."""
    clock = ManualClock()
    src = write_tree(tmp_path / "src", {"r.bin": _random(800_000)})
    async with Hierarchy.open(_config(tmp_path), clock=clock) as h:
        link = h.servers["CS1"].site_link("PS1")
        link.bandwidth = 2_000.0  # bytes per clock second: a 256 KiB chunk takes 131 s
        pkg = await h.create_package("Slow", src, site="CS1")
        await h.distribute(pkg, [PS1DP1])

        async def sent() -> bool:
            return "Send request has successfully completed." in site_log(h, "CS1", "sched.log")

        await advance_until(clock, sent, step=10.0)
        lines = re.findall(
            r"Send Request (\w+) JobID: \w+ DestSite: PS1 FinalSite:  State: (\w+) Status:"
            r" Action: None Total size: (\d+)k Remaining: (\d+)k Heartbeat: \d\d:\d\d"
            r" Start: \d\d:\d\d Finish: \d\d:\d\d Retry: SWD PkgID: (\w+) SWD Pkg Version: 1",
            site_log(h, "CS1", "sched.log"),
        )
        assert {(request, pkg_id) for request, *_, pkg_id in lines} == {(lines[0][0], pkg.pkg_id)}
        assert lines[0][1] == "Pending"  # when the request is created
        total = int(lines[0][2])
        assert total >= 780  # about 800,000 bytes: random data does not compress
        remaining = [int(r) for _, state, _, r, _ in lines[1:] if state == "Active"]
        assert len(set(remaining)) >= 2, lines
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[0] <= total
        assert remaining[-1] < remaining[0]


async def test_a_mini_job_whose_package_file_is_gone_is_dropped_not_crash_looped(
    tmp_path: Path,
) -> None:
    """A mini-job naming a package file that no longer exists (deleted by hand, a disk
    restored without it) is dropped with an error line; the scheduler keeps working, and a
    later send of that version to that site gets a mini-job and a package file anew."""
    src = write_tree(tmp_path / "src", {"a.bin": _random(5000)})
    async with Hierarchy.open(HIERARCHY, root=tmp_path / "data", time_scale=TIME_SCALE) as h:
        cs1 = h.servers["CS1"]
        pkg = await h.create_package("Gone", src, site="CS1")
        await h.wait(pkg, timeout=TIMEOUT)
        gone = str(tmp_path / "nowhere" / f"{pkg.pkg_id}.PCK.1")
        job_id = await cs1.db.write(
            lambda conn: ops.insert_minijob(
                conn,
                pkg_id=pkg.pkg_id,
                version=1,
                dest_site="PS1",
                final_site="PS1",
                transfer_root=gone,
                priority=MEDIUM,
                size=5000,
                now="",
            )
        )
        assert job_id is not None
        await h.bus.send(addresses.scheduler("CS1"), MiniJobCreated(job_id))

        async def dropped() -> bool:
            return await cs1.db.minijob_for(pkg.pkg_id, 1, "PS1") is None

        await until(dropped)
        assert await cs1.db.package_file_refs(gone) == 0
        line = rf"Package file .*{pkg.pkg_id}\.PCK\.1 of job .* the job is dropped"
        assert re.search(line, site_log(h, "CS1", "sched.log"))
        await h.distribute(pkg, [PS1DP1])  # the scheduler still runs: a new mini-job, a new PCK
        assert [(s.dp, s.state) for s in await h.wait(pkg, timeout=TIMEOUT)] == [
            (PS1DP1, "Installed")
        ]
