"""Transfers end to end: the bytes each DP's link carried (whole files and deltas apart),
the progress events a send publishes, an administrator's cancel of a send in flight (and of
jobs waiting), a removal that stops a send, and a send cut short by closing the hierarchy.

A send is held in flight with a ManualClock and a link with a bandwidth: its first chunk is
written, then the link's wait never ends until the test advances the clock. Nothing here
asserts a timing; a cancel that did not stop the send would leave it stuck, never done.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio

from actors import Hierarchy, Package
from actors.site import CANCELLED_REASON
from actors.site._sending import Send as _Send
from actors.site.messages import TRANSFER_PROGRESS_TOPIC, TransferProgress
from actors.sitedb import DistributionJobRow, DistributionPointRow
from actors.status import ATTR_DP_NAL_PATH
from bus import ManualClock, Subscription
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    HIERARCHY,
    SITE,
    TIMEOUT,
    assert_extracts_identical,
    dp_library_root,
    filelib,
    install_probes,
    message_ids,
    messages,
    nal,
    open_hierarchy,
    staged_files,
    status_history,
    until,
    write_tree,
)

MIB = 1 << 20


async def _held(h: Hierarchy, pkg: Package, dp: str) -> list[str]:
    library = h.servers[SITE].dp_library(dp)
    assert library is not None
    return library.content_ids(pkg.pkg_id)


def _paused(
    tmp_path: Path, clock: ManualClock, **options: float
) -> AbstractAsyncContextManager[Hierarchy]:
    """The default hierarchy on a clock that moves only when the test advances it."""
    return Hierarchy.open(HIERARCHY, root=tmp_path / "data", clock=clock, **options)


async def _distribute_until_in_flight(
    h: Hierarchy, clock: ManualClock, pkg: Package, dp: str, data: bytes
) -> None:
    """Distribute over a link that waits for the clock: returns with the file of ``data``
    part sent, and the send waiting for its next chunk."""
    _slow(h, dp)
    await h.distribute(pkg, [dp])
    await _until_in_flight(h, clock, dp, data)


async def _until_in_flight(h: Hierarchy, clock: ManualClock, dp: str, data: bytes) -> None:
    """Until the file of ``data`` is part sent; the clock moves on a few microseconds at a
    time meanwhile, so smaller files sent before it get through (a chunk of ``data`` takes
    about a second)."""

    async def in_flight() -> bool:
        await clock.advance(1e-5)
        return await _in_flight(h, dp, data)

    await until(in_flight)


def _slow(h: Hierarchy, dp: str) -> None:
    """A link whose every chunk waits for a ManualClock that the test does not advance."""
    link = h.servers[SITE].links[dp]
    link.latency, link.bandwidth = 0.0, 1_000_000.0


def _fast(h: Hierarchy, dp: str) -> None:
    link = h.servers[SITE].links[dp]
    link.latency, link.bandwidth = 0.0, None


async def _in_flight(h: Hierarchy, dp: str, data: bytes) -> bool:
    """The file of ``data`` is part staged on the DP: its send is between two chunks."""
    staging = dp_library_root(h, dp).parent / "SMS_DP$"
    sha = hashlib.sha256(data).hexdigest().upper()
    staged = [p for p in staging.glob("*.temp") if p.name.upper().startswith(sha)]
    return any(0 < p.stat().st_size < len(data) for p in staged)


async def _jobs(h: Hierarchy, pkg: Package) -> list[int]:
    return [
        j.job_id for j in await h.servers[SITE].db.distribution_jobs() if j.pkg_id == pkg.pkg_id
    ]


async def _state(h: Hierarchy, pkg: Package, dp: str) -> str:
    return next(s.state for s in await h.content_status(pkg) if s.dp == dp)


# -- bytes per DP --------------------------------------------------------------------------


async def test_bytes_per_dp_count_whole_files_and_deltas(tmp_path: Path) -> None:
    big = os.urandom(400_000)
    files = {"big.bin": big, "same.txt": b"unchanged\n", "dup/same.txt": b"unchanged\n"}
    src = write_tree(tmp_path / "App", files)
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1, DP2])
        status = await h.wait(pkg, timeout=TIMEOUT)
        whole = len(big) + len(b"unchanged\n")  # a file held twice crosses once
        assert [(s.dp, s.version, s.bytes_full, s.bytes_delta) for s in status] == [
            (DP1, 1, whole, 0),
            (DP2, 1, whole, 0),
        ]

        # v2: a few bytes of the big file change (a delta), one new file (whole), one not
        edited = big[:200_000] + b"EDIT" + big[200_004:]
        new = b"new file\n" * 10
        write_tree(src, {"big.bin": edited, "new.txt": new})
        await h.update(pkg)
        status = await h.wait(pkg, timeout=TIMEOUT)
        for s in status:
            assert (s.state, s.version, s.bytes_full) == ("Installed", 2, len(new)), s
            assert 0 < s.bytes_delta < len(edited), s
        rows = await h.servers[SITE].db.transfer_bytes(pkg.pkg_id)
        assert [(r.nal_path, r.version) for r in rows] == [(nal(DP1), 2), (nal(DP2), 2)]

        # the bytes go with the package from the DP ...
        await h.remove(pkg, [DP2])
        await h.wait(pkg, timeout=TIMEOUT)
        rows = await h.servers[SITE].db.transfer_bytes(pkg.pkg_id)
        assert [r.nal_path for r in rows] == [nal(DP1)]
        # ... and from the site
        await h.delete(pkg, timeout=TIMEOUT)
        assert await h.servers[SITE].db.transfer_bytes(pkg.pkg_id) == []


async def test_a_redistribute_counts_every_file_again(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.bin": os.urandom(50_000), "b.txt": b"b\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        await h.redistribute(pkg, DP1)
        (status,) = await h.wait(pkg, timeout=TIMEOUT)
        assert (status.bytes_full, status.bytes_delta) == (50_002, 0)


# -- progress events -----------------------------------------------------------------------


async def test_progress_events_grow_to_the_total_per_dp(tmp_path: Path) -> None:
    big = os.urandom(3 * MIB)
    src = write_tree(tmp_path / "App", {"big.bin": big, "small.txt": b"small\n"})
    total = len(big) + len(b"small\n")
    async with open_hierarchy(tmp_path) as h:
        # DP1 in 983040-byte chunks (each one clock second apart: every chunk reports);
        # DP2 unthrottled, one chunk a file
        h.servers[SITE].links[DP1].bandwidth = 1_000_000.0
        async with h.bus.subscribe(TRANSFER_PROGRESS_TOPIC, buffer=10_000) as sub:
            pkg = await h.create_package("App", src, site=SITE)
            await h.distribute(pkg, [DP1, DP2])
            await h.wait(pkg, timeout=TIMEOUT)
            events = _drain(sub)
        per_dp = _by_dp(events)
        assert sorted(per_dp) == [DP1, DP2]
        for dp, seen in per_dp.items():
            sent = [e.bytes_sent for e in seen]
            assert sent == sorted(sent), dp
            assert all(e.bytes_sent <= e.bytes_total for e in seen), dp
            assert (seen[-1].bytes_sent, seen[-1].bytes_total) == (total, total), dp
            assert {(e.pkg_id, e.version, e.delta) for e in seen} == {(pkg.pkg_id, 1, False)}
        assert len(per_dp[DP1]) >= 4  # a growing bar, not one event at the end

        # an update that goes as a delta reports it, and its bar ends at the delta's size
        edited = big[:MIB] + b"EDIT" + big[MIB + 4 :]
        write_tree(src, {"big.bin": edited})
        async with h.bus.subscribe(TRANSFER_PROGRESS_TOPIC, buffer=10_000) as sub:
            await h.update(pkg)
            status = await h.wait(pkg, timeout=TIMEOUT)
            per_dp = _by_dp(_drain(sub))
        for s in status:
            last = per_dp[s.dp][-1]
            assert (last.version, last.delta) == (2, True)
            assert last.bytes_sent == last.bytes_total == s.bytes_delta + s.bytes_full


async def test_progress_is_rate_limited_per_job() -> None:
    """The first chunk, the last, and in between at most one event per interval of the
    (here hand-driven) clock; bytes that an earlier try left staged count as sent."""
    now = [0.0]
    events: list[TransferProgress] = []

    async def publish(event: TransferProgress) -> None:
        events.append(event)

    job = DistributionJobRow(7, 1, "PS100001", 2, 0, 1, None, "", None, 0, None)
    dp = DistributionPointRow(1, nal(DP1), DP1, SITE, False, False, None)
    send = _Send(job, dp, publish, lambda: now[0], 0.5)
    send.plan(1000)  # two files: 600 and 400 bytes
    chunks = [(0.0, 100, 300, False), (0.2, 100, 0, False), (0.4, 100, 0, False)]
    for when, crossed, staged, delta in chunks:  # the first resumes after 300 staged bytes
        now[0] = when
        send.count(crossed, staged, delta=delta)
        await send.report(delta=delta)
    send.plan(-100)  # the second goes as a delta of 300 bytes
    for when, crossed, staged, delta in [(0.6, 150, 0, True), (0.7, 150, 0, True)]:
        now[0] = when
        send.count(crossed, staged, delta=delta)
        await send.report(delta=delta)
    assert [(e.bytes_sent, e.bytes_total, e.delta) for e in events] == [
        (400, 1000, False),  # the first chunk
        (750, 900, True),  # 0.6 clock s after the first
        (900, 900, True),  # the last
    ]
    assert (send.bytes_full, send.bytes_delta) == (300, 300)  # what crossed the link


def _drain(sub: Subscription) -> list[TransferProgress]:
    """Every event buffered so far (all of a job's are, once its DP is Installed)."""
    out: list[TransferProgress] = []
    while True:
        try:
            event = sub.get_nowait()
        except LookupError:
            return out
        assert isinstance(event, TransferProgress)
        out.append(event)


def _by_dp(events: list[TransferProgress]) -> dict[str, list[TransferProgress]]:
    per_dp: dict[str, list[TransferProgress]] = {}
    for e in events:
        per_dp.setdefault(e.dp, []).append(e)
    return per_dp


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_stops_a_send_in_flight_and_leaves_the_dp_as_it_was(tmp_path: Path) -> None:
    big = os.urandom(3 * MIB)
    # a.txt is added to the DP's library before big.bin is sent, and cancelled mid-way
    src = write_tree(tmp_path / "App", {"a.txt": b"small\n", "big.bin": big})
    clock = ManualClock()
    async with _paused(tmp_path, clock) as h:
        site = h.servers[SITE]
        await install_probes(site.db)
        pkg = await h.create_package("App", src, site=SITE)
        before = filelib(dp_library_root(h, DP1))
        await _distribute_until_in_flight(h, clock, pkg, DP1, big)
        assert len(filelib(dp_library_root(h, DP1))) == len(before) + 1  # a.txt is there

        assert await h.cancel(pkg, DP1) is True
        # state, not time: the clock never moved, so the send did not finish by itself
        assert await _held(h, pkg, DP1) == []
        assert staged_files(h, DP1) == []
        assert filelib(dp_library_root(h, DP1)) == before  # a.txt went again
        assert await _jobs(h, pkg) == []
        (status,) = await h.wait(pkg, timeout=TIMEOUT)  # final at once
        assert (status.state, status.version, status.last_message) == ("Failed", 0, 8204)
        assert CANCELLED_REASON in status.detail
        history = await status_history(site.db, pkg.pkg_id, DP1)
        assert history[-1] == (5, 1)
        assert 3 not in [s for s, _ in history]
        (cancelled,) = [m for m in await messages(site.db) if m.message_id == 8204]
        assert cancelled.attributes[ATTR_DP_NAL_PATH] == nal(DP1)
        assert cancelled.strings[3] == CANCELLED_REASON
        assert await h.cancel(pkg, DP1) is False  # nothing left to cancel

        # the clock moving on wakes nothing of the cancelled send
        await clock.advance(h.config.settings.distribution_retry_delay + 10)
        assert await _held(h, pkg, DP1) == []
        assert 8210 not in await message_ids(site.db, pkg.pkg_id, DP1)

        # a later redistribute sends it whole
        _fast(h, DP1)
        await h.redistribute(pkg, DP1)
        (status,) = await h.wait(pkg, timeout=TIMEOUT)
        assert (status.state, status.version) == ("Installed", 1)
        assert status.bytes_full == len(big) + len(b"small\n")
        assert len(filelib(dp_library_root(h, DP1))) == len(before) + 2
        await assert_extracts_identical(h, pkg, [DP1], src, tmp_path / "out")


async def test_cancel_of_an_update_keeps_the_older_version(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"v.txt": b"v1\n"})
    clock = ManualClock()
    async with _paused(tmp_path, clock) as h:
        pkg = await h.create_package("App", src, site=SITE)
        _fast(h, DP1)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)

        big = os.urandom(3 * MIB)
        write_tree(src, {"big.bin": big})
        _slow(h, DP1)
        await h.update(pkg)
        await _until_in_flight(h, clock, DP1, big)
        assert await h.cancel(pkg, DP1) is True
        (status,) = await h.wait(pkg, timeout=TIMEOUT)
        # the DP still serves v1; Failed says v2 did not get there (and why)
        assert (status.state, status.version) == ("Failed", 1)
        assert CANCELLED_REASON in status.detail
        assert await _held(h, pkg, DP1) == [f"{pkg.pkg_id}.1"]
        assert staged_files(h, DP1) == []
        assert await _jobs(h, pkg) == []

        # a later update brings the DP up to date
        _fast(h, DP1)
        write_tree(src, {"v.txt": b"v3\n"})
        await h.update(pkg)
        (status,) = await h.wait(pkg, timeout=TIMEOUT)
        assert (status.state, status.version) == ("Installed", 3)
        await assert_extracts_identical(h, pkg, [DP1], src, tmp_path / "out")


