"""Bad input through the facade: a typed error that names what was wrong, and nothing
written (no row, no status message, no content on any DP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from actors import Hierarchy
from actors.errors import (
    DuplicateDistribution,
    HierarchyClosed,
    InvalidArgument,
    NotDistributed,
    NotSupported,
    SiteDatabaseError,
    SourceUnavailable,
    UnknownDistributionPoint,
    UnknownPackage,
    UnknownSite,
)
from actors.sitedb import SiteDatabase
from contentlib import TargetNotEmpty
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    SITE,
    SITE_DP,
    SYS,
    TIMEOUT,
    filelib,
    open_hierarchy,
    replicated,
    write_tree,
)

NOPE = "NOPE.CONTOSO.COM"
_TABLES = (
    "SMSPackages",
    "PackageContents",
    "PkgServers",
    "PkgNotification",
    "DistributionJobs",
    "PkgStatus",
    "StatusMessages",
    "PackageIDCounters",
)


async def _snapshot(h: Hierarchy) -> dict[str, object]:
    """Every row a provider call could write, at every site, and every DP library."""
    out: dict[str, object] = {}
    for code, site in h.servers.items():
        db: SiteDatabase = site.db
        for table in _TABLES:
            out[f"{code}.{table}"] = await db.fetchall(f"SELECT * FROM {table} ORDER BY 1")
        for dp, provider in site.dps.items():
            out[f"{dp}.FileLib"] = filelib(provider.library.root)
    return out


async def test_bad_input_is_refused_with_a_typed_error_and_changes_nothing(
    tmp_path: Path,
) -> None:
    src = write_tree(tmp_path / "Good", {"a.txt": b"a\n"})
    not_a_folder = write_tree(tmp_path, {"file.txt": b"x"}) / "file.txt"
    missing = tmp_path / "missing"
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("Good", src, site=SITE)
        await h.distribute(pkg, [DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        await replicated(h)  # the good package's rows have reached every site
        before = await _snapshot(h)
        unknown = "PS1FFFFF"

        cases: list[tuple[Callable[[], Awaitable[object]], type[Exception], str]] = [
            # unknown package, for every operation
            (lambda: h.distribute(unknown, [DP1]), UnknownPackage, unknown),
            (lambda: h.update(unknown), UnknownPackage, unknown),
            (lambda: h.redistribute(unknown, DP1), UnknownPackage, unknown),
            (lambda: h.remove(unknown, [DP1]), UnknownPackage, unknown),
            (lambda: h.delete(unknown), UnknownPackage, unknown),
            (lambda: h.wait(unknown, timeout=1), UnknownPackage, unknown),
            (lambda: h.content_status(unknown), UnknownPackage, unknown),
            (lambda: h.extract(unknown, DP1, tmp_path / "x"), UnknownPackage, unknown),
            (lambda: h.distribute("XX100001", [DP1]), UnknownPackage, "XX100001"),
            # unknown DP (a pull DP of another site is served: test_flow_sites_pulldp.py)
            (lambda: h.distribute(pkg, [NOPE]), UnknownDistributionPoint, "NOPE"),
            (lambda: h.redistribute(pkg, NOPE), UnknownDistributionPoint, "NOPE"),
            (lambda: h.remove(pkg, [NOPE]), UnknownDistributionPoint, "NOPE"),
            # one bad DP in the list: the good one is not added either
            (
                lambda: h.distribute(pkg, [DP2, NOPE]),
                UnknownDistributionPoint,
                "NOPE",
            ),
            # not (yet) on that DP, or already on it
            (lambda: h.redistribute(pkg, DP2), NotDistributed, DP2),
            (lambda: h.remove(pkg, [SYS]), NotDistributed, SYS),
            (lambda: h.distribute(pkg, [DP1]), DuplicateDistribution, DP1),
            (lambda: h.extract(pkg, SITE_DP, tmp_path / "y"), UnknownDistributionPoint, SITE_DP),
            # sources
            (lambda: h.create_package("Gone", missing, site=SITE), SourceUnavailable, "missing"),
            (lambda: h.create_package("F", not_a_folder, site=SITE), SourceUnavailable, "file.txt"),
            (lambda: h.create_package("Elsewhere", src, site="ZZ9"), UnknownSite, "ZZ9"),
            # a secondary site has no SMS Provider
            (lambda: h.create_package("Secondary", src, site="SS1"), NotSupported, "SS1"),
            # wrong types: typed errors naming the value, never AttributeError / TypeError
            (lambda: h.create_package(5, src, site=SITE), InvalidArgument, "5"),  # type: ignore[arg-type]
            (lambda: h.create_package("N", None, site=SITE), InvalidArgument, "None"),  # type: ignore[arg-type]
            (lambda: h.create_package("N", src, site=None), InvalidArgument, "None"),  # type: ignore[arg-type]
            (lambda: h.distribute(None, [DP1]), InvalidArgument, "None"),  # type: ignore[arg-type]
            (lambda: h.distribute(pkg, [None]), InvalidArgument, "None"),  # type: ignore[list-item]
            (lambda: h.distribute(pkg, None), InvalidArgument, "None"),  # type: ignore[arg-type]
            (lambda: h.redistribute(pkg, 7), InvalidArgument, "7"),  # type: ignore[arg-type]
            (lambda: h.wait(pkg, timeout=-1), InvalidArgument, "-1"),
            # extract never mixes a package into a folder that holds other files
            (lambda: h.extract(pkg, DP1, tmp_path), TargetNotEmpty, str(tmp_path)),
        ]
        for call, error, named in cases:
            with pytest.raises(error) as info:
                await call()
            assert named in str(info.value)
        # an update whose source folder went away is refused the same way
        (src / "a.txt").unlink()
        src.rmdir()
        with pytest.raises(SourceUnavailable, match="Good"):
            await h.update(pkg)

        await replicated(h)
        assert await _snapshot(h) == before
        assert not (tmp_path / "x").exists()
        assert not (tmp_path / "y").exists()
        status = await h.content_status(pkg)
        assert [(s.dp, s.state, s.version) for s in status] == [(DP1, "Installed", 1)]


async def test_every_operation_after_close_raises_hierarchy_closed(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "Good", {"a.txt": b"a\n"})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("Good", src, site=SITE)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: h.create_package("Late", src, site=SITE),
        lambda: h.distribute(pkg, [DP1]),
        lambda: h.update(pkg),
        lambda: h.redistribute(pkg, DP1),
        lambda: h.remove(pkg, [DP1]),
        lambda: h.delete(pkg),
        lambda: h.wait(pkg),
        lambda: h.content_status(pkg),
        lambda: h.validate(pkg, DP1),
        lambda: h.extract(pkg, DP1, tmp_path / "out"),
    ]
    for call in calls:
        with pytest.raises(HierarchyClosed):
            await call()


async def test_a_damaged_site_database_is_named_when_the_hierarchy_opens(tmp_path: Path) -> None:
    async with open_hierarchy(tmp_path) as h:
        path = h.servers[SITE].db.path
    _overwrite(path, b"this is not a database, it was overwritten" * 100)
    with pytest.raises(SiteDatabaseError) as info:
        async with open_hierarchy(tmp_path):
            pass
    assert str(path) in str(info.value)


def _overwrite(path: Path, data: bytes) -> None:
    """A closed database (and its WAL files) replaced by ``data``."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(data)
