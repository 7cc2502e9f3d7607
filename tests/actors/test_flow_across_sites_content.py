"""Across sites, what happens to content when a site cannot use what it is sent, and when
a DP of another site leaves the package: a DLT whose base version the destination no
longer holds is refused (4405) and the source sends the whole package instead; a removal
issued at the CAS for a DP of PS1 removes its content there, and the CAS sees it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from actors import Hierarchy, Package
from actors.errors import NotSupported, UnknownDistributionPoint
from actors.site._paths import receive_box, smspkg
from actors.sitedb import PkgStatusType, PkgStatusValue
from contentlib import content_id
from tests.actors.flow_helpers import (
    ANY_DP,
    TIMEOUT,
    assert_extracts_identical,
    assert_in_order,
    dp_status_rows,
    filelib,
    message_ids,
    messages,
    open_hierarchy,
    replicated,
    server_rows,
    site_log,
    until,
    write_tree,
)

PS1DP1 = "PS1DP1.CONTOSO.COM"
PS2DP1 = "PS2DP1.CONTOSO.COM"


async def _installed(h: Hierarchy, name: str, src: Path, dp: str) -> Package:
    """A package created at the CAS, installed (version 1) on ``dp`` of another site."""
    pkg = await h.create_package(name, src, site="CS1")
    await h.distribute(pkg, [dp])
    results = await h.wait(pkg, timeout=TIMEOUT)
    assert [(r.dp, r.state, r.version) for r in results] == [(dp, "Installed", 1)]
    return pkg


async def test_a_dlt_whose_base_is_gone_is_refused_and_the_pck_is_sent(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src",
        {"a.txt": b"alpha\n" * 2000, "r.bin": random.Random(7).randbytes(50_000)},
    )
    async with open_hierarchy(tmp_path) as h:
        pkg = await _installed(h, "Base", src, PS2DP1)
        cs1, ps2 = h.servers["CS1"], h.servers["PS2"]
        await replicated(h)  # CS1 knows PS2 holds version 1: an update sends it a DLT
        # PS2's library loses version 1 (cleaned up): the DLT's base is not there
        await ps2.library.remove_content(content_id(pkg.pkg_id, 1))
        before = filelib(ps2.library.root)
        mark = max((m.record_id for m in await messages(ps2.db)), default=0)

        (src / "a.txt").write_bytes(b"alpha\n" * 1999 + b"beta\n")
        await h.update(pkg)

        async def refused() -> bool:
            return 4405 in await message_ids(ps2.db, pkg.pkg_id, ANY_DP, since=mark)

        await until(refused)
        # nothing of the DLT reached the library; the DLT and its instruction are set aside
        assert ps2.library.content_ids(pkg.pkg_id) == []
        assert filelib(ps2.library.root) == before
        aside = sorted(p.suffix for p in (receive_box(ps2.root) / "refused").iterdir())
        assert aside == [".PCK", ".SNI"]
        (refusal,) = [m for m in await messages(ps2.db, since=mark) if m.message_id == 4405]
        assert refusal.strings[1] == "CS1"
        assert content_id(pkg.pkg_id, 1) in refusal.strings[2]

        # the source sends the whole package; PS2 stores it and its DP takes version 2
        async def installed() -> bool:
            status = await h.content_status(pkg)
            return [(s.dp, s.state, s.version) for s in status] == [(PS2DP1, "Installed", 2)]

        await until(installed)
        await assert_extracts_identical(h, pkg, [PS2DP1], src, tmp_path / "o")
        assert await message_ids(ps2.db, pkg.pkg_id, ANY_DP, since=mark) == [
            4405,
            4400,
            2342,
            2357,
            8200,
            8210,
            2330,
        ]
        root = smspkg(cs1.root)
        assert_in_order(
            site_log(h, "CS1", "distmgr.log"),
            [
                f"Setting CMiniJob transfer root to {root / f'{pkg.pkg_id}.DLT.1.2'}",
                f"Created minijob to send compressed copy of package {pkg.pkg_id} to site PS2.",
                f"Setting CMiniJob transfer root to {root / f'{pkg.pkg_id}.PCK.2'}",
                f"Created minijob to send compressed copy of package {pkg.pkg_id} to site PS2.",
            ],
        )
        despool = site_log(h, "PS2", "despool.log")
        assert_in_order(
            despool,
            [
                "Refused instruction",
                f"This site does not hold version 1 of package {pkg.pkg_id}",
                f"Extracting content {pkg.pkg_id}.2",
                "Despooler successfully executed one instruction.",
            ],
        )
        assert despool.count(f"Extracting content {pkg.pkg_id}.2") == 1
        await replicated(h)
        (row,) = [
            r
            for r in await cs1.db.pkg_status(pkg.pkg_id)
            if r.type == PkgStatusType.SITE and r.site_code == "PS2"
        ]
        assert (row.status, row.source_version) == (PkgStatusValue.RECEIVED, 2)
        assert await cs1.db.minijobs() == []
        assert list(root.glob("*.PCK.*")) + list(root.glob("*.DLT.*")) == []


async def test_a_removal_issued_at_the_cas_for_a_dp_of_ps1(tmp_path: Path) -> None:
    """The DP's content goes at PS1 (bytes and rows), 2332 there, and the status reaches
    the CAS by DRS: its content_status shows the DP removed."""
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha\n" * 500, "b.bin": bytes(range(256))})
    async with open_hierarchy(tmp_path) as h:
        pkg = await _installed(h, "Gone", src, PS1DP1)
        cs1, ps1 = h.servers["CS1"], h.servers["PS1"]
        dp_library = ps1.dp_library(PS1DP1)
        assert dp_library is not None
        assert filelib(dp_library.root) != []
        await replicated(h)
        mark = max((m.record_id for m in await messages(ps1.db)), default=0)

        await h.remove(pkg, [PS1DP1])  # issued at the CAS, the package's site

        async def removed_at_the_cas() -> bool:
            status = await h.content_status(pkg)
            return [(s.dp, s.state, s.version) for s in status] == [(PS1DP1, "Removed", 0)]

        await until(removed_at_the_cas)
        # at PS1: the bytes are gone from the DP, its PkgServers row too, 2332 raised
        assert dp_library.content_ids(pkg.pkg_id) == []
        assert filelib(dp_library.root) == []
        with pytest.raises(UnknownDistributionPoint, match="holds no content"):
            await h.extract(pkg, PS1DP1, tmp_path / "removed")
        assert await message_ids(ps1.db, pkg.pkg_id, ANY_DP, since=mark) == [2332]
        await replicated(h)
        for server in (ps1, cs1):
            assert await server_rows(server.db, pkg.pkg_id) == {}, server.code
            rows = await dp_status_rows(server.db, pkg.pkg_id)
            assert [(nal, r["status"]) for nal, r in rows.items()] == [
                (nal, int(PkgStatusValue.REMOVED)) for nal in rows
            ], server.code
            assert len(rows) == 1
        # the site keeps the package (another DP may want it): only the DP lost it
        assert ps1.library.content_ids(pkg.pkg_id) == [content_id(pkg.pkg_id, 1)]


async def test_validation_of_a_dp_of_another_site_is_done_by_that_site(tmp_path: Path) -> None:
    """Asked at the CAS for a DP of PS1: PS1's ContentValidator rehashes the DP's files;
    damage there makes the DP Failed (2383) and a redistribute issued at the CAS repairs it."""
    src = write_tree(tmp_path / "src", {"big.bin": random.Random(3).randbytes(80_000)})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("Checked", src, site="CS1")
        await h.distribute(pkg, [PS1DP1])
        await h.wait(pkg, timeout=TIMEOUT)
        assert (await h.validate(pkg, PS1DP1)).ok
        library = h.servers["PS1"].dp_library(PS1DP1)
        assert library is not None
        entry = library.manifest(f"{pkg.pkg_id}.1").files[0]
        stored = library.file_path(entry.sha256)
        data = bytearray(stored.read_bytes())
        data[100] ^= 0xFF
        stored.write_bytes(bytes(data))
        result = await h.validate(pkg, PS1DP1)
        assert result.corrupt == ("big.bin",)
        assert [(s.dp, s.state, s.last_message) for s in await h.content_status(pkg)] == [
            (PS1DP1, "Failed", 2383)
        ]
        await h.redistribute(pkg, PS1DP1)
        assert [(s.dp, s.state) for s in await h.wait(pkg, timeout=TIMEOUT)] == [
            (PS1DP1, "Installed")
        ]
        assert (await h.validate(pkg, PS1DP1)).ok
        with pytest.raises(NotSupported, match="P01PDP1"):
            await h.validate(pkg, "P01PDP1.CONTOSO.COM")
