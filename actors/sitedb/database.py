"""A site database: one SQLite file per site server, WAL, one writer, aiosqlite readers."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import anyio

from actors.config import HierarchyConfig
from actors.errors import SiteDatabaseError
from actors.sitedb import _audit
from actors.sitedb._times import product_time
from actors.sitedb._writer import SiteDatabaseClosed, WriteOp, Writer
from actors.sitedb.enums import (
    JobAction,
    JobState,
    PackageAction,
    PkgStatusType,
    PkgStatusValue,
    ServerAction,
    SiteType,
)
from actors.sitedb.rows import (
    ChangeNotification,
    ContentRows,
    DistributionJobRow,
    DistributionPointRow,
    DPTransferBytesRow,
    MiniJobRow,
    PackageContentRow,
    PackageRow,
    PkgServerRow,
    PkgStatusRow,
    PullDPResponseRow,
    PullResponseDetail,
    ReplicationRecord,
    SiteRow,
    StatusMessageRow,
    WorkLeft,
)
from actors.sitedb.schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["SMSDBMON_CONSUMER", "SiteDatabase"]

T = TypeVar("T")

SMSDBMON_CONSUMER = "SMS_DATABASE_NOTIFICATION_MONITOR"

_MAX_ROW_ID = 2**63 - 1

_SITE_TYPES = {"cas": SiteType.CAS, "primary": SiteType.PRIMARY, "secondary": SiteType.SECONDARY}

_PACKAGE_COLS = (
    "PkgID, Name, Source, SourceSite, SourceVersion, SourceDate, StoredPkgPath, StoredPkgVersion,"
    " Hash, NewHash, Priority, PkgFlags, ShareType, PackageType, UpdateMask, UpdateMaskEx,"
    " Action, SourceSize, SourceCompSize, ActionSeq"
)
_DP_COLS = "DPID, NALPath, ServerName, SiteCode, IsPullDP, IsSiteServer, MaxActiveJobs, Priority"
_SERVER_COLS = (
    "PkgID, NALPath, SiteCode, SiteName, SourceSite, LastRefresh, RefreshTrigger, UpdateMask,"
    " Action"
)
_JOB_COLS = (
    "JobID, DPID, PkgID, PackageVersion, State, Action, SendAction, CreationTime,"
    " LastUpdateTime, FailureCount, RestartTime, BytesFull, BytesDelta"
)
_STATUS_COLS = (
    "PKID, ID, Type, SiteCode, PkgServer, Status, UpdateTime, Location, ShareName, HTTPUrl,"
    " SourceVersion, Personality, State, SigURL, SigLocation"
)
_NOTIFICATION_COLS = "RowID, TableName, Operation, Rule, Key, Key2, Arg1, Arg2, Arg3, Arg4"


def _connect_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection, after :func:`_check_database`: WAL mode and migrations
    write, so a file that is not a sound site database is refused before either runs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        _check_database(conn, path, read_only=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of the process (not a power cut) without an
        # fsync per commit. Durable enough for a simulation; group commit keeps FULL affordable.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: Path, uri: str) -> sqlite3.Connection:
    """A connection that cannot write or create the file (``uri`` from
    :func:`_read_only_uri`), checked."""
    problem = _file_problem(path)
    if problem is not None:
        raise SiteDatabaseError(str(path), problem)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        _check_database(conn, path, read_only=True)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_only_uri(path: Path, *, quiet: bool = False) -> str:
    """``mode=ro``: SQLite never writes nor creates the file. ``quiet`` (``immutable=1``):
    no locks and no ``-wal``/``-shm`` companions created either, so it works on a read-only
    mount. Only for a file no connection has open (:func:`_unused`): SQLite trusts that it
    does not change while read."""
    return f"{path.resolve().as_uri()}?mode=ro{'&immutable=1' if quiet else ''}"


def _unused(path: Path) -> bool:
    """No connection has the (WAL mode) database open: the first to open it creates its
    ``-wal`` file and the last to close it removes it. A crash leaves the ``-wal``, and its
    frames must be read, so then it counts as in use."""
    return not Path(f"{path}-wal").exists()


def _file_problem(path: Path) -> str | None:
    """What makes ``path`` no database to read, seen before SQLite opens it (SQLite says
    "unable to open database file" for a missing file and "disk I/O error" for a folder)."""
    if path.is_dir():
        return "is a folder, not a database file"
    if not path.exists():
        return "does not exist"
    if path.stat().st_size == 0:
        return "is empty (0 bytes): it holds no site database"
    return None


def _check_database(conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
    """Refuse a damaged file, another program's database and a schema this code cannot use.

    ``quick_check`` reads every page (O(size), once per open): a truncated or overwritten
    file fails here, naming the file, instead of half way through a run."""
    rows = conn.execute("PRAGMA quick_check").fetchall()
    if rows != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in rows[:3])
        raise SiteDatabaseError(str(path), f"damaged (integrity check: {detail})")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "SchemaVersion" not in tables:
        if read_only or tables:
            what = "holds no site database schema" if not tables else "is not a site database"
            raise SiteDatabaseError(str(path), f"{what} (no SchemaVersion table)")
        return  # a new database: the migrations create the schema
    _check_schema_version(conn, path, read_only=read_only)


def _check_schema_version(conn: sqlite3.Connection, path: Path, *, read_only: bool) -> int:
    (current,) = conn.execute("SELECT COALESCE(MAX(Version), 0) FROM SchemaVersion").fetchone()
    if current > SCHEMA_VERSION:
        raise SiteDatabaseError(
            str(path),
            f"schema version {current} is newer than this code's ({SCHEMA_VERSION}):"
            " open it with the cmdist that wrote it",
        )
    if read_only and current < SCHEMA_VERSION:
        raise SiteDatabaseError(
            str(path),
            f"schema version {current} is older than this code's ({SCHEMA_VERSION});"
            " a read-only open cannot migrate it: open it once read-write",
        )
    return int(current)


def _db_path(conn: sqlite3.Connection) -> Path:
    """The file of a connection's main database (for error messages)."""
    return Path(next(r[2] for r in conn.execute("PRAGMA database_list") if r[1] == "main"))


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS SchemaVersion (Version INTEGER PRIMARY KEY, AppliedTime TEXT)"
    )
    current = _check_schema_version(conn, _db_path(conn), read_only=False)
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


