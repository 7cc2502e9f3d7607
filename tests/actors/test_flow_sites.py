"""Across the hierarchy: a package created at the CAS travels to DPs of other sites (the
reference's "Distribute a package to DP across sites"): DRS, the source site's mini-jobs,
Scheduler, Sender and Despooler, then each destination site's DistMgr and PkgXferMgr."""

from __future__ import annotations

from pathlib import Path

from tests.actors.flow_helpers import (
    ANY_DP,
    TIMEOUT,
    assert_extracts_identical,
    message_ids,
    open_hierarchy,
    write_tree,
)

PS1DP1 = "PS1DP1.CONTOSO.COM"
PS2DP1 = "PS2DP1.CONTOSO.COM"
SS1DP1 = "SS1DP1.CONTOSO.COM"


async def test_a_cas_package_reaches_dps_of_three_sites(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src", {"a.txt": b"alpha\n" * 500, "b/c.bin": bytes(range(256)) * 8}
    )
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("Dummy1", src, site="CS1")
        await h.distribute(pkg, [PS1DP1, PS2DP1, SS1DP1])
        results = await h.wait(pkg, timeout=TIMEOUT)
        assert {(r.dp, r.state, r.version) for r in results} == {
            (PS1DP1, "Installed", 1),
            (PS2DP1, "Installed", 1),
            (SS1DP1, "Installed", 1),
        }
        await assert_extracts_identical(h, pkg, [PS1DP1, PS2DP1, SS1DP1], src, tmp_path / "out")
        assert await message_ids(h.servers["CS1"].db, pkg.pkg_id, ANY_DP) == [2300, 2376, 2301]
        for code in ("PS1", "PS2", "SS1"):
            ids = await message_ids(h.servers[code].db, pkg.pkg_id, ANY_DP)
            print(code, ids)
