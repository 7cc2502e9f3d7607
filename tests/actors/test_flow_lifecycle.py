"""End to end on one site: create -> distribute to 2 DPs -> update (files added, changed,
removed; a delta) -> redistribute -> remove -> delete, through the public facade.

Each step checks the site database against the reference's statements, the status
message IDs in order per package and DP, and the DPs' content libraries, and that
``extract`` from every DP gives back the source folder byte for byte.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from actors.errors import UnknownDistributionPoint, UnknownPackage
from tests.actors.flow_helpers import (
    ANY_DP,
    DEFAULT_LAST_REFRESH,
    DP1,
    DP2,
    SITE,
    TIMEOUT,
    assert_extracts_identical,
    dp_id,
    dp_library_root,
    dp_status_rows,
    filelib,
    install_probes,
    installed_status,
    job_log,
    last_seq,
    log_text,
    message_ids,
    nal,
    open_hierarchy,
    package_row,
    read_tree,
    server_rows,
    staged_files,
    write_tree,
)

BIG = 1 << 20  # > 16 KiB: changed a little, it goes as a delta


def _changed_a_little(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"a small edit in the middle" + data[middle + 26 :]


async def test_create_distribute_update_redistribute_remove_delete(tmp_path: Path) -> None:
    big = os.urandom(BIG)
    src = write_tree(
        tmp_path / "src" / "Dummy1",
        {
            "setup.cmd": b"@echo off\r\nmsiexec /i app.msi /qn\r\n",
            "bin/app.bin": big,
            "docs/readme.txt": b"version 1 notes\n" * 100,
            "docs/old.txt": b"this file goes in version 2\n",
        },
    )
    out = tmp_path / "out"
    async with open_hierarchy(tmp_path) as h:
        site = h.servers[SITE]
        db = site.db
        await install_probes(db)
        dp1_link, dp2_link = site.links[DP1], site.links[DP2]

        # -- create ------------------------------------------------------------------------
        pkg = await h.create_package("Dummy1", src, site=SITE)
        assert re.fullmatch(r"PS1[0-9A-F]{5}", pkg.pkg_id)
        assert await h.wait(pkg, timeout=TIMEOUT) == []  # no DP targeted yet
        row = await package_row(db, pkg.pkg_id)
        assert row is not None
        # "~SourceVersion (1) ... StoredPkgVersion (1)"; the Action is reset once processed
        assert (row["source_version"], row["stored_version"], row["action"]) == (1, 1, 0)
        manifest = site.library.manifest(f"{pkg.pkg_id}.1")
        assert row["hash"] == manifest.content_hash
        assert sorted(f.path for f in manifest.files) == sorted(read_tree(src))
        assert await message_ids(db, pkg.pkg_id) == [2300, 2376, 2301]
        assert await server_rows(db, pkg.pkg_id) == {}
        assert await dp_status_rows(db, pkg.pkg_id) == {}

        # -- distribute to 2 DPs -----------------------------------------------------------
        mark = await last_seq(db, "StatusMessages")
        await h.distribute(pkg, [DP1, DP2])
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.dp, s.state, s.version, s.last_message) for s in status] == [
            (DP1, "Installed", 1, 2330),
            (DP2, "Installed", 1, 2330),
        ]
        servers = await server_rows(db, pkg.pkg_id)
        assert sorted(servers) == sorted([nal(DP1), nal(DP2)])
        for server in servers.values():
            # inserted with Action 2, then "update PkgServers_L set UpdateMask = 0,
            # Action = 0, RefreshTrigger = 0, LastRefresh = N'<now>'" by the DP thread
            assert server["action"] == 0
            assert server["refresh_trigger"] == 0
            assert server["update_mask"] == 0
            assert server["last_refresh"] != DEFAULT_LAST_REFRESH
            assert (server["site_code"], server["source_site"]) == (SITE, SITE)
            assert server["site_name"] == "Primary Site 1"
        dp_ids = {nal(dp): await dp_id(db, dp) for dp in (DP1, DP2)}
        jobs = await job_log(db, pkg.pkg_id)
        inserted = [j for j in jobs if j.op == "insert"]
        # "insert into DistributionJobs (DPID,PkgID,PackageVersion,State,CreationTime,Action)
        #  values(35,N'PackageID',1,0,N'2016/05/16 15:26:58',1)"
        assert sorted(j.dp_id for j in inserted) == sorted(dp_ids.values())
        for j in inserted:
            assert (j.version, j.state, j.action) == (1, 0, 1)
            assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", str(j.created))
        assert sorted(j.job_id for j in jobs if j.op == "delete") == sorted(
            j.job_id for j in inserted
        )
        assert await db.distribution_jobs() == []
        rows = await dp_status_rows(db, pkg.pkg_id)
        assert rows == {nal(dp): installed_status(pkg.pkg_id, dp, 1) for dp in (DP1, DP2)}
        for dp in (DP1, DP2):
            assert await message_ids(db, pkg.pkg_id, dp, since=mark) == [2357, 8200, 8210, 2330]
            assert filelib(dp_library_root(h, dp)) == sorted(manifest.hashes())
            assert staged_files(h, dp) == []
        assert await message_ids(db, pkg.pkg_id, since=mark) == []  # no package processing
        await assert_extracts_identical(h, pkg, [DP1, DP2], src, out)

        # -- update: a file added, two changed (one a little, by delta), one removed -------
        (src / "docs" / "old.txt").unlink()
        (src / "docs" / "new.txt").write_bytes(b"added in version 2\n")
        (src / "docs" / "readme.txt").write_bytes(b"version 2 notes\n" * 100)
        (src / "bin" / "app.bin").write_bytes(_changed_a_little(big))
        mark = await last_seq(db, "StatusMessages")
        jobs_mark = await last_seq(db, "TestJobLog")
        sent_before = dp1_link.bytes_sent, dp2_link.bytes_sent
        await h.update(pkg)
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.dp, s.state, s.version) for s in status] == [
            (DP1, "Installed", 2),
            (DP2, "Installed", 2),
        ]
        row = await package_row(db, pkg.pkg_id)
        assert row is not None
        assert (row["source_version"], row["stored_version"], row["action"]) == (2, 2, 0)
        assert (row["update_mask"], row["update_mask_ex"]) == (0, 0)
        manifest2 = site.library.manifest(f"{pkg.pkg_id}.2")
        dropped = set(manifest.hashes()) - set(manifest2.hashes())
        assert len(dropped) == 3  # old.txt, and readme.txt and app.bin as they were
        assert row["hash"] == manifest2.content_hash != manifest.content_hash
        # 2376, 2311, the DP threads' 2357s, then 2301 when the processing thread exits
        assert await message_ids(db, pkg.pkg_id, since=mark) == [2376, 2311, 2301]
        every = await message_ids(db, pkg.pkg_id, ANY_DP, since=mark)
        assert [m for m in every if m in (2376, 2311, 2357, 2301)] == [
            2376,
            2311,
            2357,
            2357,
            2301,
        ], every
        for dp in (DP1, DP2):
            assert await message_ids(db, pkg.pkg_id, dp, since=mark) == [2357, 8200, 8210, 2330]
        new_jobs = await job_log(db, pkg.pkg_id, after=jobs_mark)
        assert sorted((j.op, j.version, j.action) for j in new_jobs) == [
            ("delete", 2, 1),
            ("delete", 2, 1),
            ("insert", 2, 1),
            ("insert", 2, 1),
        ]
        assert await db.distribution_jobs() == []
        rows = await dp_status_rows(db, pkg.pkg_id)
        assert rows == {nal(dp): installed_status(pkg.pkg_id, dp, 2) for dp in (DP1, DP2)}
        # the 1 MiB file went as a delta: a few KiB cross each link, not the whole file
        assert "Sending delta of bin/app.bin" in log_text(h, "PkgXferMgr.log")
        for link, before in zip((dp1_link, dp2_link), sent_before, strict=True):
            assert 0 < link.bytes_sent - before < BIG // 8
        for dp in (DP1, DP2):
            library = h.servers[SITE].dp_library(dp)
            assert library is not None
            assert library.content_ids(pkg.pkg_id) == [f"{pkg.pkg_id}.2"]
            # the files version 2 dropped (old.txt, the old app.bin and readme) are gone
            assert filelib(library.root) == sorted(manifest2.hashes())
            assert not dropped & set(filelib(library.root))
            assert staged_files(h, dp) == []
        await assert_extracts_identical(h, pkg, [DP1, DP2], src, out)

        # -- redistribute to DP1: every file again (Redistribute=1), Action 2 ---------------
        mark = await last_seq(db, "StatusMessages")
        jobs_mark = await last_seq(db, "TestJobLog")
        sent_before = dp1_link.bytes_sent, dp2_link.bytes_sent
        await h.redistribute(pkg, DP1)
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.dp, s.state, s.version) for s in status] == [
            (DP1, "Installed", 2),
            (DP2, "Installed", 2),
        ]
        assert dp1_link.bytes_sent - sent_before[0] >= manifest2.size
        assert dp2_link.bytes_sent == sent_before[1]
        assert "Redistribute=1" in log_text(h, "PkgXferMgr.log")
        new_jobs = await job_log(db, pkg.pkg_id, after=jobs_mark)
        assert [(j.op, j.dp_id, j.version, j.action) for j in new_jobs] == [
            ("insert", dp_ids[nal(DP1)], 2, 2),
            ("delete", dp_ids[nal(DP1)], 2, 2),
        ]
        servers = await server_rows(db, pkg.pkg_id)
        assert servers[nal(DP1)]["refresh_trigger"] == 0
        assert servers[nal(DP1)]["action"] == 0
        assert await message_ids(db, pkg.pkg_id, DP1, since=mark) == [2357, 8200, 8210, 2330]
        assert await message_ids(db, pkg.pkg_id, DP2, since=mark) == []
        assert await dp_status_rows(db, pkg.pkg_id) == {
            nal(dp): installed_status(pkg.pkg_id, dp, 2) for dp in (DP1, DP2)
        }
        await assert_extracts_identical(h, pkg, [DP1, DP2], src, out)

        # -- remove from DP2 ---------------------------------------------------------------
        mark = await last_seq(db, "StatusMessages")
        jobs_mark = await last_seq(db, "TestJobLog")
        await h.remove(pkg, [DP2])
        status = await h.wait(pkg, timeout=TIMEOUT)
        assert [(s.dp, s.state, s.version) for s in status] == [
            (DP1, "Installed", 2),
            (DP2, "Removed", 0),
        ]
        assert sorted(await server_rows(db, pkg.pkg_id)) == [nal(DP1)]
        rows = await dp_status_rows(db, pkg.pkg_id)
        assert rows[nal(DP2)]["status"] == 6
        assert rows[nal(DP1)] == installed_status(pkg.pkg_id, DP1, 2)
        assert [
            (j.op, j.dp_id, j.action) for j in await job_log(db, pkg.pkg_id, after=jobs_mark)
        ] == [("insert", dp_ids[nal(DP2)], 5), ("delete", dp_ids[nal(DP2)], 5)]
        assert await message_ids(db, pkg.pkg_id, DP2, since=mark) == [2332]
        assert await message_ids(db, pkg.pkg_id, DP1, since=mark) == []
        assert filelib(dp_library_root(h, DP2)) == []
        assert filelib(dp_library_root(h, DP1)) == sorted(manifest2.hashes())
        with pytest.raises(UnknownDistributionPoint, match="holds no content"):
            await h.extract(pkg, DP2, out / "removed")
        await assert_extracts_identical(h, pkg, [DP1], src, out)

        # -- delete ------------------------------------------------------------------------
        mark = await last_seq(db, "StatusMessages")
        await h.delete(pkg, timeout=TIMEOUT)
        assert await package_row(db, pkg.pkg_id) is None
        assert await server_rows(db, pkg.pkg_id) == {}
        assert await db.pkg_status(pkg.pkg_id) == []
        assert await db.package_contents(pkg.pkg_id) == []
        assert await db.distribution_jobs() == []
        assert await message_ids(db, pkg.pkg_id, DP1, since=mark) == [2332]
        for dp in (DP1, DP2):
            assert filelib(dp_library_root(h, dp)) == []
        assert site.library.content_ids(pkg.pkg_id) == []
        assert filelib(site.library.root) == []
        with pytest.raises(UnknownPackage):
            await h.content_status(pkg)
