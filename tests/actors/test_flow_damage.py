"""Poison inputs and damage (issue #6's items 4, 5, 6): one bad package or DP is that
package's or that DP's failure, with its reason, never the hierarchy's; damaged content is
noticed, reported and repaired by a redistribute."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors import Hierarchy, Package
from actors.config import load_hierarchy
from bus import ManualClock
from contentlib import ContentLibrary, HashMismatch, Manifest
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    HIERARCHY,
    SITE,
    SYS,
    TIMEOUT,
    assert_extracts_identical,
    dp_library_root,
    instant_links,
    message_ids,
    open_hierarchy,
    until,
    write_tree,
)


class _Kill(Exception):
    """Leaves the hierarchy without draining, as a killed process would."""


def _summary(status: list[Any]) -> list[tuple[str, str, int | None]]:
    return [(s.dp, s.state, s.last_message) for s in status]


# -- bad sources: the package fails with its reason; everything else goes on ------------


def _non_utf8_name(src: Path) -> str:
    with open(os.path.join(os.fsencode(src), b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1 name\n")
    return "UTF-8"


def _symlink_outside(src: Path) -> str:
    outside = src.parent / "secret.txt"
    outside.write_bytes(b"secret\n")
    (src / "link.txt").symlink_to(outside)
    return "link.txt"


def _fifo(src: Path) -> str:
    os.mkfifo(src / "pipe")
    return "pipe"


def _backslash(src: Path) -> str:
    (src / "a\\b.txt").write_bytes(b"x\n")
    return "backslash"


BAD_SOURCES: dict[str, Callable[[Path], str]] = {
    "non-utf8-name": _non_utf8_name,
    "symlink-outside": _symlink_outside,
    "fifo": _fifo,
    "backslash": _backslash,
}


@pytest.mark.parametrize("kind", sorted(BAD_SOURCES))
async def test_a_bad_source_fails_its_package_with_the_reason(tmp_path: Path, kind: str) -> None:
    bad = write_tree(tmp_path / "Bad", {"ok.txt": b"fine\n"})
    named = BAD_SOURCES[kind](bad)  # a word the reason must hold
    good = write_tree(tmp_path / "Good", {"ok.txt": b"fine\n"})
    async with open_hierarchy(tmp_path) as h:
        bad_pkg = await h.create_package("Bad", bad, site=SITE)
        good_pkg = await h.create_package("Good", good, site=SITE)
        await h.distribute(bad_pkg, [DP1, DP2])
        await h.distribute(good_pkg, [DP1])
        status = await h.wait(bad_pkg, timeout=TIMEOUT)
        assert _summary(status) == [(DP1, "Failed", 2302), (DP2, "Failed", 2302)]
        assert all(named in s.detail for s in status), status
        ids = await message_ids(h.servers[SITE].db, bad_pkg.pkg_id)
        assert ids[-2:] == [2306, 2302]
        good_status = await h.wait(good_pkg, timeout=TIMEOUT)
        assert [(s.state, s.version) for s in good_status] == [("Installed", 1)]


async def test_a_source_deleted_after_create_fails_the_package(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "Gone", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        paused = anyio.Event()
        snapshot = site.library.snapshot

        async def after_the_source_went(*args: Any, **kwargs: Any) -> Any:
            await paused.wait()
            return await snapshot(*args, **kwargs)

        site.library.snapshot = after_the_source_went  # type: ignore[method-assign]
        pkg = await h.create_package("Gone", src, site=SITE)
        await h.distribute(pkg, [DP1])
        for path in src.iterdir():
            path.unlink()
        src.rmdir()
        paused.set()
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert _summary(status) == [(DP1, "Failed", 2302)]
        assert str(src) in status[0].detail
        assert "does not exist" in status[0].detail


async def test_poison_packages_never_stop_the_hierarchy_and_stay_parked(tmp_path: Path) -> None:
    """More failures than the supervisor's restart limit (5 in 60 s), and again at the
    next open: each is its package's failure, the hierarchy keeps working."""
    bad = [write_tree(tmp_path / f"Bad{i}", {"a.txt": b"a\n"}) for i in range(8)]
    for src in bad:
        _non_utf8_name(src)
    good = write_tree(tmp_path / "Good", {"g.txt": b"good\n"})
    async with open_hierarchy(tmp_path) as h:
        pkgs = [await h.create_package(f"Bad{i}", src, site=SITE) for i, src in enumerate(bad)]
        for pkg in pkgs:
            await h.distribute(pkg, [DP1])
        for pkg in pkgs:
            assert [s.state for s in await h.wait(pkg, timeout=TIMEOUT)] == ["Failed"]
        counters = h.bus.counters(f"{SITE}/DistMgr")
        assert (counters.failed, counters.restarts) == (0, 0)
    async with open_hierarchy(tmp_path) as h:
        good_pkg = await h.create_package("Good", good, site=SITE)
        await h.distribute(good_pkg, [DP1])
        assert [s.state for s in await h.wait(good_pkg, timeout=TIMEOUT)] == ["Installed"]
        for pkg in pkgs:  # parked: not processed again until an admin asks
            assert [s.state for s in await h.wait(pkg, timeout=TIMEOUT)] == ["Failed"]
            assert (await message_ids(h.servers[SITE].db, pkg.pkg_id)).count(2302) == 1


