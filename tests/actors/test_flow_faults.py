"""Faults end to end: a send cut half way is retried and resumes from the staged bytes; a
hierarchy closed with jobs pending or in flight finishes them after it is opened again,
with no lost, duplicated or corrupt content."""

from __future__ import annotations

import os
from pathlib import Path

from actors import Hierarchy, Package
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    SITE,
    SYS,
    TIMEOUT,
    assert_extracts_identical,
    dp_library_root,
    filelib,
    install_probes,
    log_text,
    message_ids,
    open_hierarchy,
    staged_files,
    status_history,
    until,
    write_tree,
)

MIB = 1 << 20


class _Kill(Exception):
    """Leaves the hierarchy by an error: the bus stops its actors at once, without draining
    their mailboxes, as a killed process would (a normal exit lets the work finish first)."""


def _distinct(values: list[int]) -> list[int]:
    """Consecutive repeats folded: the states a status went through."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


async def test_cut_send_is_retried_and_resumes_from_staged_bytes(tmp_path: Path) -> None:
    big = os.urandom(4 * MIB)
    src = write_tree(tmp_path / "Big", {"app/big.bin": big, "z.txt": b"small\n"})
    total = len(big) + len(b"small\n")
    cut = 1536 * 1024  # inside the big file's second 983040-byte chunk
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        db = site.db
        await install_probes(db)
        pkg = await h.create_package("Big", src, site=SITE)
        link = site.links[DP1]
        link.inject_cut(after_bytes=cut, times=1)
        await h.distribute(pkg, [DP1, DP2])
        status = await h.wait(pkg, timeout=TIMEOUT)

        assert [(s.dp, s.state, s.version, s.last_message) for s in status] == [
            (DP1, "Installed", 1, 2330),
            (DP2, "Installed", 1, 2330),
        ]
        # 8203: failed, will retry; then the retry's 8200 / 8210 and DistMgr's 2330
        assert await message_ids(db, pkg.pkg_id, DP1) == [2357, 8203, 8200, 8210, 2330]
        assert await message_ids(db, pkg.pkg_id, DP2) == [2357, 8200, 8210, 2330]
        history = await status_history(db, pkg.pkg_id, DP1)
        assert _distinct([s for s, _ in history]) == [0, 4, 0, 3]  # 4 = retry
        assert {v for _, v in history} == {1}
        assert _distinct([s for s, _ in await status_history(db, pkg.pkg_id, DP2)]) == [0, 3]
        assert await db.distribution_jobs() == []

        # the retry went on from the staged bytes: nothing crossed the link twice
        assert link.cuts == 1
        assert total <= link.bytes_sent < total + cut < 2 * len(big)
        log = log_text(h, "PkgXferMgr.log")
        failed = log.index("Failed to send package")
        assert "Failure count = 1/100" in log[failed:]
        assert f"at position {cut}" in log[failed:]
        assert staged_files(h, DP1) == []
        library = site.dp_library(DP1)
        assert library is not None
        assert (await library.verify(f"{pkg.pkg_id}.1")).ok
        await assert_extracts_identical(h, pkg, [DP1, DP2], src, tmp_path / "out")


async def _assert_installed_once(h: Hierarchy, pkg: Package, dps: list[str], src: Path) -> None:
    """Installed everywhere with one copy of every file, each job's end reported once."""
    site = h.servers[SITE]
    db = site.db
    status = await h.wait(pkg, timeout=TIMEOUT)
    assert [(s.dp, s.state, s.version) for s in status] == [(dp, "Installed", 1) for dp in dps]
    manifest = site.library.manifest(f"{pkg.pkg_id}.1")
    for dp in dps:
        library = site.dp_library(dp)
        assert library is not None
        assert library.content_ids(pkg.pkg_id) == [f"{pkg.pkg_id}.1"]
        assert filelib(dp_library_root(h, dp)) == sorted(manifest.hashes())
        assert (await library.verify(f"{pkg.pkg_id}.1")).ok
        assert staged_files(h, dp) == []
        ids = await message_ids(db, pkg.pkg_id, dp)
        assert ids[0] == 2357, (dp, ids)
        assert ids[-1] == 2330, (dp, ids)
        assert ids.count(2330) == 1, (dp, ids)
    # a processing cut short by the close begins again (2300 again), but the version is
    # stored and the package processed once
    assert _distinct(await message_ids(db, pkg.pkg_id)) == [2300, 2376, 2301]
    assert await db.distribution_jobs() == []
    await assert_extracts_identical(h, pkg, dps, src, src.parent / "out")


async def test_restart_right_after_the_provider_calls(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "Pkg",
        {f"files/{i}.bin": os.urandom(MIB + i) for i in range(3)} | {"setup.cmd": b"go\r\n"},
    )
    dps = [DP1, DP2, SYS]
    try:
        async with open_hierarchy(tmp_path) as h:
            pkg = await h.create_package("Pkg", src, site=SITE)
            await h.distribute(pkg, dps)
            raise _Kill  # no drain: DistMgr and PkgXferMgr stop wherever they are
    except* _Kill:
        pass
    async with open_hierarchy(tmp_path) as h:
        await _assert_installed_once(h, pkg, dps, src)


async def test_restart_with_a_transfer_in_flight_and_a_job_waiting_to_retry(
    tmp_path: Path,
) -> None:
    big = os.urandom(3 * MIB)
    src = write_tree(tmp_path / "Pkg", {"big.bin": big, "small.txt": b"small\n"})
    total = len(big) + len(b"small\n")
    try:
        async with open_hierarchy(tmp_path) as h:
            site = h.servers[SITE]
            db = site.db
            await install_probes(db)
            pkg = await h.create_package("Pkg", src, site=SITE)
            await h.wait(pkg, timeout=TIMEOUT)
            # DP1: a slow link (a chunk takes ~50 ms of real time), so the kill lands
            # mid-send; DP2: its link is down, so its job fails and waits for its retry
            site.links[DP1].bandwidth = 2_000.0
            site.links[DP2].down = True
            await h.distribute(pkg, [DP1, DP2])
            staging = dp_library_root(h, DP1).parent / "SMS_DP$"

            async def in_flight() -> bool:
                staged = list(staging.glob("*.temp"))
                retrying = 4 in [s for s, _ in await status_history(db, pkg.pkg_id, DP2)]
                return retrying and bool(staged) and 0 < staged[0].stat().st_size < len(big)

            await until(in_flight)
            raise _Kill
    except* _Kill:
        pass
    async with open_hierarchy(tmp_path) as h:
        link = h.servers[SITE].links[DP1]
        await _assert_installed_once(h, pkg, [DP1, DP2], src)
        # DP1's send went on from what the first run had staged
        assert 0 < link.bytes_sent < total
        assert (await message_ids(h.servers[SITE].db, pkg.pkg_id, DP2))[:2] == [2357, 8203]
