"""Provider: each operation's rows against the reference's statements; bad calls write nothing."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from actors.config import HierarchyConfig, load_hierarchy, nal_path
from actors.errors import (
    CmdistError,
    DuplicateDistribution,
    InvalidArgument,
    NotDistributed,
    NotSourceSite,
    SourceUnavailable,
    UnknownDistributionPoint,
    UnknownPackage,
    UnknownSite,
)
from actors.site import SmsProvider
from actors.sitedb import SiteDatabase
from actors.sitedb.schema import SMSPACKAGES_COLUMNS
from actors.status import PROVIDER, ComponentLogs

ROOT = Path(__file__).resolve().parents[3]
NOW = dt.datetime(2016, 5, 16, 15, 22, 12, tzinfo=dt.UTC)

# The reference's statements, verbatim (package-actions.md, "Create a package" step 1 and
# "Distribute a package to standard DP" step 1).
REF_INSERT_PACKAGE = r"""insert SMSPackages (PkgID, Name, Version, Language, Manufacturer, Description, ISVString, Hash, NewHash, Source, SourceSite, StoredPkgPath, RefreshSchedule, LastRefresh, StoredPkgVersion, ShareName, PreferredAddress, StorePkgFlag, ShareType, HashVersion,Architecture, ImagePath,Permission, UseForcedDisconnect, ForcedRetryDelay, DisconnectDelay, IgnoreSchedule, Priority, PkgFlags, MIFFilename, MIFPublisher, MIFName, MIFVersion, SourceVersion, SourceDate, SourceSize, SourceCompSize, ImageFlags, PackageType, AlternateContentProviders, SourceLocaleID,  TransformReadiness, TransformAnalysisDate, UpdateMask, UpdateMaskEx, Action, DefaultImage) values (N'PackageID', N'Dummy1', N'', N'',N'',N'',N'',N'',N'',N'\\CS1SITE\SOURCE\Packages\Dummy1',N'CS1',N'',N'',N'04/10/1970 06:35:00', 0, N'',N'', 2, 1, 1, N'', N'', 15, 0, 2, 5, 0, 2, 16777216, N'',N'',N'',N'', 1, N'05/16/2016 15:22:12', 0, 0, 0, 0, N'', 1033, 0, N'1980/01/01 00:00:00', 0, 0, 2, 0)"""  # noqa: E501
REF_INSERT_SERVER = r"""insert PkgServers (PkgID, NALPath, SiteCode, SiteName, SourceSite, LastRefresh, RefreshTrigger, UpdateMask, Action) select N'<PackageID>', N'["Display=\\PS1DP2.CONTOSO.COM\"]MSWNET:["SMS_SITE=PS1"]\\PS1DP2.CONTOSO.COM\', N'PS1', Sites.SiteName, N'PS1', N'04/10/1970 06:35:00', 0, 0, 2  from Sites where SiteCode = N'PS1'"""  # noqa: E501


def _values(sql: str, start: str) -> list[object]:
    """The literal values of a reference statement, after ``start``, as Python values."""
    body = sql.split(start, 1)[1]
    out: list[object] = []
    for m in re.finditer(r"N'((?:[^']|'')*)'|(-?\d+)|Sites\.SiteName", body):
        if m.group(0) == "Sites.SiteName":
            out.append("Sites.SiteName")
        elif m.group(1) is not None:
            out.append(m.group(1))
        else:
            out.append(int(m.group(2)))
    return out


def _columns(sql: str) -> list[str]:
    return [c.strip() for c in sql.split("(", 1)[1].split(")", 1)[0].split(",")]


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


@asynccontextmanager
async def _site(
    tmp_path: Path, site: str = "PS1"
) -> AsyncIterator[tuple[SiteDatabase, SmsProvider, HierarchyConfig]]:
    h = load_hierarchy(ROOT / "hierarchy.toml", root=tmp_path / "data")
    logs = ComponentLogs(tmp_path / "logs")
    async with SiteDatabase.open(tmp_path / "site.db", hierarchy=h) as db:
        yield db, SmsProvider(db, h, site, log=logs[PROVIDER], now=lambda: NOW), h
    logs.close()


