"""DRS: a change to global data at one site reaches every other site once, in order, after
``replication_delay``, across restarts; the receiving sites' triggers fire like local
writes (their DistMgr runs "Create a package" step 6); status rows flow back."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import msgspec
import pytest

from actors import Hierarchy
from actors.config import load_hierarchy
from actors.sitedb import ReplicationRecord, ServerAction, SiteDatabase, ops
from tests.actors.flow_helpers import (
    HIERARCHY,
    TIME_SCALE,
    message_ids,
    replicated,
    until,
    write_tree,
)

SITES = ("CS1", "PS1", "PS2", "P01", "SS1")


def _open(tmp_path: Path, delay: float = 120.0) -> AbstractAsyncContextManager[Hierarchy]:
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    settings = msgspec.structs.replace(cfg.settings, replication_delay=delay)
    return Hierarchy.open(msgspec.structs.replace(cfg, settings=settings), time_scale=TIME_SCALE)


async def _known_everywhere(h: Hierarchy, pkg_id: str) -> bool:
    for code in SITES:
        if 2301 not in await message_ids(h.servers[code].db, pkg_id):
            return False
    return True


async def test_a_package_created_at_the_cas_is_added_at_every_site(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha"})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Dummy1", src, site="CS1")
        await until(lambda: _known_everywhere(h, pkg.pkg_id))
        assert await message_ids(h.servers["CS1"].db, pkg.pkg_id) == [2300, 2376, 2301]
        for code in ("PS1", "PS2", "P01", "SS1"):
            db = h.servers[code].db
            # "Create a package" steps 5-6 at a receiving site: no content moves.
            assert await message_ids(db, pkg.pkg_id) == [2300, 2311, 2301], code
            row = await db.package(pkg.pkg_id)
            assert row is not None
            assert row.source_site == "CS1"
            assert row.stored_pkg_version == 0, code
            assert row.action == 0, code
            assert row.source_version == 1, code
            assert h.servers[code].library.content_ids(pkg.pkg_id) == []
        h.servers["PS1"].logs.flush()
        log = (h.servers["PS1"].root / "logs" / "distmgr.log").read_text()
        lines = [
            f"Processing package {pkg.pkg_id} (SourceVersion:1;StoredVersion:0)",
            f"Start adding package {pkg.pkg_id}...",
            "The Package Action is 2, the Update Mask is 0 and UpdateMaskEx is 0.",
            f"Successfully created/updated the package {pkg.pkg_id}",
            f"Created policy provider trigger for ID {pkg.pkg_id}",
            f"Exiting package processing thread for package {pkg.pkg_id}.",
        ]
        at = 0
        for line in lines:
            at = log.index(line, at)  # present, in this order
        h.servers["SS1"].logs.flush()
        smsdbmon = (h.servers["SS1"].root / "logs" / "smsdbmon.log").read_text()
        assert f"RCV: INSERT on PkgNotification for PkgNotify_Add [{pkg.pkg_id}]" in smsdbmon


async def test_replication_waits_for_the_delay(tmp_path: Path) -> None:
    """With a delay of a simulated day, nothing has crossed yet when the source is done."""
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha"})
    async with _open(tmp_path, delay=86_400.0) as h:
        pkg = await h.create_package("Slow", src, site="CS1")
        await until(lambda: _has(h.servers["CS1"].db, pkg.pkg_id, 2301))
        for code in ("PS1", "SS1"):
            assert await h.servers[code].db.package(pkg.pkg_id) is None


async def _has(db: SiteDatabase, pkg_id: str, message: int) -> bool:
    return message in await message_ids(db, pkg_id)


async def test_pending_records_survive_a_restart_and_apply_once(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha"})
    async with _open(tmp_path, delay=86_400.0) as h:
        pkg = await h.create_package("Pending", src, site="CS1")
        await until(lambda: _has(h.servers["CS1"].db, pkg.pkg_id, 2301))
    for _ in range(2):  # reopened twice: the second run finds everything applied
        async with _open(tmp_path) as h:
            await until(lambda: _known_everywhere(h, pkg.pkg_id))
            for code in ("PS1", "PS2", "P01", "SS1"):
                ids = await message_ids(h.servers[code].db, pkg.pkg_id)
                assert ids == [2300, 2311, 2301], code


async def test_status_rows_reach_the_source_site_and_the_cas_only(tmp_path: Path) -> None:
    """Site data (issue 12): a site's PkgStatus rows reach the package's source site and
    the CAS, not every sibling. PS1's site row of a package of PS2 goes up to CS1 and down
    to PS2; P01 and SS1 (below PS1: it came from there) never see it."""
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha"})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Back", src, site="PS2")
        await until(lambda: _known_everywhere(h, pkg.pkg_id))
        ps1 = h.servers["PS1"].db
        await ps1.write(
            lambda conn: conn.execute(
                "INSERT INTO PkgStatus (ID, Type, SiteCode, PkgServer, Status, SourceVersion)"
                " VALUES (?, 1, 'PS1', 'PS1SITE.CONTOSO.COM', 2, 1)",
                (pkg.pkg_id,),
            )
        )

        async def has_row(code: str) -> bool:
            rows = await h.servers[code].db.pkg_status(pkg.pkg_id)
            return any(r.site_code == "PS1" and r.status == 2 for r in rows)

        async def at_source_and_cas() -> bool:
            return await has_row("CS1") and await has_row("PS2")

        await until(at_source_and_cas)
        # a change replicated after it (global data, to every site) has reached P01 and
        # SS1 when they would have had the row: they did not get it
        await ps1.write(
            lambda conn: conn.execute(
                "UPDATE SMSPackages SET Description = 'later' WHERE PkgID = ?", (pkg.pkg_id,)
            )
        )

        async def later_everywhere() -> bool:
            for code in ("P01", "SS1"):
                db = h.servers[code].db
                sql = "SELECT Description FROM SMSPackages WHERE PkgID = ?"
                if await db.scalar(sql, (pkg.pkg_id,)) != "later":
                    return False
            return True

        await until(later_everywhere)
        assert not await has_row("P01")
        assert not await has_row("SS1")


def _record(row_id: int, pkg_id: str) -> ReplicationRecord:
    row = {"PkgID": pkg_id, "Name": "N", "SourceSite": "CS1", "Action": 2}
    return ReplicationRecord(row_id, "SMSPackages", "INSERT", json.dumps(row), "CS1", "")


async def test_a_batch_delivered_twice_is_applied_once(tmp_path: Path) -> None:
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    async with SiteDatabase.open(tmp_path / "site.db", hierarchy=cfg) as db:
        batch = [_record(1, "CS100001"), _record(2, "CS100002")]
        assert await db.write(lambda c: ops.apply_replication(c, "CS1", batch)) == (2, 2)
        assert await db.write(lambda c: ops.apply_replication(c, "CS1", batch)) == (2, 0)
        more = [*batch, _record(3, "CS100003")]
        assert await db.write(lambda c: ops.apply_replication(c, "CS1", more)) == (3, 1)
        assert await db.replication_position("CS1", "received") == 3
        # each applied insert fired the package trigger once
        notes = await db.notifications_after(0)
        assert [n.key for n in notes if n.rule == "PkgNotify_Add"] == [
            "CS100001",
            "CS100002",
            "CS100003",
        ]
        # and was logged for forwarding, naming where it came from
        log = await db.replication_records_after(0)
        assert [(r.origin, r.via) for r in log] == [("CS1", "CS1")] * 3


def _server_record(row_id: int, action: int, refresh: int) -> ReplicationRecord:
    row = {
        "PkgID": "CS100001",
        "NALPath": "PS1DP1",
        "SiteCode": "PS1",
        "SiteName": "",
        "SourceSite": "CS1",
        "LastRefresh": "x",
        "RefreshTrigger": refresh,
        "UpdateMask": 0,
        "Action": action,
    }
    op = "INSERT" if row_id == 1 else "UPDATE"
    return ReplicationRecord(row_id, "PkgServers", op, json.dumps(row), "CS1", "")


async def test_pkgservers_scopes_action_local_refresh_trigger_global(tmp_path: Path) -> None:
    """A DP added elsewhere arrives with Action 2; the source resetting its own Action does
    not reach the DP's site; a redistribute (RefreshTrigger) and a removal (Action 3) do."""
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")

    async def server(db: SiteDatabase) -> tuple[int, int]:
        rows = await db.pkg_servers("CS100001")
        return int(rows[0].action), int(rows[0].refresh_trigger)

    async with SiteDatabase.open(tmp_path / "site.db", hierarchy=cfg) as db:
        await db.write(lambda c: ops.apply_replication(c, "CS1", [_server_record(1, 2, 0)]))
        assert await server(db) == (2, 0)
        await db.write(lambda c: ops.apply_replication(c, "CS1", [_server_record(2, 0, 0)]))
        assert await server(db) == (2, 0)  # Action is PkgServers_L: this site's own
        await db.write(lambda c: ops.apply_replication(c, "CS1", [_server_record(3, 0, 1)]))
        assert await server(db) == (2, 1)  # a redistribute asked at the CAS reaches PS1
        await db.write(lambda c: ops.apply_replication(c, "CS1", [_server_record(4, 3, 1)]))
        assert await server(db) == (3, 1)  # and so does a removal


