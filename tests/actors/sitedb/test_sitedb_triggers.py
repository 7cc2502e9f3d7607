"""Site database: schema, migrations, each trigger on a real file, the group-committing writer."""

from __future__ import annotations

import datetime as dt
import sqlite3
from functools import partial
from pathlib import Path

import anyio
import pytest

from actors.config import load_hierarchy, nal_path
from actors.sitedb import (
    SCHEMA_VERSION,
    SCOPES,
    JobAction,
    NotificationType,
    SiteDatabase,
    SiteDatabaseClosed,
    ops,
)
from actors.sitedb.schema import MIGRATIONS, SMSPACKAGES_COLUMNS

ROOT = Path(__file__).resolve().parents[3]
NAL = nal_path("PS1DP1.CONTOSO.COM", "PS1")


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read through an independent connection: what is really on disk (committed)."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def _insert_package(db: SiteDatabase, pkg_id: str = "PS100001", action: int = 2) -> None:
    await db.execute(
        "INSERT INTO SMSPackages (PkgID, Name, SourceSite, Priority, Action) VALUES (?,?,?,?,?)",
        (pkg_id, "Dummy1", "PS1", 2, action),
    )


def _notifications(path: Path) -> list[tuple[object, ...]]:
    return _rows(path, "SELECT PkgID, Priority, Type FROM PkgNotification ORDER BY RowID")


def _changes(path: Path) -> list[tuple[object, ...]]:
    return _rows(
        path,
        "SELECT TableName, Operation, Rule, Key, Key2, Arg1, Arg2, Arg3, Arg4"
        " FROM TableChangeNotifications ORDER BY RowID",
    )