def _open_writable(path: Path, hierarchy: HierarchyConfig | None) -> sqlite3.Connection:
    """The writer's connection, migrated and seeded, in one worker-thread hop, before any
    task group runs: a failure here is one :class:`SiteDatabaseError`, never a group."""
    with _refusing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise SiteDatabaseError(str(path), "is a folder, not a database file")
        conn = _connect_writer(path)
    try:
        with _refusing(path):
            _migrate(conn)
        if hierarchy is not None:
            with _refusing(path, "cannot record the hierarchy's sites and DPs"):
                _in_transaction(conn, _seed_op(hierarchy))
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_reader(uri: str) -> sqlite3.Connection:
    """The connection :meth:`SiteDatabase.read` uses on the event loop's thread."""
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    return conn


class _Checkpointer:
    """Copies the WAL into the database file, in a worker thread, on a connection of its
    own (opened at the first checkpoint): the writer's connection has
    ``wal_autocheckpoint`` off, so that its commits, on the event loop, never sync."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def __call__(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _open_read_only(path: Path, uri: str) -> sqlite3.Connection:
    with _refusing(path):
        return _connect_read_only(path, uri)


@contextmanager
def _refusing(path: Path, doing: str = "") -> Iterator[None]:
    """SQLite's and the file system's errors as a :class:`SiteDatabaseError` naming the
    file (the original chained)."""
    try:
        yield
    except (sqlite3.Error, OSError) as e:
        problem = f"{doing}: {e}" if doing else _sqlite_problem(e)
        raise SiteDatabaseError(str(path), problem) from e


def _sqlite_problem(e: sqlite3.Error | OSError) -> str:
    if isinstance(e, OSError):
        return f"cannot open it: {e.strerror or e}"
    text = str(e)
    if text == "file is not a database":
        return "not a SQLite database (file is not a database)"
    if "malformed" in text:
        return f"damaged ({text})"
    return f"cannot open it: {text}"


def _in_transaction(conn: sqlite3.Connection, op: WriteOp[None]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        op(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class _ReadOnlyWriter(Writer):
    """The writer of a database opened read-only: never started; every write is refused,
    naming the file, before anything reaches SQLite."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        super().__init__(conn)
        self._path = path

    async def submit(self, fn: WriteOp[T]) -> T:
        raise SiteDatabaseError(str(self._path), "opened read-only: writes are refused")


@asynccontextmanager
async def _running(writer: Writer) -> AsyncIterator[None]:
    """Run the writer for the body; the body's own error comes out as raised, not inside
    the ExceptionGroup the task group wraps it in."""
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            try:
                yield
            except BaseException as e:
                body_error = e
                raise
            finally:
                writer.close()
    except BaseExceptionGroup as group:
        if body_error is None or group.exceptions != (body_error,):
            raise
    else:
        return
    raise body_error