async def test_a_removal_asked_here_is_logged_for_the_dps_site(tmp_path: Path) -> None:
    """Action is local, but a removal request (Action 3) set here is logged for
    replication with the row (schema 7): a removal asked at the CAS reaches P01. Setting
    or resetting another action alone logs nothing."""
    cfg = load_hierarchy(HIERARCHY, root=tmp_path / "data")
    async with SiteDatabase.open(tmp_path / "site.db", hierarchy=cfg) as db:
        await db.write(lambda c: ops.apply_replication(c, "CS1", [_server_record(1, 2, 0)]))
        before = len(await db.replication_records_after(0))

        async def set_action(action: ServerAction) -> list[ReplicationRecord]:
            await db.write(lambda c: ops.set_server_actions(c, "CS100001", ["PS1DP1"], action))
            return (await db.replication_records_after(0))[before:]

        assert await set_action(ServerAction.NONE) == []
        assert await set_action(ServerAction.UPDATE) == []
        (removal,) = await set_action(ServerAction.REMOVE)
        assert (removal.table, removal.operation) == ("PkgServers", "UPDATE")
        assert json.loads(removal.row_json)["Action"] == int(ServerAction.REMOVE)
        assert (removal.origin, removal.via) == ("", "")  # asked here
        assert len(await set_action(ServerAction.REMOVE)) == 1  # unchanged: not again


