"""Races and bad state (issue #6's items 1, 2, 3, 8): an admin request that arrives while
DistMgr works is never overwritten, a late job never rolls a DP back, a lost site database
is refused and package IDs are never reused, and a cancelled admin call completes whole."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors import Hierarchy
from actors.errors import SiteDatabaseLost
from bus import ManualClock
from contentlib import ContentLibrary, SnapshotReport
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    HIERARCHY,
    SITE,
    TIMEOUT,
    assert_extracts_identical,
    dp_library_root,
    instant_links,
    message_ids,
    open_hierarchy,
    until,
    write_tree,
)


class _Paused:
    """A probe on a content library's ``snapshot``: the real snapshot runs only once the
    test lets it, so a request can be made while it is under way."""

    def __init__(self, library: ContentLibrary) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self._snapshot: Callable[..., Awaitable[SnapshotReport]] = library.snapshot
        library.snapshot = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> SnapshotReport:
        self.entered.set()
        await self.release.wait()
        return await self._snapshot(*args, **kwargs)


async def test_update_during_the_first_snapshot_is_not_lost(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"app.txt": b"version 1\n", "same.bin": b"s" * 5000})
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        paused = _Paused(site.library)
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await paused.entered.wait()
        (src / "app.txt").write_bytes(b"version 2\n")
        await h.update(pkg)  # Action 1 written while DistMgr snapshots for Action 2
        paused.release.set()
        status = await h.wait(pkg, timeout=TIMEOUT)
        row = await site.db.package(pkg.pkg_id)
        assert row is not None
        assert (row.stored_pkg_version, int(row.action)) == (2, 0)
        assert [(s.dp, s.state, s.version) for s in status] == [(DP1, "Installed", 2)]
        await assert_extracts_identical(h, pkg, [DP1], src, tmp_path / "out")


async def test_delete_during_the_first_snapshot_is_not_undone(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"app.txt": b"doomed\n"})
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        paused = _Paused(site.library)
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1, DP2])
        await paused.entered.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.delete, pkg)
            await until(lambda: _action(h, pkg.pkg_id, 3))
            paused.release.set()
        assert await site.db.package(pkg.pkg_id) is None
        assert site.library.content_ids(pkg.pkg_id) == []
        for dp in (DP1, DP2):
            library = site.dp_library(dp)
            assert library is not None
            assert library.content_ids(pkg.pkg_id) == []


async def _action(h: Hierarchy, pkg_id: str, action: int) -> bool:
    row = await h.servers[SITE].db.package(pkg_id)
    return row is not None and int(row.action) == action


async def test_a_late_retry_of_an_old_version_never_rolls_the_dp_back(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"big.bin": b"1" * 300_000, "v.txt": b"v1\n"})
    clock = ManualClock()
    async with Hierarchy.open(HIERARCHY, root=tmp_path / "data", clock=clock) as h:
        site = h.servers[SITE]
        db = site.db
        pkg = await h.create_package("App", src, site=SITE)
        instant_links(h, SITE)  # only the retry delay waits for the clock
        site.links[DP1].inject_cut(after_bytes=1000, times=1)
        await h.distribute(pkg, [DP1])
        await until(lambda: _state(h, pkg.pkg_id, "Retrying"))  # v1 waits for its retry
        (src / "v.txt").write_bytes(b"v2\n")
        await h.update(pkg)
        await until(lambda: _state(h, pkg.pkg_id, "Installed", version=2))
        # the v1 job's retry comes due after v2 is installed: it must end untouched
        await clock.advance(h.config.settings.distribution_retry_delay + 1)
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.dp, s.state, s.version) for s in status] == [(DP1, "Installed", 2)]
        library = site.dp_library(DP1)
        assert library is not None
        assert library.content_ids(pkg.pkg_id) == [f"{pkg.pkg_id}.2"]
        assert await db.distribution_jobs() == []
        assert (await message_ids(db, pkg.pkg_id, DP1)).count(2330) == 1  # v2's only
        await assert_extracts_identical(h, pkg, [DP1], src, tmp_path / "out")


async def _state(h: Hierarchy, pkg_id: str, state: str, *, version: int | None = None) -> bool:
    status = await h.content_status(pkg_id)
    return bool(status) and all(
        s.state == state and (version is None or s.version == version) for s in status
    )


async def test_a_lost_site_database_is_refused_naming_the_file(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        path = h.servers[SITE].db.path
    for empty in (False, True):
        _replace_database(path, b"" if empty else None)
        with pytest.raises(SiteDatabaseLost) as info:
            async with open_hierarchy(tmp_path):
                pass
        assert str(path) in str(info.value)
        assert pkg.pkg_id in str(info.value)
        assert _size(path) == (0 if empty else None)  # nothing was written


def _replace_database(path: Path, data: bytes | None) -> None:
    """Drop a closed site database (and its WAL files); write ``data`` in its place."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if data is not None:
        path.write_bytes(data)


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


async def test_package_ids_held_by_libraries_are_never_reused(tmp_path: Path) -> None:
    """A database restored from an older backup does not hand out an ID again whose
    content a library holds."""
    backup = tmp_path / "backup.db"
    async with open_hierarchy(tmp_path) as h:
        db_path = h.servers[SITE].db.path
        first = await h.create_package("First", write_tree(tmp_path / "1", {"a": b"1"}), site=SITE)
        await h.wait(first, timeout=TIMEOUT)
    shutil.copy(db_path, backup)  # (closed: the WAL is checkpointed into the file)
    async with open_hierarchy(tmp_path) as h:
        src = write_tree(tmp_path / "2", {"b": b"2"})
        second = await h.create_package("Second", src, site=SITE)
        await h.distribute(second, [DP1])
        await h.wait(second, timeout=TIMEOUT)
    _replace_database(db_path, backup.read_bytes())
    async with open_hierarchy(tmp_path) as h:
        src = write_tree(tmp_path / "3", {"c": b"3"})
        third = await h.create_package("Third", src, site=SITE)
        assert third.pkg_id not in (first.pkg_id, second.pkg_id)
        assert int(third.pkg_id[3:], 16) > int(second.pkg_id[3:], 16)
        await h.distribute(third, [DP1])
        status = await h.wait(third, timeout=TIMEOUT)
        assert [(s.state, s.version) for s in status] == [("Installed", 1)]
    library = ContentLibrary(dp_library_root(h, DP1))
    assert library.content_ids(second.pkg_id) == [f"{second.pkg_id}.1"]


async def test_cancelled_admin_calls_complete_whole_or_not_at_all(tmp_path: Path) -> None:
    """In a scope that is already cancelled, a call has no effect or completes and returns
    its result: no package exists whose ID its caller did not get, no DP is targeted
    whose distribute call did not return."""
    created: list[str] = []
    distributed: list[str] = []
    async with open_hierarchy(tmp_path) as h:
        for i in range(12):
            src = write_tree(tmp_path / f"P{i}", {"f.txt": f"{i}\n".encode()})
            with anyio.CancelScope() as scope:
                scope.cancel()
                pkg = await h.create_package(f"P{i}", src, site=SITE)
                created.append(pkg.pkg_id)
                await h.distribute(pkg, [DP1])
                distributed.append(pkg.pkg_id)
        db = h.servers[SITE].db
        packages = [p.pkg_id for p in await db.packages()]
        assert len(created) == 12
        assert sorted(packages) == sorted(created)
        targeted = [p for p in packages if await db.pkg_servers(p)]
        assert sorted(targeted) == sorted(distributed)
        for pkg_id in packages:
            await h.wait(pkg_id, timeout=TIMEOUT)