def _seed_op(hierarchy: HierarchyConfig) -> WriteOp[None]:
    """Write the hierarchy's sites, DPs and pull DP sources (idempotent).

    DPs are matched to their rows by NAL path, else by server name (a DP moved to another
    site); a DP new to the database gets the next free DPID. An existing DP is never
    renumbered: jobs name DPs by DPID. A DP gone from the file keeps its row, since jobs
    and status rows may still name it."""
    sites = [
        (s.code, s.name or s.code, int(_SITE_TYPES[s.type]), s.parent or "", s.server)
        for s in hierarchy.sites
    ]
    servers = {s.server.upper() for s in hierarchy.sites}
    dps = [
        (
            d.nal_path,
            d.name,
            d.site,
            int(d.pull),
            int(d.name.upper() in servers),
            d.max_active_jobs
            if d.max_active_jobs is not None
            else (hierarchy.settings.pulldp_max_active_jobs if d.pull else None),
            d.priority,
        )
        for d in hierarchy.dps
    ]
    sources = [(d.name, src, rank + 1) for d in hierarchy.dps for rank, src in enumerate(d.sources)]

    def op(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO Sites (SiteCode, SiteName, Type, ReportToSite, SiteServer)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (SiteCode) DO UPDATE SET"
            " SiteName = excluded.SiteName, Type = excluded.Type,"
            " ReportToSite = excluded.ReportToSite, SiteServer = excluded.SiteServer",
            sites,
        )
        for row in dps:
            _upsert_dp(conn, row)
        # the file's list replaces each of its DPs' sources (and a DP no longer pull has none)
        conn.executemany(
            "DELETE FROM PullDPMap WHERE PullDPServerName = ?", [(d.name,) for d in hierarchy.dps]
        )
        conn.executemany(
            "INSERT INTO PullDPMap (PullDPServerName, SourceDPServerName, Rank) VALUES (?, ?, ?)",
            sources,
        )

    return op


def _log_tails(conn: sqlite3.Connection) -> tuple[int, int]:
    """The highest RowID of ``TableChangeNotifications`` and of ``DrsLog`` (0: none), in
    one statement: it runs after every commit."""
    row = conn.execute(
        "SELECT (SELECT MAX(RowID) FROM TableChangeNotifications), (SELECT MAX(RowID) FROM DrsLog)"
    ).fetchone()
    return int(row[0] or 0), int(row[1] or 0)


