"""Helpers of the end-to-end flow tests: a running default hierarchy in a temp data root,
source trees, the site database's rows and status messages, DP content libraries.

Tests open the hierarchy inside the test (``async with open_hierarchy(tmp_path) as h``),
never in a yield-fixture (see DESIGN.md, "Known traps").
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import NamedTuple

import anyio

from actors import Hierarchy, Package
from actors.config import nal_path
from actors.sitedb import SiteDatabase
from actors.status import PKGXFERMGR, StatusMessage, stored_messages
from actors.testing import instant_links, read_tree, write_tree
from bus import ManualClock

__all__ = ["instant_links", "read_tree", "write_tree"]  # (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[2]
HIERARCHY = ROOT / "hierarchy.toml"
# 0.0001: the default 1800 s retry delay is 0.18 s of real time, every link is instant.
TIME_SCALE = 0.0001
TIMEOUT = 60.0  # real seconds a wait may take before the test fails (a safety net: a
# loaded 2-core machine has taken 20 s to bring a whole hierarchy through one flow)

SITE = "PS1"
DP1 = "PS1DP1.CONTOSO.COM"
DP2 = "PS1DP2.CONTOSO.COM"
SYS = "PS1SYS.CONTOSO.COM"
SITE_DP = "PS1SITE.CONTOSO.COM"
DEFAULT_LAST_REFRESH = "04/10/1970 06:35:00"


def nal(dp: str) -> str:
    """A PS1 DP's NAL path, as the database names it."""
    return nal_path(dp, SITE)


def open_hierarchy(tmp_path: Path) -> AbstractAsyncContextManager[Hierarchy]:
    return Hierarchy.open(HIERARCHY, root=tmp_path / "data", time_scale=TIME_SCALE)


# -- source trees ------------------------------------------------------------------------


async def assert_extracts_identical(
    h: Hierarchy, pkg: Package, dps: list[str], source: Path, out_root: Path
) -> None:
    """``extract`` from every DP gives the source folder: its folders (empty ones too),
    file list and bytes."""
    want = read_tree(source)
    for dp in dps:
        out = out_root / f"{dp}-{uuid.uuid4().hex[:8]}"
        await h.extract(pkg, dp, out)
        got = read_tree(out)
        assert sorted(got) == sorted(want), dp
        assert _folders(out) == _folders(source), dp
        for rel, data in want.items():
            assert got[rel] == data, f"{dp}: {rel} differs from the source"


def _folders(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


# -- the site database -------------------------------------------------------------------

_JOB_COLUMNS = "JobID, DPID, PkgID, PackageVersion, State, CreationTime, Action"
_PROBES = (
    "CREATE TABLE IF NOT EXISTS TestJobLog (Seq INTEGER PRIMARY KEY AUTOINCREMENT, Op TEXT,"
    " JobID INTEGER, DPID INTEGER, PkgID TEXT, PackageVersion INTEGER, State INTEGER,"
    " CreationTime TEXT, Action INTEGER)",
    "CREATE TRIGGER IF NOT EXISTS TestJobLog_Ins AFTER INSERT ON DistributionJobs BEGIN"
    f" INSERT INTO TestJobLog (Op, {_JOB_COLUMNS}) VALUES ('insert', NEW.JobID, NEW.DPID,"
    " NEW.PkgID, NEW.PackageVersion, NEW.State, NEW.CreationTime, NEW.Action); END",
    "CREATE TRIGGER IF NOT EXISTS TestJobLog_Del AFTER DELETE ON DistributionJobs BEGIN"
    f" INSERT INTO TestJobLog (Op, {_JOB_COLUMNS}) VALUES ('delete', OLD.JobID, OLD.DPID,"
    " OLD.PkgID, OLD.PackageVersion, OLD.State, OLD.CreationTime, OLD.Action); END",
    "CREATE TABLE IF NOT EXISTS TestStatusLog (Seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " PkgID TEXT, PkgServer TEXT, Status INTEGER, SourceVersion INTEGER)",
    *(
        f"CREATE TRIGGER IF NOT EXISTS TestStatusLog_{when} AFTER {when.upper()} ON PkgStatus"
        " WHEN NEW.Type = 2 BEGIN INSERT INTO TestStatusLog (PkgID, PkgServer, Status,"
        " SourceVersion) VALUES (NEW.ID, NEW.PkgServer, NEW.Status, NEW.SourceVersion); END"
        for when in ("Insert", "Update")
    ),
)