async def test_cancel_ends_a_job_waiting_for_its_retry(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    clock = ManualClock()
    async with _paused(tmp_path, clock) as h:
        pkg = await h.create_package("App", src, site=SITE)
        link = h.servers[SITE].links[DP1]
        link.down = True
        await h.distribute(pkg, [DP1])
        await until(lambda: _is(h, pkg, DP1, "Retrying"))
        assert await h.cancel(pkg, DP1) is True
        (status,) = await h.wait(pkg, timeout=TIMEOUT)
        assert (status.state, status.last_message) == ("Failed", 8204)
        assert await _jobs(h, pkg) == []
        # its retry comes due: nothing runs
        link.down = False
        await clock.advance(h.config.settings.distribution_retry_delay + 10)
        assert await _held(h, pkg, DP1) == []
        assert await _state(h, pkg, DP1) == "Failed"


async def test_a_cancel_at_any_point_of_a_send_leaves_a_final_consistent_dp(
    tmp_path: Path,
) -> None:
    """Cancel before the job exists, after 1, 2, ... progress events, and once the send is
    done: whatever the cancel met, the DP ends final, holding the whole version or none of
    it, with nothing staged and no job left."""
    async with open_hierarchy(tmp_path) as h:
        h.servers[SITE].links[DP1].bandwidth = 1_000_000.0  # 4 chunks, 1 clock s each
        for after in range(6):  # (files of their own: the DP never holds them already)
            files = {"big.bin": os.urandom(3 * MIB), "n.txt": os.urandom(10)}
            src = write_tree(tmp_path / f"App{after}", files)
            pkg = await h.create_package(f"App{after}", src, site=SITE)
            await h.wait(pkg, timeout=TIMEOUT)
            async with h.bus.subscribe(TRANSFER_PROGRESS_TOPIC, buffer=10_000) as sub:
                await h.distribute(pkg, [DP1])
                for _ in range(after):
                    with anyio.move_on_after(TIMEOUT):
                        await sub.get()  # (fewer than ``after`` events: cancel at the end)
                cancelled = await h.cancel(pkg, DP1)
            (status,) = await h.wait(pkg, timeout=TIMEOUT)
            held = await _held(h, pkg, DP1)
            if cancelled:
                assert (status.state, held) == ("Failed", []), after
            else:  # too early (no job yet: it runs) or too late (already adding it)
                assert (status.state, held) == ("Installed", [f"{pkg.pkg_id}.1"]), after
            assert staged_files(h, DP1) == []
            assert await _jobs(h, pkg) == []


async def test_cancel_with_nothing_to_cancel_answers_false(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        assert await h.cancel(pkg, DP1) is False
        assert await h.cancel(pkg, DP2) is False  # never targeted
        (status,) = await h.content_status(pkg)
        assert (status.state, status.last_message) == ("Installed", 2330)


async def _is(h: Hierarchy, pkg: Package, dp: str, state: str) -> bool:
    return await _state(h, pkg, dp) == state


# -- removal during a send -----------------------------------------------------------------


async def test_remove_stops_the_send_in_flight_first(tmp_path: Path) -> None:
    big = os.urandom(3 * MIB)
    src = write_tree(tmp_path / "App", {"big.bin": big})
    clock = ManualClock()
    async with _paused(tmp_path, clock) as h:
        site = h.servers[SITE]
        await install_probes(site.db)
        pkg = await h.create_package("App", src, site=SITE)
        await _distribute_until_in_flight(h, clock, pkg, DP1, big)

        await h.remove(pkg, [DP1])
        # the clock never moves: the removal could end only by stopping the send
        await until(lambda: _is(h, pkg, DP1, "Removed"))
        assert await _held(h, pkg, DP1) == []
        assert staged_files(h, DP1) == []
        assert await _jobs(h, pkg) == []
        assert 3 not in [s for s, _ in await status_history(site.db, pkg.pkg_id, DP1)]
        ids = await message_ids(site.db, pkg.pkg_id, DP1)
        assert ids[-1] == 2332
        assert not {8210, 2330} & set(ids)
        assert site.links[DP1].bytes_sent < len(big)


# -- shutdown ------------------------------------------------------------------------------


async def test_a_send_cut_short_by_close_resumes_at_the_next_open(tmp_path: Path) -> None:
    big = os.urandom(3 * MIB)
    src = write_tree(tmp_path / "App", {"big.bin": big})
    clock = ManualClock()
    async with _paused(tmp_path, clock, shutdown_timeout=0.05) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await _distribute_until_in_flight(h, clock, pkg, DP1, big)
        db_path = h.servers[SITE].db.path
    # closed while the send waited: cancelled by the shutdown, not by an administrator
    with sqlite3.connect(db_path) as conn:
        jobs = conn.execute("SELECT PkgID FROM DistributionJobs").fetchall()
        ids = [r[0] for r in conn.execute("SELECT MessageID FROM StatusMessages")]
    conn.close()
    assert jobs == [(pkg.pkg_id,)]
    assert not {8203, 8204} & set(ids)
    async with open_hierarchy(tmp_path) as h:
        (status,) = await h.wait(pkg, timeout=TIMEOUT)
        assert (status.state, status.version) == ("Installed", 1)
        assert 0 < status.bytes_full <= len(big)  # this run's bytes (a kill loses the count)
        await assert_extracts_identical(h, pkg, [DP1], src, tmp_path / "out")
