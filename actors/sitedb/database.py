"""A site database: one SQLite file per site server, WAL, one writer, aiosqlite readers."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from actors.config import HierarchyConfig
from actors.sitedb._writer import WriteOp, Writer
from actors.sitedb.enums import JobState, SiteType
from actors.sitedb.rows import (
    ChangeNotification,
    DistributionJobRow,
    DistributionPointRow,
    PackageContentRow,
    PackageRow,
    PkgServerRow,
    PkgStatusRow,
    PullDPResponseRow,
    SiteRow,
)
from actors.sitedb.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["SMSDBMON_CONSUMER", "SiteDatabase", "product_time"]

T = TypeVar("T")

SMSDBMON_CONSUMER = "SMS_DATABASE_NOTIFICATION_MONITOR"

_SITE_TYPES = {"cas": SiteType.CAS, "primary": SiteType.PRIMARY, "secondary": SiteType.SECONDARY}

_PACKAGE_COLS = (
    "PkgID, Name, Source, SourceSite, SourceVersion, SourceDate, StoredPkgPath, StoredPkgVersion,"
    " Hash, NewHash, Priority, PkgFlags, ShareType, PackageType, UpdateMask, UpdateMaskEx,"
    " Action, SourceSize, SourceCompSize"
)
_DP_COLS = "DPID, NALPath, ServerName, SiteCode, IsPullDP, IsSiteServer, MaxActiveJobs"
_SERVER_COLS = (
    "PkgID, NALPath, SiteCode, SiteName, SourceSite, LastRefresh, RefreshTrigger, UpdateMask,"
    " Action"
)
_JOB_COLS = (
    "JobID, DPID, PkgID, PackageVersion, State, Action, SendAction, CreationTime,"
    " LastUpdateTime, FailureCount, RestartTime"
)
_STATUS_COLS = (
    "PKID, ID, Type, SiteCode, PkgServer, Status, UpdateTime, Location, ShareName, HTTPUrl,"
    " SourceVersion, Personality, State, SigURL, SigLocation"
)
_NOTIFICATION_COLS = "RowID, TableName, Operation, Rule, Key, Key2, Arg1, Arg2, Arg3, Arg4"


def product_time(when: dt.datetime | None = None) -> str:
    """A timestamp as the reference's statements write it: ``2019/01/07 20:05:18`` (UTC)."""
    when = when or dt.datetime.now(dt.UTC)
    return when.strftime("%Y/%m/%d %H:%M:%S")


def _connect_writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives a crash of the process (not a power cut) without an
    # fsync per commit. Durable enough for a simulation; group commit keeps FULL affordable.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS SchemaVersion (Version INTEGER PRIMARY KEY, AppliedTime TEXT)"
    )
    (current,) = conn.execute("SELECT COALESCE(MAX(Version), 0) FROM SchemaVersion").fetchone()
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"site database schema {current} is newer than this code's")
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n"
                f"INSERT INTO SchemaVersion VALUES ({version}, '{product_time()}');\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        current = version
    return int(current)


