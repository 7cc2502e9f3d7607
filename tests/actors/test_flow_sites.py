"""Across the hierarchy: a package created at the CAS travels to DPs of other sites (the
reference's "Distribute a package to DP across sites"): DRS, the source site's mini-jobs,
Scheduler, Sender and Despooler, then each destination site's DistMgr and PkgXferMgr."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors import Hierarchy
from actors._runtime._site import SiteServer
from actors.config import HierarchyConfig, load_hierarchy
from actors.site._instruction import Instruction, SignedInstruction, SiteKey, sign
from actors.site._paths import receive_box, smspkg
from actors.status import StatusMessage, stored_messages
from bus import ManualClock
from tests.actors.flow_helpers import (
    ANY_DP,
    HIERARCHY,
    TIMEOUT,
    advance_until,
    assert_extracts_identical,
    assert_in_order,
    message_ids,
    messages,
    open_hierarchy,
    replicated,
    site_log,
    until,
    write_tree,
)

PS1DP1 = "PS1DP1.CONTOSO.COM"
PS2DP1 = "PS2DP1.CONTOSO.COM"
SS1DP1 = "SS1DP1.CONTOSO.COM"
DESTINATIONS = {"PS1": PS1DP1, "PS2": PS2DP1, "SS1": SS1DP1}
PER_SITE = [2300, 2311, 2301, 4400, 2342, 2357, 8200, 8210, 2330]


async def test_a_cas_package_reaches_dps_of_three_sites_then_updates(tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "src", {"a.txt": b"alpha\n" * 500, "b/c.bin": bytes(range(256)) * 8}
    )
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("Dummy1", src, site="CS1")
        await h.distribute(pkg, [PS1DP1, PS2DP1, SS1DP1])
        results = await h.wait(pkg, timeout=TIMEOUT)
        assert {(r.dp, r.state, r.version) for r in results} == {
            (dp, "Installed", 1) for dp in DESTINATIONS.values()
        }
        await assert_extracts_identical(h, pkg, list(DESTINATIONS.values()), src, tmp_path / "o")
        cs1 = h.servers["CS1"]
        # one PCK, two mini-jobs (PS2; SS1 through PS1): the file is hashed once
        assert cs1.scheduler is not None
        assert cs1.scheduler.files_hashed == 1
        await replicated(h)  # the sites' status rows have flowed back to the CAS
        assert await message_ids(cs1.db, pkg.pkg_id, ANY_DP) == [2300, 2376, 2301]
        for code in DESTINATIONS:
            assert await message_ids(h.servers[code].db, pkg.pkg_id, ANY_DP) == PER_SITE, code
            row = await h.servers[code].db.package(pkg.pkg_id)
            assert row is not None
            assert (row.stored_pkg_version, row.action, row.update_mask) == (1, 0, 0)
            site_rows = [r for r in await cs1.db.pkg_status(pkg.pkg_id) if r.site_code == code]
            assert {(r.type, r.status) for r in site_rows} == {(1, 2), (2, 3)}, code
        pkg_id = pkg.pkg_id
        distmgr = site_log(h, "CS1", "distmgr.log")
        assert_in_order(
            distmgr,
            [
                f"Needs to send the compressed package for package {pkg_id} to site PS2",
                "The reporting site of site PS2 is this site.",
                f"Setting CMiniJob transfer root to {smspkg(cs1.root) / f'{pkg_id}.PCK.1'}",
                f"Created minijob to send compressed copy of package {pkg_id} to site PS2.",
                "Parent site of PS2 is CS1",
            ],
        )
        # SS1's copy goes through PS1, which stores it too: one send over CS1 -> PS1
        assert_in_order(
            distmgr,
            [
                f"Needs to send the compressed package for package {pkg_id} to site SS1",
                f"Created minijob to send compressed copy of package {pkg_id} to site SS1.",
                "Parent site of SS1 is PS1",
            ],
        )
        assert f"package {pkg_id} to site PS1" not in distmgr
        assert_in_order(
            site_log(h, "CS1", "sched.log"),
            [
                "Destination site:  PS1, Preferred Address: *, Priority: 2",
                "Instruction type:  MICROSOFT|SMS|MINIJOBINSTRUCTION|PACKAGE~",
                "Created new send request ID:  ",
                "Sending completed (",
                "<JOB STATUS - COMPLETE>~",
                "Deleting send request with ID: ",
            ],
        )
        sender = site_log(h, "CS1", "sender.log")
        assert_in_order(sender, ["Checking for site-specific sending capacity.  Used 0 out of 3.~"])
        assert_in_order(sender, ["SQCS1.TMP to \\\\PS1SITE", "Sending completed successfully"])
        assert_in_order(
            site_log(h, "PS1", "despool.log"),
            [
                "Found ready instruction",
                "Signature checked out OK for instruction coming from site CS1",
                f"Extracting content {pkg_id}.1",
                f"Writing package definition for {pkg_id}",
                "Despooler successfully executed one instruction.",
            ],
        )
        assert_in_order(
            site_log(h, "PS1", "distmgr.log"), ["The Package Action is 1, the Update Mask is 160"]
        )
        # every mini-job done, every package file's count at 0 and the file deleted
        for code in ("CS1", "PS1"):
            assert await h.servers[code].db.minijobs() == []
            assert list(smspkg(h.servers[code].root).glob("*.PCK.*")) == []
        for code in DESTINATIONS:
            assert list(receive_box(h.servers[code].root).glob("*")) == []

        # an update: version 2 travels to every site, and every DP takes it
        (src / "a.txt").write_bytes(b"alpha\n" * 400 + b"beta\n")
        await h.update(pkg)
        await until(lambda: _stored(h, pkg_id, 2))
        results = await h.wait(pkg, timeout=TIMEOUT)
        assert {(r.dp, r.state, r.version) for r in results} == {
            (dp, "Installed", 2) for dp in DESTINATIONS.values()
        }
        await assert_extracts_identical(h, pkg, list(DESTINATIONS.values()), src, tmp_path / "p")
        for code in DESTINATIONS:
            row = await h.servers[code].db.package(pkg_id)
            assert row is not None
            assert (row.stored_pkg_version, row.action) == (2, 0), code
        # the changes travelled (a DLT from version 1), with 2333 naming each site sent to
        cs1_ids = [m for m in await messages(cs1.db) if m.message_id == 2333]
        assert sorted(m.strings[1] for m in cs1_ids) == ["PS2", "SS1"]  # PS1: on SS1's way
        distmgr = site_log(h, "CS1", "distmgr.log")
        assert (
            f"Setting CMiniJob transfer root to {smspkg(cs1.root) / f'{pkg_id}.DLT.1.2'}" in distmgr
        )
        assert_in_order(site_log(h, "SS1", "despool.log"), [f"Extracting content {pkg_id}.2"])


async def _stored(h: Hierarchy, pkg_id: str, version: int) -> bool:
    row = await h.servers["CS1"].db.package(pkg_id)
    return row is not None and row.stored_pkg_version == version


def _slow_replication(tmp_path: Path, delay: float, retry: float) -> HierarchyConfig:
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    settings = msgspec.structs.replace(
        cfg.settings, replication_delay=delay, despooler_retry_delay=retry
    )
    return msgspec.structs.replace(cfg, settings=settings)


async def _keys_everywhere(tmp_path: Path) -> None:
    """A first run with the default delay: every site's public key has replicated."""
    async with open_hierarchy(tmp_path) as h:

        async def keys() -> bool:
            for server in h.servers.values():
                for code in h.servers:
                    if await server.db.site_key(code) is None:
                        return False
            return True

        await until(keys)