# -- a DP that left the hierarchy file, a full disk --------------------------------------


def _without_dp(tmp_path: Path, dp: str) -> Path:
    """A copy of the default hierarchy file without one DP (and its link)."""
    text = HIERARCHY.read_text()
    blocks = re.split(r"\n(?=\[\[)", text)
    kept = [b for b in blocks if f'"{dp}"' not in b]
    out = tmp_path / "smaller.toml"
    out.write_text("\n".join(kept))
    return out


async def test_a_dp_removed_from_the_hierarchy_file_fails_its_jobs_only(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.bin": os.urandom(100_000)})
    try:
        async with open_hierarchy(tmp_path) as h:
            pkg = await h.create_package("App", src, site=SITE)
            await h.distribute(pkg, [DP1, SYS])
            raise _Kill
    except* _Kill:
        pass
    smaller = _without_dp(tmp_path, SYS)
    async with Hierarchy.open(smaller, root=tmp_path / "data", time_scale=0.0001) as h:
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert _summary(status) == [(DP1, "Installed", 2330), (SYS, "Failed", 8204)]
        assert "not in the hierarchy" in status[1].detail
        assert h.bus.counters(f"{SITE}/PkgXferMgr").failed == 0


async def test_a_full_disk_on_a_dp_is_retried_and_loses_nothing(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "App", {"a.bin": os.urandom(50_000), "b.txt": b"b\n"})
    clock = ManualClock()
    async with Hierarchy.open(HIERARCHY, root=tmp_path / "data", clock=clock) as h:
        site = h.servers[SITE]
        instant_links(h, SITE)  # only the retry delay waits for the clock
        library = site.dp_library(DP1)
        assert library is not None
        _FullDisk(library, times=3)
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await until(lambda: _state_is(h, pkg, "Retrying"))
        status = await h.content_status(pkg)
        assert "No space left on device" in status[0].detail

        async def retried_until_installed() -> bool:
            # each retry meets the full disk again until it has room
            await clock.advance(h.config.settings.distribution_retry_delay)
            return await _state_is(h, pkg, "Installed")

        await until(retried_until_installed)
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.state, s.version) for s in status] == [("Installed", 1)]
        assert (await message_ids(site.db, pkg.pkg_id, DP1)).count(8203) == 3
        counters = h.bus.counters(f"{DP1}/DPProvider")
        assert (counters.failed, counters.restarts) == (0, 0)
        await assert_extracts_identical(h, pkg, [DP1], src, tmp_path / "out")


async def _state_is(h: Hierarchy, pkg: Package, state: str) -> bool:
    return [s.state for s in await h.content_status(pkg)] == [state]


class _FullDisk:
    """The DP's disk says ENOSPC to the next ``times`` files stored in its library."""

    def __init__(self, library: ContentLibrary, times: int) -> None:
        self.times = times
        self._add = library.add_file_from_path
        library.add_file_from_path = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        if self.times:
            self.times -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        await self._add(*args, **kwargs)


# -- damage on a DP: validation finds it, redistribute repairs it -----------------------


async def _installed(tmp_path: Path, h: Hierarchy, files: dict[str, bytes]) -> Package:
    src = write_tree(tmp_path / "App", files)
    pkg = await h.create_package("App", src, site=SITE)
    await h.distribute(pkg, [DP1, DP2])
    await h.wait(pkg, timeout=TIMEOUT)
    return pkg


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_validation_finds_a_damaged_dp_file_and_redistribute_repairs_it(
    tmp_path: Path,
) -> None:
    files = {"app/big.bin": os.urandom(200_000), "readme.txt": b"read me\n"}
    async with open_hierarchy(tmp_path) as h:
        pkg = await _installed(tmp_path, h, files)
        library = h.servers[SITE].dp_library(DP1)
        assert library is not None
        files_ = library.manifest(f"{pkg.pkg_id}.1").files
        entry = next(f for f in files_ if f.path.endswith("big.bin"))
        _flip_a_byte(library.file_path(entry.sha256))

        with pytest.raises(HashMismatch, match=r"big\.bin"):
            await h.extract(pkg, DP1, tmp_path / "damaged")
        result = await h.validate(pkg, DP1)
        assert (result.version, result.corrupt, result.missing) == (1, ("app/big.bin",), ())
        status = {s.dp: s for s in await h.content_status(pkg)}
        assert (status[DP1].state, status[DP1].last_message) == ("Failed", 2383)
        assert "app/big.bin" in status[DP1].detail
        assert (status[DP2].state, status[DP2].last_message) == ("Installed", 2330)
        ok = await h.validate(pkg, DP2)
        assert ok.ok

        await h.redistribute(pkg, DP1)
        status2 = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.dp, s.state) for s in status2] == [(DP1, "Installed"), (DP2, "Installed")], (
            status2
        )
        assert (await h.validate(pkg, DP1)).ok
        ids = await message_ids(h.servers[SITE].db, pkg.pkg_id, DP1)
        # validation failed, the redistribute installed it again, validation passed
        assert ids[4:] == [2380, 2383, 2357, 8200, 8210, 2330, 2380, 2384], ids
        await assert_extracts_identical(h, pkg, [DP1, DP2], tmp_path / "App", tmp_path / "out")