async def install_probes(db: SiteDatabase) -> None:
    """Test-only triggers that record every DistributionJobs insert and delete and every
    value of a Type 2 PkgStatus row, so a test sees rows the flow creates and deletes again."""

    def op(conn: sqlite3.Connection) -> None:
        for sql in _PROBES:
            conn.execute(sql)

    await db.write(op)


async def dp_id(db: SiteDatabase, dp: str) -> int:
    row = await db.distribution_point(nal(dp))
    assert row is not None, dp
    return row.dp_id


class JobLogRow(NamedTuple):
    seq: int
    op: str  # "insert" or "delete"
    job_id: int
    dp_id: int
    pkg_id: str
    version: int
    state: int
    created: str
    action: int


async def job_log(db: SiteDatabase, pkg_id: str, *, after: int = 0) -> list[JobLogRow]:
    """The package's DistributionJobs rows as they were inserted and deleted, in order."""
    rows = await db.fetchall(
        "SELECT Seq, Op, JobID, DPID, PkgID, PackageVersion, State, CreationTime, Action"
        " FROM TestJobLog WHERE PkgID = ? AND Seq > ? ORDER BY Seq",
        (pkg_id, after),
    )
    return [JobLogRow(*r) for r in rows]


async def status_history(db: SiteDatabase, pkg_id: str, dp: str) -> list[tuple[int, int]]:
    """(Status, SourceVersion) of the DP's Type 2 PkgStatus row, every value it took."""
    rows = await db.fetchall(
        "SELECT Status, SourceVersion FROM TestStatusLog WHERE PkgID = ? AND PkgServer = ?"
        " ORDER BY Seq",
        (pkg_id, nal(dp)),
    )
    return [(int(s), int(v)) for s, v in rows]


async def last_seq(db: SiteDatabase, table: str) -> int:
    key = "RecordID" if table == "StatusMessages" else "Seq"
    return int(await db.scalar(f"SELECT COALESCE(MAX({key}), 0) FROM {table}"))


async def package_row(db: SiteDatabase, pkg_id: str) -> dict[str, object] | None:
    row = await db.fetchone(
        "SELECT SourceVersion, StoredPkgVersion, Action, UpdateMask, UpdateMaskEx, Hash"
        " FROM SMSPackages WHERE PkgID = ?",
        (pkg_id,),
    )
    if row is None:
        return None
    keys = ("source_version", "stored_version", "action", "update_mask", "update_mask_ex", "hash")
    return dict(zip(keys, row, strict=True))


async def server_rows(db: SiteDatabase, pkg_id: str) -> dict[str, dict[str, object]]:
    """PkgServers rows of a package by NAL path."""
    rows = await db.fetchall(
        "SELECT NALPath, SiteCode, SiteName, SourceSite, LastRefresh, RefreshTrigger,"
        " UpdateMask, Action FROM PkgServers WHERE PkgID = ?",
        (pkg_id,),
    )
    keys = (
        *("site_code", "site_name", "source_site", "last_refresh", "refresh_trigger"),
        *("update_mask", "action"),
    )
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


async def dp_status_rows(db: SiteDatabase, pkg_id: str) -> dict[str, dict[str, object]]:
    """Type 2 PkgStatus rows of a package by NAL path."""
    rows = await db.fetchall(
        "SELECT PkgServer, SiteCode, Status, Location, ShareName, HTTPUrl, SourceVersion,"
        " Personality, State, SigURL, SigLocation FROM PkgStatus WHERE ID = ? AND Type = 2",
        (pkg_id,),
    )
    keys = (
        *("site_code", "status", "location", "share_name", "http_url", "source_version"),
        *("personality", "state", "sig_url", "sig_location"),
    )
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


def installed_status(pkg_id: str, dp: str, version: int) -> dict[str, object]:
    """The reference's ``update PkgStatus set Status = 3, ...`` values for ``dp``
    ("Distribute a package to standard DP", step 8)."""
    return {
        "site_code": SITE,
        "status": 3,
        "location": f'MSWNET:["SMS_SITE={SITE}"]\\\\{dp}\\SMSPKGC$\\{pkg_id}\\',
        "share_name": "",
        "http_url": f"http://{dp}/SMS_DP_SMSPKG$/{pkg_id}",
        "source_version": version,
        "personality": 0,
        "state": 0,
        "sig_url": f"http://{dp}/SMS_DP_SMSSIG$/{pkg_id}",
        "sig_location": f'MSWNET:["SMS_SITE={SITE}"]\\\\{dp}\\SMSSIG$\\{pkg_id}.{version}.tar',
    }