async def test_content_before_its_package_row_is_retried_after_the_delay(tmp_path: Path) -> None:
    """The reference's race: the PCK reaches PS1 before DRS brings the package's row; the
    despooler fails with error 12 and raises 4404, retries after despooler_retry_delay,
    then stores it (4400). On a ManualClock: the row takes 10,000 clock seconds, the retry
    20,000, and the clock moves only as the test says."""
    await _keys_everywhere(tmp_path)
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha\n" * 100})
    clock = ManualClock()
    async with Hierarchy.open(_slow_replication(tmp_path, 10_000.0, 20_000.0), clock=clock) as h:
        pkg = await h.create_package("Race", src, site="CS1")
        await h.distribute(pkg, [PS1DP1])
        ps1 = h.servers["PS1"]
        box = receive_box(ps1.root)

        async def arrived() -> bool:
            return any(box.glob("*.SNI"))

        async def ids_are(*want: int) -> bool:
            return await message_ids(ps1.db, pkg.pkg_id, ANY_DP) == list(want)

        await advance_until(clock, arrived, step=0.01)  # the send (the link takes time)
        await advance_until(clock, lambda: ids_are(4404), step=1.0)  # the first poll
        assert await ps1.db.package(pkg.pkg_id) is None  # DRS has not brought it
        (msg,) = [m for m in await _messages(ps1) if m.message_id == 4404]
        assert msg.strings[:3] == (pkg.pkg_id, "1", "12")
        assert msg.severity == "W"

        async def row_arrived() -> bool:
            return await ps1.db.package(pkg.pkg_id) is not None

        # DRS brings the row at 10,000 s: PS1 knows the package (no clock needed for that),
        # its content still waits for the despooler's retry at 20,000 s
        await advance_until(clock, row_arrived, step=100.0)
        await until(lambda: ids_are(4404, 2300, 2311, 2301))
        await advance_until(clock, lambda: ids_are(4404, *PER_SITE), step=100.0)
        assert_in_order(
            site_log(h, "PS1", "despool.log"),
            [
                f"This package[{pkg.pkg_id}]'s information hasn't arrived yet for this version"
                " [1]. Retry later",
                "Despooler failed to execute the instruction, error code = 12",
                "STATMSG: ID=4404",
                "won't be processed till",
                f"Extracting content {pkg.pkg_id}.1",
                "STATMSG: ID=4400",
                "Despooler successfully executed one instruction.",
            ],
        )
        assert_in_order(
            site_log(h, "PS1", "distmgr.log"),
            [f"The contents for the package {pkg.pkg_id} hasn't arrived from site CS1 yet"],
        )
        status = await h.content_status(pkg)
        assert [(s.dp, s.state, s.version) for s in status] == [(PS1DP1, "Installed", 1)]


