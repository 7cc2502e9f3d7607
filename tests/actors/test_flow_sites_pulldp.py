"""A package of the CAS to the pull DP of another site (P01PDP1, source P01DP1): the
content reaches P01 across sites (PCK, despooler), then P01's DistMgr runs the pull DP flow
from P01's own DPs, 8212 and retries while the source DP does not hold the version yet.
Every request is issued at the CAS; ``wait`` and ``content_status`` see P01's DPs and the
CAS's database has their status rows by DRS."""

from __future__ import annotations

from pathlib import Path

from actors import Hierarchy
from actors.config import nal_path
from actors.sitedb import PkgStatusValue
from tests.actors.flow_helpers import (
    TIMEOUT,
    assert_extracts_identical,
    open_hierarchy,
    replicated,
    until,
    write_tree,
)
from tests.actors.test_flow_pulldp import DP, PULL, SITE, _ids, _log, _rows
from tests.actors.test_flow_pulldp_faults import _notified

CAS = "CS1"


async def _cas_rows(h: Hierarchy, pkg_id: str) -> dict[str, tuple[int, int]]:
    """The Type 2 PkgStatus rows of P01's DPs as the CAS holds them: (Status, version)."""
    rows = await h.servers[CAS].db.pkg_status(pkg_id)
    return {r.pkg_server: (r.status, r.source_version) for r in rows if r.type == 2}


async def _state(h: Hierarchy, pkg_id: str, dp: str) -> str:
    return {s.dp: s.state for s in await h.content_status(pkg_id)}.get(dp, "")


async def test_a_cas_package_on_a_pull_dp_of_p01_updates_and_leaves(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src", {"a.txt": b"alpha\n" * 500, "b/c.bin": bytes(range(256)) * 8}
    )
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("CasToPull", src, site=CAS)
        assert pkg.site == CAS
        await h.distribute(pkg, [DP, PULL])
        status = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status == {DP: ("Installed", 1), PULL: ("Installed", 1)}
        await assert_extracts_identical(h, pkg, [DP, PULL], src, tmp_path / "v1")
        pkg_id = pkg.pkg_id
        ids = await _ids(h, pkg_id, PULL)
        assert ids[:2] == [2342, 2357]  # content of another site, then the pull DP's job
        assert ids[-1] == 8210
        # P01 got the content across sites and then ran the pull DP flow on its own DPs
        assert f"Extracting content {pkg_id}.1" in _log(h, "P01SITE.CONTOSO.COM", "despool.log")
        dist = _log(h, "P01SITE.CONTOSO.COM", "distmgr.log")
        assert f"Package Server {nal_path(PULL, SITE)} is a PullDP." in dist
        assert f"All 1 content jobs for {pkg_id}.1 have completed" in _log(h, PULL, "PullDP.log")
        # the CAS sees both DPs Installed in its own database (DRS brought the rows back)
        await replicated(h)
        installed = int(PkgStatusValue.INSTALLED)
        assert await _cas_rows(h, pkg_id) == {
            nal_path(DP, SITE): (installed, 1),
            nal_path(PULL, SITE): (installed, 1),
        }

        # an update issued at the CAS: version 2 reaches P01 (a DLT), then both DPs
        (src / "a.txt").write_bytes(b"alpha\n" * 400 + b"beta version 2\n")
        (src / "new.txt").write_bytes(b"added in version 2\n")
        await h.update(pkg)
        await until(lambda: _version_at(h, CAS, pkg_id, 2))
        status = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status == {DP: ("Installed", 2), PULL: ("Installed", 2)}
        library = h.servers[SITE].pull_dps[PULL].library
        assert library.content_ids(pkg_id)[-1] == f"{pkg_id}.2"
        await assert_extracts_identical(h, pkg, [PULL, DP], src, tmp_path / "v2")
        assert f"All 1 content jobs for {pkg_id}.2 have completed" in _log(h, PULL, "PullDP.log")

        # a redistribute issued at the CAS: the pull DP downloads the version again
        before = (await _ids(h, pkg_id, PULL)).count(8210)
        await h.redistribute(pkg, PULL)
        status = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL] == ("Installed", 2)
        assert (await _ids(h, pkg_id, PULL)).count(8210) == before + 1  # wait saw it done

        # remove from the pull DP, issued at the CAS: it leaves P01PDP1 only
        await h.remove(pkg, [PULL])
        status = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status[PULL][0] == "Removed"
        assert status[DP] == ("Installed", 2)
        assert library.content_ids(pkg_id) == []
        sql = f"SELECT ServerName FROM ContentDPMap WHERE ContentID = '{pkg_id}'"
        assert _rows(h, sql) == [(DP,)]
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]
        assert _rows(h, "SELECT COUNT(*) FROM PullDPResponse") == [(0,)]


async def test_a_cas_package_on_the_pull_dp_alone_retries_until_its_source_has_it(
    tmp_path: Path,
) -> None:
    """No source DP targeted: 8212 and retries (the DP shows Retrying), until the package
    is distributed to P01DP1 too; then the next try finds it there."""
    src = write_tree(tmp_path / "src", {"a.txt": b"a" * 3000})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("PullAlone", src, site=CAS)
        await h.distribute(pkg, [PULL])
        await until(lambda: _count(h, pkg.pkg_id, 8212, 2))
        await until(lambda: _is(h, pkg.pkg_id, PULL, "Retrying"))
        assert DP not in {s.dp for s in await h.content_status(pkg)}
        await h.distribute(pkg, [DP])
        status = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=TIMEOUT)}
        assert status == {DP: ("Installed", 1), PULL: ("Installed", 1)}
        ids = await _ids(h, pkg.pkg_id, PULL)
        assert ids[-1] == 8210
        assert ids.count(8212) >= 2
        await assert_extracts_identical(h, pkg, [PULL], src, tmp_path / "out")
        assert "Unable to find any source locations" in _log(
            h, h.config.site(SITE).server, "PkgXferMgr.log"
        )


async def test_cancel_of_a_cas_package_on_the_pull_dp_is_asked_of_p01(tmp_path: Path) -> None:
    """The pull DP's job runs at P01: ``cancel`` reaches it there (its download failing and
    retrying on a link that is down), and the DP ends Failed with no job left."""
    src = write_tree(tmp_path / "src", {"a.bin": bytes(range(256)) * 40})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("CancelAcross", src, site=CAS)
        await h.distribute(pkg, [DP])
        await h.wait(pkg, timeout=TIMEOUT)
        agent = h.servers[SITE].pull_dps[PULL]
        agent.links[DP].down = True  # the download fails and retries: in flight
        await h.distribute(pkg, [PULL])
        await until(lambda: _notified(h))
        assert await h.cancel(pkg, PULL)
        assert await _state(h, pkg.pkg_id, PULL) == "Failed"
        assert _rows(h, "SELECT COUNT(*) FROM DistributionJobs") == [(0,)]
        assert not await h.cancel(pkg, PULL)  # nothing left to stop
        assert agent.library.content_ids(pkg.pkg_id) == []


async def _version_at(h: Hierarchy, site: str, pkg_id: str, version: int) -> bool:
    row = await h.servers[site].db.package(pkg_id)
    return row is not None and row.stored_pkg_version == version


async def _count(h: Hierarchy, pkg_id: str, message_id: int, count: int) -> bool:
    return (await _ids(h, pkg_id, PULL)).count(message_id) >= count


async def _is(h: Hierarchy, pkg_id: str, dp: str, state: str) -> bool:
    return await _state(h, pkg_id, dp) == state
