"""Bad input through the facade: a typed error that names what was wrong, and nothing
written (no row, no status message, no content on any DP)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from actors.errors import (
    CmdistError,
    DuplicateDistribution,
    NotDistributed,
    NotSupported,
    SourceUnavailable,
    UnknownDistributionPoint,
    UnknownPackage,
    UnknownSite,
)
from actors.hierarchy import Hierarchy
from actors.sitedb import SiteDatabase
from tests.actors.flow_helpers import (
    DP1,
    DP2,
    SITE,
    SITE_DP,
    SYS,
    TIMEOUT,
    filelib,
    open_hierarchy,
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
    for code, site in h.sites.items():
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
        before = await _snapshot(h)
        unknown = "PS1FFFFF"

        cases: list[tuple[Callable[[], Awaitable[object]], type[CmdistError], str]] = [
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
            # unknown DP; DPs this build cannot serve yet
            (lambda: h.distribute(pkg, [NOPE]), UnknownDistributionPoint, "NOPE"),
            (lambda: h.redistribute(pkg, NOPE), UnknownDistributionPoint, "NOPE"),
            (lambda: h.remove(pkg, [NOPE]), UnknownDistributionPoint, "NOPE"),
            (lambda: h.distribute(pkg, ["PS2DP1.CONTOSO.COM"]), NotSupported, "PS2DP1"),
            (lambda: h.distribute(pkg, ["P01PDP1.CONTOSO.COM"]), NotSupported, "pull"),
            # one bad DP in the list: the good one is not added either
            (lambda: h.distribute(pkg, [DP2, "PS2DP1.CONTOSO.COM"]), NotSupported, "PS2DP1"),
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

        assert await _snapshot(h) == before
        assert not (tmp_path / "x").exists()
        assert not (tmp_path / "y").exists()
        status = await h.content_status(pkg)
        assert [(s.dp, s.state, s.version) for s in status] == [(DP1, "Installed", 1)]
