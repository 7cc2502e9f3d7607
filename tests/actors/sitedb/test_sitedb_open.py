"""Opening a site database: damaged files are refused naming the file, read-only opens never
write, and reseeding with a changed hierarchy keeps every DP's DPID."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import msgspec
import pytest

from actors.config import DistributionPoint, HierarchyConfig, load_hierarchy, nal_path
from actors.errors import SiteDatabaseError
from actors.sitedb import SCHEMA_VERSION, SiteDatabase

ROOT = Path(__file__).resolve().parents[3]


class _Stamp(msgspec.Struct, frozen=True):
    """A file's bytes and modification time: what "nothing was written" compares."""

    data: bytes
    mtime_ns: int


def _stamp(path: Path) -> _Stamp:
    return _Stamp(path.read_bytes(), path.stat().st_mtime_ns)


def _config(tmp_path: Path) -> HierarchyConfig:
    return load_hierarchy(ROOT / "hierarchy.toml", root=tmp_path / "data")


async def _new_database(path: Path, rows: int = 0) -> None:
    """A real site database, with ``rows`` status messages so it spans many pages."""
    async with SiteDatabase.open(path) as db:
        await db.executemany(
            "INSERT INTO StatusMessages (MessageID, Severity, Component, SiteCode, MachineName,"
            " Time, InsStrings) VALUES (?, 'I', 'SMS_DISTRIBUTION_MANAGER', 'PS1', ?, '', '[]')",
            [(2300, "x" * 200) for _ in range(rows)],
        )


def _set_schema_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO SchemaVersion VALUES (?, '')", (version,))
    conn.close()


async def _refused(path: Path, *, read_only: bool) -> SiteDatabaseError:
    """The error opening ``path`` raises: a SiteDatabaseError itself, not in a group."""
    with pytest.raises(SiteDatabaseError) as info:
        async with SiteDatabase.open(path, read_only=read_only):
            pass
    assert type(info.value) is SiteDatabaseError
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