class SiteDatabase:
    """Open with ``async with SiteDatabase.open(path, hierarchy=h) as db``.

    Every write goes through :meth:`write` (the single writer, group commit); reads run on
    a separate read-only aiosqlite connection and see committed data only.
    """

    def __init__(self, path: Path, writer: Writer, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        # DistributionPoints changes only in seed(): its rows are read on every job.
        self._dp_rows: dict[str | int, DistributionPointRow | None] = {}

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        *,
        hierarchy: HierarchyConfig | None = None,
        max_batch: int = 1000,
    ) -> AsyncIterator[SiteDatabase]:
        path = Path(path)
        await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        wconn = await anyio.to_thread.run_sync(_connect_writer, path)
        try:
            await anyio.to_thread.run_sync(_migrate, wconn)
            reader = await aiosqlite.connect(path, isolation_level=None)
            try:
                await reader.execute("PRAGMA query_only=1")
                async with anyio.create_task_group() as tg:
                    writer = Writer(wconn, max_batch=max_batch)
                    await tg.start(writer.run)
                    db = cls(path, writer, reader)
                    try:
                        if hierarchy is not None:
                            await db.seed(hierarchy)
                        yield db
                    finally:
                        writer.close()
            finally:
                await reader.close()
        finally:
            wconn.close()

    # -- writing -------------------------------------------------------------------------

    async def write(self, fn: WriteOp[T]) -> T:
        """Run ``fn(conn)`` in the writer's next transaction (in a worker thread)."""
        return await self._writer.submit(fn)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement through the writer; returns ``lastrowid``."""

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, params).lastrowid or 0

        return await self.write(op)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(sql, batch)

        await self.write(op)

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        self._writer.add_commit_listener(listener)

    def remove_commit_listener(self, listener: Callable[[], None]) -> None:
        self._writer.remove_commit_listener(listener)

    @property
    def commits(self) -> int:
        """Transactions committed by the writer so far (each holds a batch of operations)."""
        return self._writer.commits

    async def seed(self, hierarchy: HierarchyConfig) -> None:
        """Write the hierarchy's sites, DPs and pull DP sources (idempotent)."""
        sites = [
            (s.code, s.name or s.code, int(_SITE_TYPES[s.type]), s.parent or "", s.server)
            for s in hierarchy.sites
        ]
        servers = {s.server.upper() for s in hierarchy.sites}
        dps = [
            (
                i + 1,
                d.nal_path,
                d.name,
                d.site,
                int(d.pull),
                int(d.name.upper() in servers),
                d.max_active_jobs
                if d.max_active_jobs is not None
                else (hierarchy.settings.pulldp_max_active_jobs if d.pull else None),
            )
            for i, d in enumerate(hierarchy.dps)
        ]
        sources = [
            (d.name, src, rank + 1) for d in hierarchy.dps for rank, src in enumerate(d.sources)
        ]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO Sites (SiteCode, SiteName, Type, ReportToSite, SiteServer)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (SiteCode) DO UPDATE SET"
                " SiteName = excluded.SiteName, Type = excluded.Type,"
                " ReportToSite = excluded.ReportToSite, SiteServer = excluded.SiteServer",
                sites,
            )
            conn.executemany(
                f"INSERT INTO DistributionPoints ({_DP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (NALPath) DO UPDATE SET IsPullDP = excluded.IsPullDP,"
                " IsSiteServer = excluded.IsSiteServer, MaxActiveJobs = excluded.MaxActiveJobs",
                dps,
            )
            conn.executemany(
                "INSERT INTO PullDPMap (PullDPServerName, SourceDPServerName, Rank)"
                " VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET Rank = excluded.Rank",
                sources,
            )

        await self.write(op)
        self._dp_rows.clear()

    async def save_position(self, consumer: str, row_id: int) -> None:
        """Record that ``consumer`` delivered every notification up to ``row_id``, and drop
        those rows, in one transaction."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO SmsDbMonPosition (Consumer, LastRowID) VALUES (?, ?)"
                " ON CONFLICT (Consumer) DO UPDATE SET LastRowID = excluded.LastRowID"
                " WHERE excluded.LastRowID > LastRowID",
                (consumer, row_id),
            )
            conn.execute("DELETE FROM TableChangeNotifications WHERE RowID <= ?", (row_id,))

        await self.write(op)

    # -- reading -------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = await self._reader.execute_fetchall(sql, params)
        return [tuple(r) for r in rows]

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def schema_version(self) -> int:
        return int(await self.scalar("SELECT MAX(Version) FROM SchemaVersion"))

    async def sites(self) -> list[SiteRow]:
        rows = await self.fetchall(
            "SELECT SiteCode, SiteName, Type, ReportToSite, SiteServer FROM Sites ORDER BY SiteCode"
        )
        return [SiteRow(*r) for r in rows]

    async def package(self, pkg_id: str) -> PackageRow | None:
        row = await self.fetchone(
            f"SELECT {_PACKAGE_COLS} FROM SMSPackages WHERE PkgID = ?", (pkg_id,)
        )
        return None if row is None else PackageRow(*row)

    async def packages(self, *, pending_only: bool = False) -> list[PackageRow]:
        """Every package; with ``pending_only``, those with an action for DistMgr."""
        where = " WHERE Action <> 0" if pending_only else ""
        rows = await self.fetchall(f"SELECT {_PACKAGE_COLS} FROM SMSPackages{where} ORDER BY PkgID")
        return [PackageRow(*r) for r in rows]

    async def package_contents(self, pkg_id: str) -> list[PackageContentRow]:
        rows = await self.fetchall(
            "SELECT PkgID, ContentID, PackageVersion, RelatedContentID, Hash, SignatureHash, Size"
            " FROM PackageContents WHERE PkgID = ? ORDER BY PackageVersion, ContentID",
            (pkg_id,),
        )
        return [PackageContentRow(*r) for r in rows]

    async def distribution_point(self, name_or_nal: str | int) -> DistributionPointRow | None:
        """By DPID, NAL path or server name."""
        if name_or_nal in self._dp_rows:
            return self._dp_rows[name_or_nal]
        arg: str | int = name_or_nal
        if isinstance(name_or_nal, int):
            where = "DPID = ?"
        elif name_or_nal.startswith("["):
            where = "NALPath = ?"
        else:
            where = "ServerName = ?"
        row = await self.fetchone(
            f"SELECT {_DP_COLS} FROM DistributionPoints WHERE {where}", (arg,)
        )
        found = self._dp_rows[name_or_nal] = None if row is None else _dp(row)
        return found

    async def distribution_points(self, site_code: str | None = None) -> list[DistributionPointRow]:
        where, args = ("WHERE SiteCode = ?", (site_code,)) if site_code else ("", ())
        rows = await self.fetchall(
            f"SELECT {_DP_COLS} FROM DistributionPoints {where} ORDER BY DPID", args
        )
        return [_dp(r) for r in rows]

    async def pkg_servers(self, pkg_id: str, site_code: str | None = None) -> list[PkgServerRow]:
        sql = f"SELECT {_SERVER_COLS} FROM PkgServers WHERE PkgID = ?"
        args: tuple[str, ...] = (pkg_id,)
        if site_code is not None:
            sql += " AND SiteCode = ?"
            args += (site_code,)
        rows = await self.fetchall(sql + " ORDER BY NALPath", args)
        return [PkgServerRow(*r) for r in rows]

    async def distribution_job(self, job_id: int) -> DistributionJobRow | None:
        row = await self.fetchone(
            f"SELECT {_JOB_COLS} FROM DistributionJobs WHERE JobID = ?", (job_id,)
        )
        return None if row is None else DistributionJobRow(*row)

    async def distribution_job_superseded(
        self, job_id: int
    ) -> tuple[DistributionJobRow, bool] | None:
        """The job, and whether a newer job of the same DP and package exists (one read)."""
        cols = ", ".join(f"j.{c.strip()}" for c in _JOB_COLS.split(","))
        row = await self.fetchone(
            f"SELECT {cols}, EXISTS (SELECT 1 FROM DistributionJobs n WHERE n.DPID = j.DPID"
            " AND n.PkgID = j.PkgID AND n.JobID > j.JobID)"
            " FROM DistributionJobs j WHERE j.JobID = ?",
            (job_id,),
        )
        return None if row is None else (DistributionJobRow(*row[:-1]), bool(row[-1]))

    async def distribution_jobs(
        self, *, state: JobState | None = None, dp_id: int | None = None
    ) -> list[DistributionJobRow]:
        clauses, args = [], []
        if state is not None:
            clauses.append("State = ?")
            args.append(int(state))
        if dp_id is not None:
            clauses.append("DPID = ?")
            args.append(dp_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.fetchall(
            f"SELECT {_JOB_COLS} FROM DistributionJobs{where} ORDER BY JobID", args
        )
        return [DistributionJobRow(*r) for r in rows]

    async def pkg_status(self, pkg_id: str) -> list[PkgStatusRow]:
        rows = await self.fetchall(
            f"SELECT {_STATUS_COLS} FROM PkgStatus WHERE ID = ? ORDER BY Type, SiteCode, PkgServer",
            (pkg_id,),
        )
        return [PkgStatusRow(*r) for r in rows]

    async def pull_dp_response(self, pkg_status_id: int) -> list[PullDPResponseRow]:
        rows = await self.fetchall(
            "SELECT PkgStatusID, MessageTime, PkgVersion, ActionState, ActionData"
            " FROM PullDPResponse WHERE PkgStatusID = ? ORDER BY MessageTime",
            (pkg_status_id,),
        )
        return [PullDPResponseRow(*r) for r in rows]

    async def pull_dp_sources(self, pull_dp: str, content_id: str, version: int) -> list[str]:
        """The reference's phase 1 query: source DPs (best rank first) that hold the content."""
        rows = await self.fetchall(
            "SELECT p.SourceDPServerName FROM PullDPMap p INNER JOIN ContentDPMap c"
            " ON p.SourceDPServerName = c.ServerName WHERE c.AccessType = 1"
            " AND p.PullDPServerName = ? AND c.ContentID = ? AND c.Version = ? ORDER BY p.Rank",
            (pull_dp, content_id, version),
        )
        return [r[0] for r in rows]

    async def pull_dp_active_jobs(self, nal_path: str) -> int:
        """The reference's phase 2 query: jobs counting against a pull DP's capacity."""
        return int(
            await self.scalar(
                "SELECT COUNT(*) FROM DistributionJobs job JOIN DistributionPoints dp"
                " ON dp.DPID = job.DPID AND dp.NALPath = ? WHERE job.State in (2, 3, 4)"
                " AND (job.Action <> 5) AND (IFNULL(job.SendAction, '') <> '')",
                (nal_path,),
            )
        )

    async def notifications_after(self, row_id: int, limit: int = 1000) -> list[ChangeNotification]:
        rows = await self.fetchall(
            f"SELECT {_NOTIFICATION_COLS} FROM TableChangeNotifications WHERE RowID > ?"
            " ORDER BY RowID LIMIT ?",
            (row_id, limit),
        )
        return [ChangeNotification(*r) for r in rows]

    async def position(self, consumer: str) -> int:
        value = await self.scalar(
            "SELECT LastRowID FROM SmsDbMonPosition WHERE Consumer = ?", (consumer,)
        )
        return int(value or 0)


def _dp(row: tuple[Any, ...]) -> DistributionPointRow:
    dp_id, nal, server, site, pull, site_server, max_jobs = row
    return DistributionPointRow(dp_id, nal, server, site, bool(pull), bool(site_server), max_jobs)