# -- status messages ---------------------------------------------------------------------


async def messages(db: SiteDatabase, *, since: int = 0) -> list[StatusMessage]:
    return await stored_messages(db, since_record=since)


ANY_DP = "*"  # message_ids(..., ANY_DP): every message about the package, in order


def concerns(msg: StatusMessage, pkg_id: str, dp: str | None) -> bool:
    """Whether ``msg`` is about the package (``dp`` None: the package itself, no DP) or
    about the package on ``dp`` (by its NAL path attribute, or PkgXferMgr's server name)."""
    if msg.attributes.get(400) != pkg_id:
        return False
    if dp == ANY_DP:
        return True
    on_dp = 404 in msg.attributes or msg.component == PKGXFERMGR
    if dp is None:
        return not on_dp
    if 404 in msg.attributes:
        return msg.attributes[404] == nal(dp)
    return msg.component == PKGXFERMGR and msg.strings[2] == dp


async def message_ids(
    db: SiteDatabase, pkg_id: str, dp: str | None = None, *, since: int = 0
) -> list[int]:
    return [m.message_id for m in await messages(db, since=since) if concerns(m, pkg_id, dp)]


# -- content libraries -------------------------------------------------------------------


def filelib(library_root: Path) -> list[str]:
    """The SHA-256 names of every file in a content library's FileLib."""
    return sorted(p.name for p in (library_root / "FileLib").glob("*/*") if p.is_file())


def dp_library_root(h: Hierarchy, dp: str) -> Path:
    library = h.servers[SITE].dp_library(dp)
    assert library is not None, dp
    return library.root


def staged_files(h: Hierarchy, dp: str) -> list[str]:
    return sorted(p.name for p in (dp_library_root(h, dp).parent / "SMS_DP$").glob("*"))


def log_text(h: Hierarchy, name: str) -> str:
    """A site server log, flushed first (the logs are buffered)."""
    h.servers[SITE].logs.flush()
    path = h.servers[SITE].root / "logs" / name
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


async def until(cond: Callable[[], Awaitable[bool]], *, timeout: float = TIMEOUT) -> None:
    """Poll ``cond`` until it holds (state, not time: the timeout only fails a stuck test)."""
    with anyio.fail_after(timeout):
        while not await cond():
            await anyio.sleep(0.001)


async def replicated(h: Hierarchy, *, timeout: float = TIMEOUT) -> None:
    """Until DRS is idle: every neighbour of every site has acknowledged the site's whole
    replication log (no change in flight between sites) and every site's DistMgr has
    taken what arrived."""

    async def idle() -> bool:
        for code, server in h.servers.items():
            last = await server.db.scalar("SELECT COALESCE(MAX(RowID), 0) FROM DrsLog")
            site = h.config.site(code)
            peers = [
                *([site.parent] if site.parent else []),
                *(c.code for c in h.config.children(code)),
            ]
            for peer in peers:
                if await server.db.replication_position(peer, "sent") < last:
                    return False
            busy = await server.db.scalar(
                "SELECT COUNT(*) FROM SMSPackages WHERE SourceSite <> ? AND Action <> 0", (code,)
            )
            if busy:
                return False  # a package DRS brought is still being added
        return True

    await until(idle, timeout=timeout)


async def advance_until(
    clock: ManualClock,
    cond: Callable[[], Awaitable[bool]],
    *,
    step: float,
    timeout: float = TIMEOUT,
) -> None:
    """Move a ``ManualClock`` on ``step`` seconds at a time until ``cond`` holds (what
    happens in between is ordered by the clock, not by how fast the machine runs; the
    timeout only fails a stuck test)."""
    with anyio.fail_after(timeout):
        while not await cond():
            await clock.advance(step)
            await anyio.sleep(0.001)


def site_log(h: Hierarchy, site: str, name: str) -> str:
    """A log of any site's server, flushed first ("" when it was never written)."""
    h.servers[site].logs.flush()
    path = h.servers[site].root / "logs" / name
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def assert_in_order(text: str, lines: list[str]) -> None:
    """Each of ``lines`` is in ``text``, after the one before it."""
    at = 0
    for line in lines:
        found = text.find(line, at)
        assert found >= 0, f"{line!r} missing (or out of order)"
        at = found + len(line)