async def test_a_tampered_dp_manifest_is_quarantined_reported_and_repaired(
    tmp_path: Path,
) -> None:
    files = {"a.bin": os.urandom(30_000), "b.bin": os.urandom(30_000)}
    async with open_hierarchy(tmp_path) as h:
        pkg = await _installed(tmp_path, h, files)
        root = dp_library_root(h, DP1)
    manifest_path = root / "DataLib" / f"{pkg.pkg_id}.1.json"
    manifest = msgspec.json.decode(manifest_path.read_bytes(), type=Manifest)
    dropped = manifest.files[0]
    tampered = msgspec.structs.replace(manifest, files=manifest.files[1:])
    manifest_path.write_bytes(msgspec.json.encode(tampered))
    stored = root / "FileLib" / dropped.sha256[:4] / dropped.sha256

    async with open_hierarchy(tmp_path) as h:
        assert stored.exists()  # never collected: a damaged manifest may reference it
        status = {s.dp: s for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert (status[DP1].state, status[DP1].last_message) == ("Failed", 2383)
        assert f"{pkg.pkg_id}.1" in status[DP1].detail
        assert status[DP2].state == "Installed"
        await h.redistribute(pkg, DP1)
        status2 = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.state, s.version) for s in status2] == [("Installed", 1), ("Installed", 1)]
        assert (await h.validate(pkg, DP1)).ok
        await assert_extracts_identical(h, pkg, [DP1, DP2], tmp_path / "App", tmp_path / "o")


# -- damage in the site's own library ---------------------------------------------------


async def test_a_damaged_site_file_is_read_again_from_a_matching_source(tmp_path: Path) -> None:
    files = {"big.bin": os.urandom(100_000), "small.txt": b"small\n"}
    src = write_tree(tmp_path / "App", files)
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        pkg = await h.create_package("App", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        entry = next(f for f in site.library.manifest(f"{pkg.pkg_id}.1").files if f.size > 1000)
        _flip_a_byte(site.library.file_path(entry.sha256))

        await h.distribute(pkg, [DP2])  # the source still holds those bytes: mended
        status = {s.dp: s for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[DP2].state == "Installed"
        assert await site.library.verify_file(entry.sha256) == "ok"
        await assert_extracts_identical(h, pkg, [DP1, DP2], src, tmp_path / "out")

        _flip_a_byte(site.library.file_path(entry.sha256))
        (src / "big.bin").write_bytes(os.urandom(100_000))  # and the source moved on
        await h.distribute(pkg, [SYS])
        status = {s.dp: s for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert (status[SYS].state, status[SYS].last_message) == ("Failed", 8204)
        assert "big.bin" in status[SYS].detail
        assert status[DP1].state == status[DP2].state == "Installed"


async def test_scheduled_validation_marks_damaged_content_failed(tmp_path: Path) -> None:
    config = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    day = 86_400.0
    config = msgspec.structs.replace(
        config, settings=msgspec.structs.replace(config.settings, content_validation_interval=day)
    )
    clock = ManualClock()
    async with Hierarchy.open(config, clock=clock) as h:
        site = h.servers[SITE]
        instant_links(h, SITE)
        pkg = await _installed(tmp_path, h, {"a.bin": os.urandom(20_000)})
        db = site.db
        await clock.advance(day)
        await until(lambda: _ids_end_with(h, pkg, DP2, [2380, 2384]))
        assert (await message_ids(db, pkg.pkg_id, DP1))[-2:] == [2380, 2384]

        library = site.dp_library(DP2)
        assert library is not None
        (entry,) = library.manifest(f"{pkg.pkg_id}.1").files
        library.file_path(entry.sha256).unlink()
        await clock.advance(day)
        await until(lambda: _ids_end_with(h, pkg, DP2, [2380, 2383]))
        status = {s.dp: s for s in await h.content_status(pkg)}
        assert (status[DP2].state, status[DP1].state) == ("Failed", "Installed")
        assert "a.bin (missing)" in status[DP2].detail


async def _ids_end_with(h: Hierarchy, pkg: Package, dp: str, tail: list[int]) -> bool:
    ids = await message_ids(h.servers[SITE].db, pkg.pkg_id, dp)
    return ids[-len(tail) :] == tail