def _source(tmp_path: Path, name: str = "Dummy1") -> Path:
    src = tmp_path / "SOURCE" / "Packages" / name
    src.mkdir(parents=True, exist_ok=True)
    (src / f"{name}.txt").write_text("hello")
    return src


async def test_create_package_writes_the_reference_row(tmp_path: Path) -> None:
    src = _source(tmp_path)
    async with _site(tmp_path, "CS1") as (_, provider, _h):
        pkg = await provider.create_package("Dummy1", src)
        second = await provider.create_package("Dummy2", src)
    assert (pkg, second) == ("CS100001", "CS100002")
    path = tmp_path / "site.db"
    ref_cols = _columns(REF_INSERT_PACKAGE)
    assert ref_cols == list(SMSPACKAGES_COLUMNS)
    expected = _values(REF_INSERT_PACKAGE, "values")
    expected[0], expected[9] = pkg, str(src)  # our ID, our source folder
    row = _rows(path, f"SELECT {', '.join(ref_cols)} FROM SMSPackages WHERE PkgID = '{pkg}'")
    assert list(row[0]) == expected
    # the trigger's row, as "insert PkgNotification (...) values (N'PackageID', 2, 2, GetDate())"
    assert _rows(path, "SELECT PkgID, Priority, Type FROM PkgNotification") == [
        (pkg, 2, 2),
        (second, 2, 2),
    ]
    log = (tmp_path / "logs" / "SMSProv.log").read_text()
    assert "Auditing: User CONTOSO\\Admin created an instance of class SMS_Package.~" in log
    assert f'Processed insert instance notification for: SMS_Package.PackageID="{pkg}"~' in log
    assert log.count("Auditing:") == 2  # one line per operation


async def test_package_ids_are_sequential_per_site(tmp_path: Path) -> None:
    src = _source(tmp_path)
    async with _site(tmp_path, "PS1") as (db, provider, h):
        ids = [await provider.create_package(f"P{i}", src) for i in range(17)]
        other = SmsProvider(db, h, "P01")
        assert await other.create_package("X", src) == "P0100001"
    assert ids == [f"PS1{i:05X}" for i in range(1, 18)]
    assert ids[-1] == "PS100011"


async def test_add_distribution_points_writes_the_reference_rows(tmp_path: Path) -> None:
    src = _source(tmp_path)
    async with _site(tmp_path) as (_, provider, _h):
        pkg = await provider.create_package("Dummy1", src)
        await provider.add_distribution_points(pkg, ["PS1DP2.CONTOSO.COM"])
    path = tmp_path / "site.db"
    cols = _columns(REF_INSERT_SERVER)
    ref = _values(REF_INSERT_SERVER, "select")[:-1]  # the last literal is the WHERE's
    ref[0] = pkg
    ref[cols.index("SiteName")] = "Primary Site 1"  # Sites.SiteName, from the seeded Sites row
    assert _rows(path, f"SELECT {', '.join(cols)} FROM PkgServers") == [tuple(ref)]
    assert ref[1] == nal_path("PS1DP2.CONTOSO.COM", "PS1")
    assert _rows(path, "SELECT PkgID, Priority, Type FROM PkgNotification ORDER BY RowID") == [
        (pkg, 2, 2),
        (pkg, 2, 4),  # insert PkgNotification (...) values (N'<PackageID>', 2, 4, GetDate())
    ]
    log = (tmp_path / "logs" / "SMSProv.log").read_text()
    assert f'ExecMethodAsync : SMS_Package.PackageID="{pkg}"::AddDistributionPoints~' in log
    assert "called an audited method of an instance of class SMS_Package.~" in log