def _upsert_dp(conn: sqlite3.Connection, values: tuple[Any, ...]) -> None:
    nal, name = values[0], values[1]
    found = (
        conn.execute("SELECT DPID FROM DistributionPoints WHERE NALPath = ?", (nal,)).fetchone()
        or conn.execute(
            "SELECT DPID FROM DistributionPoints WHERE ServerName = ?", (name,)
        ).fetchone()
    )
    if found is None:
        conn.execute(
            f"INSERT INTO DistributionPoints ({_DP_COLS}) VALUES"
            " ((SELECT COALESCE(MAX(DPID), 0) + 1 FROM DistributionPoints), ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    else:
        conn.execute(
            "UPDATE DistributionPoints SET NALPath = ?, ServerName = ?, SiteCode = ?,"
            " IsPullDP = ?, IsSiteServer = ?, MaxActiveJobs = ?, Priority = ? WHERE DPID = ?",
            (*values, found[0]),
        )


_PACKAGE_SQL = f"SELECT {_PACKAGE_COLS} FROM SMSPackages WHERE PkgID = ?"
_PKG_STATUS_SQL = (
    f"SELECT {_STATUS_COLS} FROM PkgStatus WHERE ID = ? ORDER BY Type, SiteCode, PkgServer"
)
_SENT_SQL = (
    "SELECT PkgID, NALPath, Version, BytesFull, BytesDelta FROM DPTransferBytes"
    " WHERE PkgID = ? ORDER BY NALPath"
)
_BUSY_SQL = "SELECT DPID FROM DistributionJobs WHERE PkgID = ? AND State <> ?"
_PERCENT_SQL = (
    "SELECT DPID, PullPercent FROM DistributionJobs WHERE PkgID = ? AND State <> ?"
    " AND PullPercent IS NOT NULL ORDER BY PackageVersion"
)
_LAST_MESSAGE_SQL = (
    "SELECT m.RecordID FROM StatusMessages m"
    " JOIN StatusMessageAttributes p ON p.RecordID = m.RecordID AND p.AttributeID = 400"
    " LEFT JOIN StatusMessageAttributes d ON d.RecordID = m.RecordID AND d.AttributeID = 404"
    " WHERE p.AttributeValue = ? AND (d.AttributeValue = ?"
    " OR (d.RecordID IS NULL AND m.Severity = 'E'))"
    " ORDER BY m.RecordID DESC LIMIT 1"
)


def _package_and_servers(
    conn: sqlite3.Connection, *, pkg_id: str
) -> tuple[PackageRow | None, list[PkgServerRow]]:
    row = conn.execute(_PACKAGE_SQL, (pkg_id,)).fetchone()
    servers = [_pkg_server(r) for r in conn.execute(*_pkg_servers_query(pkg_id, None))]
    return (None if row is None else _package(row)), servers


def _pkg_servers_query(pkg_id: str, site_code: str | None) -> tuple[str, tuple[str, ...]]:
    sql = f"SELECT {_SERVER_COLS} FROM PkgServers WHERE PkgID = ?"
    args: tuple[str, ...] = (pkg_id,)
    if site_code is not None:
        sql += " AND SiteCode = ?"
        args += (site_code,)
    return sql + " ORDER BY NALPath", args


def _status_messages(
    conn: sqlite3.Connection, *, since_record: int, limit: int
) -> list[StatusMessageRow]:
    rows = conn.execute(
        "SELECT RecordID, MessageID, Severity, Component, SiteCode, MachineName, Time,"
        " InsStrings FROM StatusMessages WHERE RecordID > ? ORDER BY RecordID LIMIT ?",
        (since_record, limit),
    ).fetchall()
    last = rows[-1][0] if rows else since_record
    attrs: dict[int, dict[int, str]] = {}
    for rid, aid, value in conn.execute(
        "SELECT RecordID, AttributeID, AttributeValue FROM StatusMessageAttributes"
        " WHERE RecordID > ? AND RecordID <= ? ORDER BY RecordID, rowid",
        (since_record, last),
    ):
        attrs.setdefault(rid, {})[aid] = value
    return [
        StatusMessageRow(
            rid, mid, sev, comp, site, system, when, tuple(json.loads(ins)), attrs.get(rid, {})
        )
        for rid, mid, sev, comp, site, system, when, ins in rows
    ]


def _last_message(
    conn: sqlite3.Connection, *, pkg_id: str, nal_path: str
) -> StatusMessageRow | None:
    found = conn.execute(_LAST_MESSAGE_SQL, (pkg_id, nal_path)).fetchone()
    if found is None:
        return None
    rows = _status_messages(conn, since_record=int(found[0]) - 1, limit=1)
    return rows[0] if rows else None


def _content_rows(conn: sqlite3.Connection, *, pkg_id: str, site_code: str) -> ContentRows:
    status = tuple(
        row
        for row in map(_pkg_status, conn.execute(_PKG_STATUS_SQL, (pkg_id,)))
        if row.type == PkgStatusType.DP and row.site_code == site_code
    )
    servers = tuple(map(_pkg_server, conn.execute(*_pkg_servers_query(pkg_id, site_code))))
    open_jobs = (pkg_id, int(JobState.FAILED))
    nals = sorted({r.pkg_server for r in status} | {s.nal_path for s in servers})
    messages = {nal: _last_message(conn, pkg_id=pkg_id, nal_path=nal) for nal in nals}
    return ContentRows(
        status=status,
        servers=servers,
        busy=frozenset(int(r[0]) for r in conn.execute(_BUSY_SQL, open_jobs)),
        sent=tuple(DPTransferBytesRow(*r) for r in conn.execute(_SENT_SQL, (pkg_id,))),
        percents={int(r[0]): int(r[1]) for r in conn.execute(_PERCENT_SQL, open_jobs)},
        messages={nal: m for nal, m in messages.items() if m is not None},
    )


_MINIJOB_COLS = (
    "JobID, PkgID, Version, DestSite, FinalSite, TransferRoot, Priority, State,"
    " SendRequestID, Size, Attempts, BaseVersion"
)


class SiteDatabase:
    """Open with ``async with SiteDatabase.open(path, hierarchy=h) as db``.

    Every write goes through :meth:`write` (the single writer, group commit); reads see
    committed data only, on read-only connections: bounded ones (:meth:`read`) on the
    event loop's thread, scans (:meth:`scan`) on aiosqlite's.
    """

    def __init__(
        self,
        path: Path,
        writer: Writer,
        looped: sqlite3.Connection,
        reader: aiosqlite.Connection,
    ) -> None:
        self.path = path
        self._writer = writer
        self._looped = looped
        self._reader = reader
        self.closed = False
        """True once the database is closed: a read then raises SiteDatabaseClosed."""
        # DistributionPoints changes only in seed(): its rows are read on every job.
        self._dp_rows: dict[str | int, DistributionPointRow | None] = {}
        self._notification_listeners: list[Callable[[int], None]] = []
        self._replication_listeners: list[Callable[[int], None]] = []

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        *,
        hierarchy: HierarchyConfig | None = None,
        max_batch: int = 1000,
        read_only: bool = False,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> AsyncIterator[SiteDatabase]:
        """Open (creating, migrating and seeding with ``hierarchy``) a site database.

        ``read_only``: for tools that look at a data root (``cmdist status``, ``check``):
        the file is never created, migrated, seeded or written; writes raise
        :class:`~actors.errors.SiteDatabaseError`. A file that cannot be used (missing or
        empty when read-only, a folder, not a database, damaged, a schema this code cannot
        use) raises :class:`~actors.errors.SiteDatabaseError` naming it, the SQLite error
        chained, and nothing is written to it.

        ``clock``: the hierarchy's wall clock, which stamps what triggers write
        (``PkgNotification.TimeKey``); the system's UTC time without one."""
        path = Path(path)
        if read_only:
            uri = _read_only_uri(path, quiet=_unused(path))
            conn = await anyio.to_thread.run_sync(_open_read_only, path, uri)
        else:
            uri = _read_only_uri(path)
            conn = await anyio.to_thread.run_sync(_open_writable, path, hierarchy)
        db: SiteDatabase | None = None
        checkpointer = _Checkpointer(path)
        looped: sqlite3.Connection | None = None
        try:
            with _refusing(path):
                looped = await anyio.to_thread.run_sync(_connect_reader, uri)
                reader = await aiosqlite.connect(uri, uri=True, isolation_level=None)
            try:
                await reader.execute("PRAGMA query_only=1")
                if read_only:
                    db = cls(path, _ReadOnlyWriter(conn, path), looped, reader)
                    yield db
                else:
                    writer = Writer(conn, max_batch=max_batch, clock=clock, checkpoint=checkpointer)
                    async with _running(writer):
                        db = cls(path, writer, looped, reader)
                        yield db
            finally:
                if db is not None:
                    db.closed = True
                await reader.close()
        finally:
            if looped is not None:
                looped.close()
            checkpointer.close()  # quick: the writer's connection is still open
            conn.close()

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

    def add_notification_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(row_id)`` in the event loop after every commit, with the highest
        ``TableChangeNotifications`` RowID then (0: none): SMSDBMON reads only when a
        commit brought rows it has not delivered."""
        self._listen(self._notification_listeners, listener)

    def remove_notification_listener(self, listener: Callable[[int], None]) -> None:
        self._unlisten(self._notification_listeners, listener)

    def add_replication_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(row_id)`` in the event loop after every commit, with the highest
        ``DrsLog`` RowID then (0: none): DRS learns of new records without a read."""
        self._listen(self._replication_listeners, listener)

    def remove_replication_listener(self, listener: Callable[[int], None]) -> None:
        self._unlisten(self._replication_listeners, listener)

    def _listen(
        self, listeners: list[Callable[[int], None]], listener: Callable[[int], None]
    ) -> None:
        """One commit probe reads both logs' tails for every listener of either."""
        if not (self._notification_listeners or self._replication_listeners):
            self._writer.add_commit_probe(_log_tails, self._tails_committed)
        listeners.append(listener)

    def _unlisten(
        self, listeners: list[Callable[[int], None]], listener: Callable[[int], None]
    ) -> None:
        if listener in listeners:
            listeners.remove(listener)
        if not (self._notification_listeners or self._replication_listeners):
            self._writer.remove_commit_probe(self._tails_committed)

    def _tails_committed(self, tails: tuple[int, int]) -> None:
        notification, replication = tails
        for listener in tuple(self._notification_listeners):
            listener(notification)
        for listener in tuple(self._replication_listeners):
            listener(replication)

    @property
    def commits(self) -> int:
        """Transactions committed by the writer so far (each holds a batch of operations)."""
        return self._writer.commits

    async def seed(self, hierarchy: HierarchyConfig) -> None:
        """Write the hierarchy's sites, DPs and pull DP sources (idempotent; see
        :func:`_seed_op`). :meth:`open` seeds already when given the hierarchy."""
        await self.write(_seed_op(hierarchy))
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
        """A bounded read (a point lookup, a package's rows), on the event loop's thread."""
        return await self.read(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` in one snapshot (a read transaction), on the event loop's thread:
        for bounded reads, which take microseconds. Handing them to a thread cost more
        than the read, in hops and in GIL handovers around every statement (see the
        writer's docstring); what scans a table goes through :meth:`scan`. It does not
        yield to the event loop: it is as quick as a lookup in a dict."""
        if self.closed:
            raise SiteDatabaseClosed(f"site database {self.path} is closed")
        conn = self._looped
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def scan(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` in one snapshot on the reader's thread (aiosqlite): for reads whose
        cost grows with the database (every package, every DP row), which must not hold
        up the event loop."""
        reader = self._reader

        def run() -> T:
            conn = reader._conn  # on aiosqlite's thread, which owns the connection
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        hop = cast(Callable[[Callable[[], T]], Awaitable[T]], reader._execute)
        try:
            result = await hop(run)
        except (ValueError, sqlite3.ProgrammingError) as exc:
            if self.closed:  # what aiosqlite raises on a closed connection varies
                raise SiteDatabaseClosed(f"site database {self.path} is closed") from exc
            raise
        if self.closed:
            raise SiteDatabaseClosed(f"site database {self.path} is closed")
        return result

    async def _scan_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self.scan(lambda conn: conn.execute(sql, params).fetchall())

    async def schema_version(self) -> int:
        return int(await self.scalar("SELECT MAX(Version) FROM SchemaVersion"))

    async def sites(self) -> list[SiteRow]:
        rows = await self.fetchall(
            "SELECT SiteCode, SiteName, Type, ReportToSite, SiteServer FROM Sites ORDER BY SiteCode"
        )
        return [SiteRow(r[0], r[1], SiteType(r[2]), *r[3:]) for r in rows]

    async def package(self, pkg_id: str) -> PackageRow | None:
        row = await self.fetchone(_PACKAGE_SQL, (pkg_id,))
        return None if row is None else _package(row)

    async def package_and_servers(
        self, pkg_id: str
    ) -> tuple[PackageRow | None, list[PkgServerRow]]:
        """The package's row and its DPs' rows at every site, in one hop and one snapshot
        (what DistMgr starts a package's processing from)."""
        return await self.read(partial(_package_and_servers, pkg_id=pkg_id))

    async def packages(self, *, pending_only: bool = False) -> list[PackageRow]:
        """Every package; with ``pending_only``, those with an action for DistMgr."""
        where = " WHERE Action <> 0" if pending_only else ""
        sql = f"SELECT {_PACKAGE_COLS} FROM SMSPackages{where} ORDER BY PkgID"
        rows = await self._scan_rows(sql)
        return [_package(r) for r in rows]

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
        sql, args = _pkg_servers_query(pkg_id, site_code)
        return [_pkg_server(r) for r in await self.fetchall(sql, args)]

    async def distribution_job(self, job_id: int) -> DistributionJobRow | None:
        row = await self.fetchone(
            f"SELECT {_JOB_COLS} FROM DistributionJobs WHERE JobID = ?", (job_id,)
        )
        return None if row is None else _job(row)

    async def distribution_job_superseded(
        self, job_id: int
    ) -> tuple[DistributionJobRow, bool, PackageRow | None] | None:
        """The job, whether a newer job of the same DP and package exists, and the job's
        package (None: deleted), in one read: what a sending thread starts from."""
        job_cols = ", ".join(f"j.{c.strip()}" for c in _JOB_COLS.split(","))
        pkg_cols = ", ".join(f"p.{c.strip()}" for c in _PACKAGE_COLS.split(","))
        row = await self.fetchone(
            f"SELECT {job_cols}, EXISTS (SELECT 1 FROM DistributionJobs n WHERE n.DPID = j.DPID"
            " AND n.PkgID = j.PkgID AND n.JobID > j.JobID),"
            f" {pkg_cols} FROM DistributionJobs j LEFT JOIN SMSPackages p ON p.PkgID = j.PkgID"
            " WHERE j.JobID = ?",
            (job_id,),
        )
        if row is None:
            return None
        n = _JOB_COLS.count(",") + 1
        package = None if row[n + 1] is None else _package(row[n + 1 :])
        return _job(row[:n]), bool(row[n]), package

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
        rows = await self._scan_rows(
            f"SELECT {_JOB_COLS} FROM DistributionJobs{where} ORDER BY JobID", args
        )
        return [_job(r) for r in rows]

    async def pkg_status(self, pkg_id: str) -> list[PkgStatusRow]:
        return [_pkg_status(r) for r in await self.fetchall(_PKG_STATUS_SQL, (pkg_id,))]

    async def pull_dp_response(self, pkg_status_id: int) -> list[PullDPResponseRow]:
        rows = await self.fetchall(
            "SELECT PkgStatusID, MessageTime, PkgVersion, ActionState, ActionData"
            " FROM PullDPResponse WHERE PkgStatusID = ? ORDER BY MessageTime",
            (pkg_status_id,),
        )
        return [PullDPResponseRow(*r) for r in rows]

    async def pull_response_detail(self, pkg_status_id: int) -> list[PullResponseDetail]:
        """The reference's query for a ``<PkgStatusID>.PUL``, oldest message first."""
        rows = await self.fetchall(
            "select s.ID, s.PkgServer, s.SiteCode, p.StoredPkgVersion, s.Status, r.PkgVersion,"
            " r.ActionState, r.ActionData, p.PkgFlags, p.ShareType, r.MessageTime"
            " from PullDPResponse r join PkgStatus s on r.PkgStatusID = s.PKID"
            " AND r.PkgStatusID = ? join SMSPackages p on s.ID = p.PkgID ORDER BY r.MessageTime",
            (pkg_status_id,),
        )
        return [PullResponseDetail(*r) for r in rows]

    async def dp_status_id(self, pkg_id: str, nal_path: str) -> int | None:
        """The PKID of the DP's PkgStatus row for the package (a pull DP's state message
        is keyed by it)."""
        found = await self.scalar(
            "SELECT PKID FROM PkgStatus WHERE ID = ? AND Type = 2 AND PkgServer = ?",
            (pkg_id, nal_path),
        )
        return None if found is None else int(found)

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

    async def replication_records_after(
        self, row_id: int, limit: int = 1000, *, through: int | None = None
    ) -> list[ReplicationRecord]:
        """This site's replication log after ``row_id`` (up to ``through``), in commit
        order."""
        rows = await self.fetchall(
            "SELECT RowID, TableName, Operation, RowJSON, Origin, Via FROM DrsLog"
            " WHERE RowID > ? AND RowID <= ? ORDER BY RowID LIMIT ?",
            (row_id, _MAX_ROW_ID if through is None else through, limit),
        )
        return [ReplicationRecord(*r) for r in rows]

    async def replication_last_row_id(self) -> int:
        """The highest RowID of this site's replication log (0: empty)."""
        return int(await self.scalar("SELECT MAX(RowID) FROM DrsLog") or 0)

    async def minijobs(self, *, unfinished: bool = True) -> list[MiniJobRow]:
        """The site's mini-jobs (pending or sending ones), oldest first."""
        rows = await self._scan_rows(
            f"SELECT {_MINIJOB_COLS} FROM MiniJobs"
            + (" WHERE State IN (0, 1)" if unfinished else "")
            + " ORDER BY Priority, JobID"
        )
        return [MiniJobRow(*r) for r in rows]

    async def minijob(self, job_id: int) -> MiniJobRow | None:
        row = await self.fetchone(
            f"SELECT {_MINIJOB_COLS} FROM MiniJobs WHERE JobID = ?", (job_id,)
        )
        return MiniJobRow(*row) if row else None

    async def minijob_for(self, pkg_id: str, version: int, final_site: str) -> MiniJobRow | None:
        row = await self.fetchone(
            f"SELECT {_MINIJOB_COLS} FROM MiniJobs WHERE PkgID = ? AND Version = ?"
            " AND FinalSite = ?",
            (pkg_id, version, final_site),
        )
        return MiniJobRow(*row) if row else None

    async def site_key(self, site_code: str) -> str | None:
        """A site's Ed25519 public key (hex), as DRS brought it."""
        value = await self.scalar("SELECT PublicKey FROM SiteKeys WHERE SiteCode = ?", (site_code,))
        return None if value is None else str(value)

    async def site_version(self, pkg_id: str, site_code: str) -> int:
        """The version of the package a site reported stored (its Type 1 row; 0: none)."""
        value = await self.scalar(
            "SELECT MAX(SourceVersion) FROM PkgStatus WHERE ID = ? AND Type = 1"
            " AND SiteCode = ? AND Status = 2",
            (pkg_id, site_code),
        )
        return int(value or 0)

    async def package_file_refs(self, path: str) -> int:
        value = await self.scalar("SELECT RefCount FROM PackageFileRefs WHERE Path = ?", (path,))
        return int(value or 0)

    async def replication_position(self, peer: str, direction: str) -> int:
        """``'sent'``: how far ``peer`` acknowledged our log; ``'received'``: how far its
        log is applied here."""
        value = await self.scalar(
            "SELECT LastRowID FROM DrsPosition WHERE Peer = ? AND Direction = ?",
            (peer, direction),
        )
        return int(value or 0)

    async def position(self, consumer: str) -> int:
        value = await self.scalar(
            "SELECT LastRowID FROM SmsDbMonPosition WHERE Consumer = ?", (consumer,)
        )
        return int(value or 0)

    async def packages_with_work(self, site_code: str) -> list[str]:
        """Packages with an action for this site's DistMgr (on the package or on one of the
        site's DPs): what a previous run was told and did not finish."""
        rows = await self._scan_rows(
            "SELECT PkgID FROM SMSPackages WHERE Action <> 0 UNION"
            " SELECT PkgID FROM PkgServers WHERE SiteCode = ? AND (Action <> 0"
            " OR RefreshTrigger <> 0) ORDER BY 1",
            (site_code,),
        )
        return [str(r[0]) for r in rows]

    async def installed_packages(self, nal_path: str) -> list[str]:
        """Packages whose status on the DP is Installed (what content validation checks)."""
        rows = await self._scan_rows(
            "SELECT ID FROM PkgStatus WHERE Type = ? AND PkgServer = ? AND Status = ? ORDER BY ID",
            (int(PkgStatusType.DP), nal_path, int(PkgStatusValue.INSTALLED)),
        )
        return [str(r[0]) for r in rows]

    async def cancellable_jobs(self, dp_id: int, pkg_id: str) -> list[DistributionJobRow]:
        """The package's add and redistribute jobs on the DP that are not given up (pending,
        running or waiting for a retry): what a cancel ends, oldest first."""
        rows = await self.fetchall(
            f"SELECT {_JOB_COLS} FROM DistributionJobs WHERE DPID = ? AND PkgID = ?"
            " AND Action <> ? AND State <> ? ORDER BY JobID",
            (dp_id, pkg_id, int(JobAction.REMOVE), int(JobState.FAILED)),
        )
        return [_job(r) for r in rows]

    async def transfer_bytes(self, pkg_id: str) -> list[DPTransferBytesRow]:
        """Per DP, the bytes that crossed its link for its latest install of the package."""
        return [DPTransferBytesRow(*r) for r in await self.fetchall(_SENT_SQL, (pkg_id,))]

    async def pkg_server_count(self, pkg_id: str) -> int:
        """How many DPs (at every site) still have a row for the package."""
        return int(await self.scalar("SELECT COUNT(*) FROM PkgServers WHERE PkgID = ?", (pkg_id,)))

    async def busy_dps(self, pkg_id: str) -> set[int]:
        """DPs with an open (not given up) distribution job for the package."""
        return {int(r[0]) for r in await self.fetchall(_BUSY_SQL, (pkg_id, int(JobState.FAILED)))}

    async def pull_percent(self, pkg_id: str) -> dict[int, int]:
        """Per DP, the download percentage its open pull job last reported (none: no
        in-progress state message yet, or no open pull job)."""
        rows = await self.fetchall(_PERCENT_SQL, (pkg_id, int(JobState.FAILED)))
        return {int(r[0]): int(r[1]) for r in rows}  # (the newest version's job wins)

    async def last_message(self, pkg_id: str, nal_path: str) -> StatusMessageRow | None:
        """The latest status message about the package on the DP: one naming the DP, or an
        error about the whole package (nothing then reaches the DP), in one hop."""
        return await self.read(partial(_last_message, pkg_id=pkg_id, nal_path=nal_path))

    async def content_rows(self, pkg_id: str, site_code: str) -> ContentRows:
        """What the package's content status on the site's DPs is made of, in one hop and
        one snapshot (a job deleted and its final status stored in one commit are seen
        together)."""
        return await self.read(partial(_content_rows, pkg_id=pkg_id, site_code=site_code))

    async def status_messages(
        self, since_record: int = 0, limit: int = -1
    ) -> list[StatusMessageRow]:
        """Status messages after ``since_record``, oldest first (at most ``limit``)."""
        return await self.scan(partial(_status_messages, since_record=since_record, limit=limit))

    # -- what ``cmdist check`` asks --------------------------------------------------------

    async def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``["ok"]`` for a sound file."""
        return [str(r[0]) for r in await self._scan_rows("PRAGMA integrity_check")]

    async def installed_dp_rows(self, site_code: str) -> list[tuple[str, str, int, bool]]:
        """(PkgID, NAL path, stored version, work pending) of every Installed DP row."""
        rows = await self._scan_rows(_audit._INSTALLED_ROWS, (site_code,))
        return [(str(p), str(n), int(v), bool(b)) for p, n, v, b in rows]

    async def orphan_rows(self) -> list[tuple[str, str, str]]:
        """(table, row, why) of every row whose package or DP is gone."""
        return [
            (table, str(row), why)
            for table, sql, why in _audit._ORPHAN_ROWS
            for (row,) in await self._scan_rows(sql)
        ]

    async def work_left(self, site_code: str) -> WorkLeft:
        """What the site still has to do, counted in one read: open jobs, mini-jobs (send
        requests) not complete, pull DP responses not processed, pending requests
        (a package's Action, this site's DPs' Action, any DP's RefreshTrigger: a
        redistribute asked here for another site's DP stays set until that site's reset
        comes back), package files still referenced, and the replication log's end."""
        rows = await self._scan_rows(
            "SELECT (SELECT COUNT(*) FROM DistributionJobs),"
            " (SELECT COUNT(*) FROM MiniJobs WHERE State <> 2),"
            " (SELECT COUNT(*) FROM PullDPResponse),"
            " (SELECT COUNT(*) FROM SMSPackages WHERE Action <> 0)"
            " + (SELECT COUNT(*) FROM PkgServers WHERE (SiteCode = ? AND Action <> 0)"
            " OR RefreshTrigger <> 0),"
            " (SELECT COUNT(*) FROM PackageFileRefs WHERE RefCount > 0),"
            " (SELECT COALESCE(MAX(RowID), 0) FROM DrsLog)",
            (site_code,),
        )
        row = rows[0]
        return WorkLeft(*(int(v) for v in row))

    async def dp_targets(self, site_code: str) -> set[tuple[str, str]]:
        """(PkgID, NAL path) pairs a DP row or an open job says the package targets."""
        rows = await self._scan_rows(_audit._TARGETS, (site_code, site_code))
        return {(str(p), str(n)) for p, n in rows}


def _job(row: tuple[Any, ...]) -> DistributionJobRow:
    values = list(row)
    values[4], values[5] = JobState(values[4]), JobAction(values[5])
    return DistributionJobRow(*values)


def _pkg_status(row: tuple[Any, ...]) -> PkgStatusRow:
    values = list(row)
    values[2], values[5] = PkgStatusType(values[2]), PkgStatusValue(values[5])
    return PkgStatusRow(*values)


def _package(row: tuple[Any, ...]) -> PackageRow:
    values = list(row)
    values[16] = PackageAction(values[16])
    return PackageRow(*values)


def _pkg_server(row: tuple[Any, ...]) -> PkgServerRow:
    values = list(row)
    values[8] = ServerAction(values[8])
    return PkgServerRow(*values)


def _dp(row: tuple[Any, ...]) -> DistributionPointRow:
    dp_id, nal, server, site, pull, site_server, max_jobs, priority = row
    return DistributionPointRow(
        dp_id, nal, server, site, bool(pull), bool(site_server), max_jobs, priority
    )