async def test_schema_is_created_once_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    h = load_hierarchy(ROOT / "hierarchy.toml")
    for _ in range(2):  # reopening migrates nothing and seeds idempotently
        async with SiteDatabase.open(path, hierarchy=h) as db:
            assert await db.schema_version() == SCHEMA_VERSION
    assert _rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert _rows(path, "SELECT COUNT(*) FROM SchemaVersion") == [(SCHEMA_VERSION,)]
    assert len(_rows(path, "SELECT * FROM DistributionPoints")) == len(h.dps)
    dp = _rows(path, "SELECT DPID, SiteCode, IsPullDP FROM DistributionPoints WHERE NALPath = "
               f"'{nal_path('P01PDP1.CONTOSO.COM', 'P01')}'")  # fmt: skip
    assert dp == [(len(h.dps), "P01", 1)]
    assert _rows(path, "SELECT SourceDPServerName, Rank FROM PullDPMap") == [
        ("P01DP1.CONTOSO.COM", 1)
    ]
    tables = {r[0] for r in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(SCOPES) <= tables
    cols = [r[1] for r in _rows(path, "PRAGMA table_info(SMSPackages)")]
    # The reference's columns in its order, then ours (ActionSeq: DistMgr's compare and set).
    assert [*SMSPACKAGES_COLUMNS, "ActionSeq"] == cols


async def test_package_insert_notifies_new_package(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:
        await _insert_package(db)
    assert _notifications(path) == [("PS100001", 2, NotificationType.PACKAGE_NEW)]
    assert _changes(path) == [
        ("PkgNotification", "INSERT", "PkgNotify_Add", "PS100001", "", 2, 2, 1, 0)
    ]


async def test_package_update_notifies_only_when_an_action_is_set(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:
        await _insert_package(db)
        # DistMgr finishing: Action back to 0 -> nobody is told
        await db.execute("UPDATE SMSPackages SET Action = 0, Hash = 'AB' WHERE PkgID = 'PS100001'")
        # RefreshPkgSource (the reference's statement) -> Type 1
        await db.execute(
            "update SMSPackages set Source = ?, StoredPkgVersion = 1, UpdateMask = 32,"
            " UpdateMaskEx = 8388608, Action = 1 where PkgID = 'PS100001'",
            ("/src",),
        )
        # a column SMSDBMON does not watch -> nothing
        await db.execute("UPDATE SMSPackages SET Description = 'x' WHERE PkgID = 'PS100001'")
    assert _notifications(path) == [
        ("PS100001", 2, NotificationType.PACKAGE_NEW),
        ("PS100001", 2, NotificationType.PACKAGE_UPDATED),
    ]


async def test_pkgservers_insert_and_action_notify_server_change(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:
        await _insert_package(db)
        await db.execute(
            "insert into PkgServers (PkgID, NALPath, SiteCode, SiteName, SourceSite,"
            " LastRefresh, RefreshTrigger, UpdateMask, Action)"
            " values ('PS100001', ?, 'PS1', 'Primary', 'PS1', '04/10/1970 06:35:00', 0, 0, 2)",
            (NAL,),
        )
        await db.execute("UPDATE PkgServers SET Action = 0")  # the DP thread's reset
        await db.execute("UPDATE PkgServers SET RefreshTrigger = 1")  # redistribute
        await db.execute("UPDATE PkgServers SET RefreshTrigger = 0, Action = 3")  # remove
    types = [t for (_, _, t) in _notifications(path)]
    assert types == [2, 4, 4, 4]


async def test_distribution_job_and_requeue_notify_pkgxfermgr(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    h = load_hierarchy(ROOT / "hierarchy.toml")
    async with SiteDatabase.open(path, hierarchy=h) as db:
        dp = await db.distribution_point("PS1DP1.CONTOSO.COM")
        assert dp is not None
        job = await db.write(
            partial(
                ops.insert_distribution_job,
                dp=dp,
                pkg_id="PS100001",
                package_version=1,
                action=JobAction.ADD_OR_UPDATE,
                now=dt.datetime.now(dt.UTC),
            )
        )
        await db.execute("UPDATE DistributionJobs SET State = 2 WHERE JobID = ?", (job,))
        await db.execute("UPDATE DistributionJobs SET State = 0 WHERE JobID = ?", (job,))
        dp_id = dp.dp_id
    rule = ("DistributionJobs", "UPDATE", "DistributionJob_Creation", "PS100001", "")
    assert _changes(path) == [(*rule, job, dp_id, 1, 1), (*rule, job, dp_id, 1, 1)]


async def test_pull_dp_response_insert_and_update_notify(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:
        await db.execute(
            "INSERT INTO PullDPResponse (PkgStatusID, MessageTime, PkgVersion, ActionState)"
            " VALUES (72057594037928008, '2019-01-07T20:06:18', 3, 1)"
        )
        await db.execute("UPDATE PullDPResponse SET ActionState = 2")
        rows = await db.pull_dp_response(72057594037928008)
    assert [r.action_state for r in rows] == [2]
    rule = ("PullDPResponse", "PullDPResponse_UpdIns", "72057594037928008", "2019-01-07T20:06:18")
    ops = [(c[0], c[1], c[2], c[3], c[4], c[5], c[6]) for c in _changes(path)]
    assert ops == [
        (rule[0], "INSERT", *rule[1:], 3, 1),
        (rule[0], "UPDATE", *rule[1:], 3, 2),
    ]


async def test_writer_group_commits_concurrent_callers(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:
        before = db.commits

        async def one(i: int) -> None:
            await _insert_package(db, f"PS1{i:05X}")

        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(one, i)
        commits = db.commits - before
    assert _rows(path, "SELECT COUNT(*) FROM SMSPackages") == [(100,)]
    assert 1 <= commits <= 10  # batched, not one transaction per caller


async def test_notification_listener_hears_the_highest_row_after_each_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.db"
    heard: list[int] = []
    async with SiteDatabase.open(path) as db:
        db.add_notification_listener(heard.append)
        await db.save_position("test", 0)
        assert heard == [0]  # a commit without a notification row: nothing to read
        await _insert_package(db, "PS100001")  # its trigger queues a notification
        (last,) = _rows(path, "SELECT MAX(RowID) FROM TableChangeNotifications")[0]
        assert heard == [0, last]
        await db.save_position("test", int(last))  # the rows delivered go
        assert heard == [0, last, 0]
        db.remove_notification_listener(heard.append)
        await _insert_package(db, "PS100002")
        assert len(heard) == 3


async def test_failing_operation_rolls_back_alone(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO SMSPackages (PkgID, Name, SourceSite) VALUES ('X', 'x', 'PS1')"
            )
            raise ValueError("refused")

        async with anyio.create_task_group() as tg:
            tg.start_soon(_insert_package, db, "PS100001")
            with pytest.raises(ValueError, match="refused"):
                await db.write(bad)
            tg.start_soon(_insert_package, db, "PS100002")
    assert _rows(path, "SELECT PkgID FROM SMSPackages ORDER BY PkgID") == [
        ("PS100001",),
        ("PS100002",),
    ]
    assert {r[0] for r in _rows(path, "SELECT PkgID FROM PkgNotification")} == {
        "PS100001",
        "PS100002",
    }


async def test_reader_is_read_only_and_writes_after_close_are_refused(tmp_path: Path) -> None:
    async with SiteDatabase.open(tmp_path / "site.db") as db:
        with pytest.raises(sqlite3.OperationalError):
            await db.fetchall("DELETE FROM Sites")
    with pytest.raises(SiteDatabaseClosed):
        await db.execute("DELETE FROM Sites")


async def test_the_wal_is_checkpointed_off_the_event_loop(tmp_path: Path) -> None:
    """The writer's connection never checkpoints (its commits run on the event loop); the
    checkpointer does, in a worker, every ``checkpoint_every`` commits: the rows reach the
    database file itself, and the WAL does not grow without end."""
    path = tmp_path / "site.db"
    async with SiteDatabase.open(path) as db:
        size = path.stat().st_size
        for i in range(200):  # one commit each
            await _insert_package(db, f"PS1{i:05X}")
        with anyio.fail_after(10):
            while path.stat().st_size <= size:  # the checkpoint copies pages into the file
                await anyio.sleep(0.01)
        (autocheckpoint,) = db._writer._conn.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert autocheckpoint == 0
    assert _rows(path, "SELECT COUNT(*) FROM SMSPackages") == [(200,)]


def test_a_packages_jobs_are_found_through_an_index(tmp_path: Path) -> None:
    """What every ``wait`` and every sending thread asks of a package's jobs reads its
    rows alone, not every job of the site or of the DP."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE SchemaVersion (Version INTEGER PRIMARY KEY, AppliedTime TEXT)")
    for _version, script in MIGRATIONS:
        conn.executescript(script)
    for sql in (
        "SELECT DPID FROM DistributionJobs WHERE PkgID = ? AND State <> ?",
        "SELECT 1 FROM DistributionJobs WHERE DPID = ? AND PkgID = ? AND JobID > ?",
    ):
        plan = " ".join(
            r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1, 2, 3)[: sql.count("?")])
        )
        assert "DistributionJobs_PkgID" in plan, plan