async def test_refresh_redistribute_remove_delete_rows(tmp_path: Path) -> None:
    src = _source(tmp_path)
    path = tmp_path / "site.db"
    dp1, dp2 = "PS1DP1.CONTOSO.COM", "PS1DP2.CONTOSO.COM"
    nal1, nal2 = nal_path(dp1, "PS1"), nal_path(dp2, "PS1")
    async with _site(tmp_path) as (db, provider, _h):
        pkg = await provider.create_package("Dummy1", src)
        await provider.add_distribution_points(pkg, [dp1, dp2])
        # DistMgr's DP threads reset the actions, and storing version 1
        await db.execute("UPDATE PkgServers SET Action = 0")
        await db.execute("UPDATE SMSPackages SET Action = 0, StoredPkgVersion = 1")

        await provider.refresh_pkg_source(pkg)
        # update SMSPackages set Source = ..., StoredPkgVersion = 1, UpdateMask = 32,
        #   UpdateMaskEx = 8388608, Action = 1 where PkgID = N'PackageID'
        assert _rows(
            path,
            "SELECT Source, StoredPkgVersion, UpdateMask, UpdateMaskEx, Action FROM SMSPackages",
        ) == [(str(src), 1, 32, 8388608, 1)]

        await provider.redistribute(pkg, dp1)
        assert _rows(
            path, f"SELECT RefreshTrigger, Action FROM PkgServers WHERE NALPath = '{nal1}'"
        )[0] == (1, 0)

        await provider.remove_distribution_points(pkg, [dp2])
        assert _rows(path, f"SELECT Action FROM PkgServers WHERE NALPath = '{nal2}'") == [(3,)]
        # a pending removal can be undone by adding the DP again
        await provider.add_distribution_points(pkg, [dp2])
        assert _rows(path, f"SELECT Action FROM PkgServers WHERE NALPath = '{nal2}'") == [(2,)]

        await provider.delete_package(pkg)
        assert _rows(path, "SELECT Action FROM SMSPackages") == [(3,)]
        assert _rows(path, "SELECT DISTINCT Action FROM PkgServers") == [(3,)]
        with pytest.raises(UnknownPackage):
            await provider.add_distribution_points(pkg, [dp1])
    types = [t for (t,) in _rows(path, "SELECT Type FROM PkgNotification ORDER BY RowID")]
    # new, 2 x add, refresh, redistribute, remove, re-add, delete (package + 2 DPs)
    assert types == [2, 4, 4, 1, 4, 4, 4, 4, 4, 1]


async def test_concurrent_duplicate_adds_one_wins(tmp_path: Path) -> None:
    src = _source(tmp_path)
    outcomes: list[str] = []
    async with _site(tmp_path) as (_, provider, _h):
        pkg = await provider.create_package("Dummy1", src)

        async def add() -> None:
            try:
                await provider.add_distribution_points(pkg, ["PS1DP1.CONTOSO.COM"])
                outcomes.append("added")
            except DuplicateDistribution:
                outcomes.append("duplicate")

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(add)
    assert sorted(outcomes) == ["added"] + ["duplicate"] * 4
    assert _rows(tmp_path / "site.db", "SELECT COUNT(*) FROM PkgServers") == [(1,)]


Call = Callable[[SmsProvider, str, Path], Awaitable[object]]

