"""Row changes as functions of a connection, so one transaction can hold several of them.

Each runs inside the single writer's transaction (``SiteDatabase.write``): a caller can put
a row change and the status message that reports it (``StatusReporter.report(op=...)``)
in one commit.
"""

from __future__ import annotations

import sqlite3

from actors.sitedb.enums import JobAction, JobState, PkgStatusType, ServerAction
from actors.sitedb.rows import DistributionPointRow

__all__ = ["delete_job", "insert_distribution_job", "set_job_state", "upsert_pkg_status"]


def insert_distribution_job(
    conn: sqlite3.Connection,
    *,
    dp: DistributionPointRow,
    pkg_id: str,
    package_version: int,
    action: JobAction,
    now: str,
) -> int:
    """The reference's DP thread: create the PkgXferMgr job, then reset the DP's action."""
    cur = conn.execute(
        "insert into DistributionJobs (DPID, PkgID, PackageVersion, State, CreationTime,"
        " Action) values (?, ?, ?, ?, ?, ?)",
        (dp.dp_id, pkg_id, package_version, int(JobState.PENDING), now, int(action)),
    )
    conn.execute(
        "update PkgServers set UpdateMask = 0, Action = 0, RefreshTrigger = 0,"
        " LastRefresh = ? where PkgID = ? and NALPath = ? and SiteCode = ?"
        " and Action <> ?",
        (now, pkg_id, dp.nal_path, dp.site_code, int(ServerAction.REMOVE)),
    )
    return int(cur.lastrowid or 0)


def upsert_pkg_status(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    type: PkgStatusType,
    site_code: str,
    pkg_server: str,
    status: int,
    source_version: int,
    now: str,
    location: str = "",
    http_url: str = "",
    sig_url: str = "",
    sig_location: str = "",
    state: int = 0,
) -> int:
    """Insert or update the package's Type 1 / Type 2 row; returns its PKID."""
    values = (status, now, location, http_url, source_version, state, sig_url, sig_location)
    row = conn.execute(
        "update PkgStatus set Status = ?, UpdateTime = ?, Location = ?, ShareName = '',"
        " HTTPUrl = ?, SourceVersion = ?, Personality = 0, State = ?, SigURL = ?,"
        " SigLocation = ? where ID = ? and Type = ? and SiteCode = ? and PkgServer = ?"
        " RETURNING PKID",
        (*values, pkg_id, int(type), site_code, pkg_server),
    ).fetchone()
    if row is not None:
        return int(row[0])
    cur = conn.execute(
        "insert into PkgStatus (Status, UpdateTime, Location, HTTPUrl, SourceVersion,"
        " State, SigURL, SigLocation, ID, Type, SiteCode, PkgServer)"
        " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*values, pkg_id, int(type), site_code, pkg_server),
    )
    return int(cur.lastrowid or 0)


def delete_job(conn: sqlite3.Connection, job_id: int) -> None:
    conn.execute("delete from DistributionJobs where JobID = ?", (job_id,))


def set_job_state(conn: sqlite3.Connection, job_id: int, state: JobState, now: str) -> None:
    conn.execute(
        "update DistributionJobs set State = ?, LastUpdateTime = ? where JobID = ?",
        (int(state), now, job_id),
    )