async def test_a_cut_send_resumes_where_it_stopped(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"r.bin": bytes(range(256)) * 64 + _random(700_000)})
    async with open_hierarchy(tmp_path) as h:
        link = h.servers["CS1"].site_link("PS1")
        link.inject_cut(300_000)
        pkg = await h.create_package("Cut", src, site="CS1")
        await h.distribute(pkg, [PS1DP1])
        results = await h.wait(pkg, timeout=TIMEOUT)
        assert [(r.state, r.version) for r in results] == [("Installed", 1)]
        await assert_extracts_identical(h, pkg, [PS1DP1], src, tmp_path / "o")
        pck_size = 700_000 + 16_384 + 2_048  # the PCK: the files, tar headers, zstd frames
        assert link.cuts == 1
        # resumed from byte 300,000: the link carried the PCK about once, not 1.4 times
        assert link.bytes_sent <= pck_size + 8_192
        assert "at position 300000" in site_log(h, "CS1", "sender.log")
        sender = h.servers["CS1"].sender
        assert sender is not None
        assert 1 <= sender.max_active_per_site <= 3
        assert 1 <= sender.max_active_total <= 5


def _random(n: int) -> bytes:
    return random.Random(n).randbytes(n)


async def test_forged_and_tampered_instructions_are_refused(tmp_path: Path) -> None:
    """An instruction signed by another key, and a package file that does not match its
    signed hash: 4405 each, both kept aside, nothing written to PS1's library."""
    await _keys_everywhere(tmp_path)
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha\n" * 100})
    async with open_hierarchy(tmp_path) as h:
        pkg = await h.create_package("Target", src, site="CS1")
        await until(lambda: _everywhere(h, pkg.pkg_id))
        cs1, ps1 = h.servers["CS1"], h.servers["PS1"]
        pck = tmp_path / "x.PCK"
        await cs1.library.write_pck(f"{pkg.pkg_id}.1", pck)
        digest = hashlib.sha256(pck.read_bytes()).hexdigest().upper()
        box = receive_box(ps1.root)
        box.mkdir(parents=True, exist_ok=True)

        def instruction(request: str, sha: str) -> Instruction:
            return Instruction(
                1, request, pkg.pkg_id, 1, "CS1", "PS1", "PS1", sha, pck.stat().st_size
            )

        forger = SiteKey(Ed25519PrivateKey.generate())
        (box / "F01SQCS1.PCK").write_bytes(pck.read_bytes())
        (box / "F01SQCS1.SNI").write_bytes(sign(forger, instruction("F01SQCS1", digest)))
        (box / "T02SQCS1.PCK").write_bytes(pck.read_bytes()[:-10] + b"0123456789")
        (box / "T02SQCS1.SNI").write_bytes(sign(cs1.key, instruction("T02SQCS1", digest)))

        async def refused() -> bool:
            ids = [m.message_id for m in await _messages(ps1)]
            return ids.count(4405) == 2

        await until(refused)
        assert sorted(p.name for p in (box / "refused").iterdir()) == [
            "F01SQCS1.PCK",
            "F01SQCS1.SNI",
            "T02SQCS1.PCK",
            "T02SQCS1.SNI",
        ]
        assert ps1.library.content_ids(pkg.pkg_id) == []
        row = await ps1.db.package(pkg.pkg_id)
        assert row is not None
        assert row.stored_pkg_version == 0
        # and the envelope really is what travels: a valid one decodes
        signed = msgspec.json.decode(
            (box / "refused" / "T02SQCS1.SNI").read_bytes(), type=SignedInstruction
        )
        assert json.loads(signed.body)["pkg_id"] == pkg.pkg_id


async def _messages(server: SiteServer) -> list[StatusMessage]:
    return await stored_messages(server.db)


async def _everywhere(h: Hierarchy, pkg_id: str) -> bool:
    for server in h.servers.values():
        if 2301 not in await message_ids(server.db, pkg_id):
            return False
    return True