BAD_CALLS: list[tuple[str, Call, type[CmdistError], str]] = [
    ("empty name", lambda p, k, s: p.create_package(" ", s), InvalidArgument, "name"),
    (
        "missing source",
        lambda p, k, s: p.create_package("X", s / "absent"),
        SourceUnavailable,
        "does not exist",
    ),
    (
        "source is a file",
        lambda p, k, s: p.create_package("X", s / "Dummy1.txt"),
        SourceUnavailable,
        "not a folder",
    ),
    (
        "unknown package (add)",
        lambda p, k, s: p.add_distribution_points("PS1FFFFF", ["PS1DP1.CONTOSO.COM"]),
        UnknownPackage,
        "PS1FFFFF",
    ),
    (
        "DP not in the hierarchy",
        lambda p, k, s: p.add_distribution_points(k, ["PS1DP1.CONTOSO.COM", "NOPE.CONTOSO.COM"]),
        UnknownDistributionPoint,
        "NOPE.CONTOSO.COM",
    ),
    (
        "duplicate add",
        lambda p, k, s: p.add_distribution_points(k, ["PS1DP2.CONTOSO.COM", "PS1SYS.CONTOSO.COM"]),
        DuplicateDistribution,
        "PS1SYS.CONTOSO.COM",
    ),
    (
        "same DP twice in one call",
        lambda p, k, s: p.add_distribution_points(k, ["PS1DP1.CONTOSO.COM", "ps1dp1.contoso.com"]),
        DuplicateDistribution,
        "PS1DP1.CONTOSO.COM",
    ),
    (
        "no DPs",
        lambda p, k, s: p.add_distribution_points(k, []),
        InvalidArgument,
        "non-empty list",
    ),
    (
        "unknown package (refresh)",
        lambda p, k, s: p.refresh_pkg_source("PS1ZZZZZ"),
        UnknownPackage,
        "PS1ZZZZZ",
    ),
    (
        "redistribute to a DP without the package",
        lambda p, k, s: p.redistribute(k, "PS1DP1.CONTOSO.COM"),
        NotDistributed,
        "PS1DP1.CONTOSO.COM",
    ),
    (
        "redistribute to an unknown DP",
        lambda p, k, s: p.redistribute(k, "X.CONTOSO.COM"),
        UnknownDistributionPoint,
        "X.CONTOSO.COM",
    ),
    (
        "remove from a DP without the package",
        lambda p, k, s: p.remove_distribution_points(
            k, ["PS1SYS.CONTOSO.COM", "PS1DP1.CONTOSO.COM"]
        ),
        NotDistributed,
        "PS1DP1.CONTOSO.COM",
    ),
    (
        "delete an unknown package",
        lambda p, k, s: p.delete_package("PS1ABCDE"),
        UnknownPackage,
        "PS1ABCDE",
    ),
]


@pytest.mark.parametrize(
    ("case", "call", "error", "names"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS]
)
async def test_bad_call_is_refused_and_writes_nothing(
    tmp_path: Path, case: str, call: Call, error: type[CmdistError], names: str
) -> None:
    src = _source(tmp_path)
    async with _site(tmp_path) as (_, provider, _h):
        pkg = await provider.create_package("Dummy1", src)
        await provider.add_distribution_points(pkg, ["PS1SYS.CONTOSO.COM"])
        before = _dump(tmp_path / "site.db")
        assert provider.log is not None
        provider.log.flush()
        log_before = (tmp_path / "logs" / "SMSProv.log").read_text()
        with pytest.raises(error) as info:
            await call(provider, pkg, src)
        assert names in str(info.value), case
        assert _dump(tmp_path / "site.db") == before, case
        provider.log.flush()
        assert (tmp_path / "logs" / "SMSProv.log").read_text() == log_before


async def test_refresh_with_vanished_source_and_at_wrong_site_write_nothing(tmp_path: Path) -> None:
    src = _source(tmp_path)
    async with _site(tmp_path) as (db, provider, h):
        pkg = await provider.create_package("Dummy1", src)
        before = _dump(tmp_path / "site.db")
        with pytest.raises(NotSourceSite, match="PS1"):
            await SmsProvider(db, h, "CS1").refresh_pkg_source(pkg)
        with pytest.raises(NotSourceSite):
            await SmsProvider(db, h, "CS1").delete_package(pkg)
        (src / "Dummy1.txt").unlink()
        src.rmdir()
        with pytest.raises(SourceUnavailable, match="does not exist"):
            await provider.refresh_pkg_source(pkg)
        assert _dump(tmp_path / "site.db") == before
        with pytest.raises(UnknownSite):
            SmsProvider(db, h, "ZZ9")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
async def test_unreadable_source_is_refused(tmp_path: Path) -> None:
    src = _source(tmp_path)
    src.chmod(0)
    try:
        async with _site(tmp_path) as (_, provider, _h):
            before = _dump(tmp_path / "site.db")
            with pytest.raises(SourceUnavailable, match="cannot be read"):
                await provider.create_package("X", src)
            assert _dump(tmp_path / "site.db") == before
    finally:
        src.chmod(0o755)