class _Killed(Exception):
    pass


async def test_a_kill_with_records_pending_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """The hierarchy stopped at once (as a kill: no drain) while records wait for their
    delay: the next run replicates each change once."""
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha"})
    try:
        async with _open(tmp_path, delay=86_400.0) as h:
            pkg = await h.create_package("Killed", src, site="CS1")
            await until(lambda: _has(h.servers["CS1"].db, pkg.pkg_id, 2301))
            raise _Killed
    except _Killed:
        pass
    async with _open(tmp_path) as h:
        await until(lambda: _known_everywhere(h, pkg.pkg_id))
        await replicated(h)
        for code in ("PS1", "PS2", "P01", "SS1"):
            db = h.servers[code].db
            assert await message_ids(db, pkg.pkg_id) == [2300, 2311, 2301], code
            notes = await db.scalar(
                "SELECT COUNT(*) FROM PkgNotification WHERE PkgID = ?", (pkg.pkg_id,)
            )
            assert notes in (0, 1), code  # one insert, one notification (0: delivered)


async def test_each_record_is_read_from_the_log_once_per_neighbour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DRS knows when it first saw each record, so it reads a record when it is due, not
    once a batch until then (a busy site's log read over and over)."""
    reads: Counter[int] = Counter()
    async with _open(tmp_path, delay=60.0) as h:
        db = h.servers["CS1"].db
        real = db.replication_records_after

        async def spy(row_id: int, limit: int = 1000, **kw: int | None) -> list[ReplicationRecord]:
            records = await real(row_id, limit, **kw)
            reads.update(r.row_id for r in records)
            return records

        monkeypatch.setattr(db, "replication_records_after", spy)
        pkgs = []
        for i in range(6):  # records spread over the delay: some due, some not, at each read
            src = write_tree(tmp_path / f"src{i}", {"a.txt": b"alpha %d" % i})
            pkgs.append(await h.create_package(f"Spread{i}", src, site="CS1"))
            await h.bus.clock.sleep(15.0)
        await replicated(h)
        for pkg in pkgs:
            assert await _known_everywhere(h, pkg.pkg_id)
    neighbours = len(h.config.children("CS1"))
    assert reads
    assert max(reads.values()) <= neighbours, reads


async def test_records_every_neighbour_acknowledged_leave_the_log(tmp_path: Path) -> None:
    """The replication log does not grow without end: once every neighbour's position is
    saved past a record, the record is dropped (a restart resends from those positions)."""
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha"})
    async with _open(tmp_path) as h:
        pkg = await h.create_package("Trimmed", src, site="CS1")
        await until(lambda: _known_everywhere(h, pkg.pkg_id))
        await replicated(h)

        async def logs_empty() -> bool:
            for code in SITES:
                if await h.servers[code].db.scalar("SELECT COUNT(*) FROM DrsLog"):
                    return False
            return True

        await until(logs_empty)
    async with _open(tmp_path) as h:  # reopened: nothing is sent or applied again
        await replicated(h)
        for code in ("PS1", "SS1"):
            assert await message_ids(h.servers[code].db, pkg.pkg_id) == [2300, 2311, 2301]