# -- damaged files ---------------------------------------------------------------------


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
async def test_garbage_bytes_are_refused_naming_the_file(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "site.db"
    path.write_bytes(os.urandom(8192))
    before = _stamp(path)
    err = await _refused(path, read_only=read_only)
    assert "not a SQLite database" in err.problem
    assert isinstance(err.__cause__, sqlite3.DatabaseError)
    assert _stamp(path) == before


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
async def test_a_truncated_database_is_refused_as_damaged(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "site.db"
    await _new_database(path, rows=2000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = _stamp(path)
    err = await _refused(path, read_only=read_only)
    assert "damaged" in err.problem
    assert isinstance(err.__cause__, sqlite3.DatabaseError)
    assert _stamp(path) == before


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
async def test_a_folder_is_refused(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "site.db"
    path.mkdir()
    err = await _refused(path, read_only=read_only)
    assert "is a folder" in err.problem
    assert list(path.iterdir()) == []


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
async def test_a_newer_schema_is_refused(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "site.db"
    await _new_database(path)
    _set_schema_version(path, SCHEMA_VERSION + 1)
    before = _stamp(path)
    err = await _refused(path, read_only=read_only)
    assert f"schema version {SCHEMA_VERSION + 1} is newer" in err.problem
    assert _stamp(path) == before


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE Mine (x)")
    conn.close()
    before = _stamp(path)
    err = await _refused(path, read_only=False)
    assert "is not a site database" in err.problem
    assert _stamp(path) == before


# -- read-only -------------------------------------------------------------------------


async def test_read_only_never_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "site.db"
    err = await _refused(path, read_only=True)
    assert "does not exist" in err.problem
    assert not (tmp_path / "sub").exists()


async def test_read_only_refuses_an_empty_file_and_leaves_it_empty(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    path.touch()
    before = _stamp(path)
    err = await _refused(path, read_only=True)
    assert "empty (0 bytes)" in err.problem
    assert _stamp(path) == before


async def test_read_only_refuses_a_database_without_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 7")  # a valid SQLite file with no tables
    conn.close()
    err = await _refused(path, read_only=True)
    assert "holds no site database schema" in err.problem


async def test_read_only_refuses_an_older_schema_it_cannot_migrate(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    await _new_database(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM SchemaVersion WHERE Version = ?", (SCHEMA_VERSION,))
    conn.close()
    before = _stamp(path)
    err = await _refused(path, read_only=True)
    assert "older" in err.problem
    assert _stamp(path) == before


async def test_read_only_reads_and_refuses_writes_writing_nothing(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    config = _config(tmp_path)
    async with SiteDatabase.open(path, hierarchy=config):
        pass
    before, files = _stamp(path), _names(tmp_path)
    async with SiteDatabase.open(path, hierarchy=config, read_only=True) as db:
        assert await db.schema_version() == SCHEMA_VERSION
        assert len(await db.distribution_points()) == len(config.dps)
        with pytest.raises(SiteDatabaseError, match="read-only"):
            await db.execute("DELETE FROM Sites")
        with pytest.raises(SiteDatabaseError, match="read-only"):
            await db.seed(config)
    assert _stamp(path) == before
    assert _names(tmp_path) == files == ["site.db"]  # not even -wal/-shm: a read-only mount works


async def test_read_only_sees_what_a_running_writer_committed(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path, hierarchy=_config(tmp_path)) as writer:
        await writer.execute("UPDATE Sites SET SiteName = 'renamed' WHERE SiteCode = 'PS1'")
        async with SiteDatabase.open(path, read_only=True) as reader:
            names = {s.site_code: s.site_name for s in await reader.sites()}
    assert names["PS1"] == "renamed"


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_an_error_in_the_body_comes_out_as_raised(tmp_path: Path) -> None:
    class Mine(Exception):
        pass

    with pytest.raises(Mine):
        async with SiteDatabase.open(tmp_path / "site.db"):
            raise Mine


# -- reseeding with a changed hierarchy ------------------------------------------------


def _changed(config: HierarchyConfig) -> HierarchyConfig:
    """A DP added in the middle of the list, PS1's site server (and its DP role) renamed,
    PS2DP1 moved to P01, and the pull DP given a second source."""
    renamed = "PS1NEW.CONTOSO.COM"
    dps: list[DistributionPoint] = []
    for d in config.dps:
        if d.name == "PS1SITE.CONTOSO.COM":
            d = msgspec.structs.replace(d, name=renamed)
        elif d.name == "PS2DP1.CONTOSO.COM":
            d = msgspec.structs.replace(d, site="P01")
        elif d.pull:
            d = msgspec.structs.replace(d, sources=("PS2DP1.CONTOSO.COM", *d.sources))
        dps.append(d)
        if d.name == "PS1DP2.CONTOSO.COM":
            dps.append(DistributionPoint(name="PS1DP9.CONTOSO.COM", site="PS1"))
    sites = tuple(
        msgspec.structs.replace(s, server=renamed) if s.code == "PS1" else s for s in config.sites
    )
    return msgspec.structs.replace(config, sites=sites, dps=tuple(dps))


async def test_reseeding_with_a_changed_hierarchy_keeps_every_dpid(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    before = _config(tmp_path)
    async with SiteDatabase.open(path, hierarchy=before) as db:
        old = {dp.nal_path: dp.dp_id for dp in await db.distribution_points()}
    after = _changed(before)
    async with SiteDatabase.open(path, hierarchy=after) as db:
        rows = {dp.nal_path: dp for dp in await db.distribution_points()}
        sites = {s.site_code: s.site_server for s in await db.sites()}
        sources = await db.fetchall(
            "SELECT SourceDPServerName FROM PullDPMap WHERE PullDPServerName = ? ORDER BY Rank",
            ("P01PDP1.CONTOSO.COM",),
        )
    for nal, dp_id in old.items():  # every row kept, never renumbered
        if nal in rows:
            assert rows[nal].dp_id == dp_id, nal
    # the old site server's DP row stays (jobs may name it); the renamed one is new
    assert (
        rows[nal_path("PS1SITE.CONTOSO.COM", "PS1")].dp_id
        == old[nal_path("PS1SITE.CONTOSO.COM", "PS1")]
    )
    fresh = [rows[nal_path(n, "PS1")].dp_id for n in ("PS1NEW.CONTOSO.COM", "PS1DP9.CONTOSO.COM")]
    assert sorted(fresh) == [max(old.values()) + 1, max(old.values()) + 2]
    assert rows[nal_path("PS1NEW.CONTOSO.COM", "PS1")].is_site_server
    # a DP moved to another site keeps its DPID under its new NAL path
    moved = rows[nal_path("PS2DP1.CONTOSO.COM", "P01")]
    assert (moved.dp_id, moved.site_code) == (old[nal_path("PS2DP1.CONTOSO.COM", "PS2")], "P01")
    assert sites["PS1"] == "PS1NEW.CONTOSO.COM"
    assert [r[0] for r in sources] == ["PS2DP1.CONTOSO.COM", "P01DP1.CONTOSO.COM"]

    # and again: seeding is idempotent
    async with SiteDatabase.open(path, hierarchy=after) as db:
        again = {dp.nal_path: dp.dp_id for dp in await db.distribution_points()}
    assert again == {nal: dp.dp_id for nal, dp in rows.items()}
