"""Row changes of the pull DP path: which DPs hold which content (``ContentDPMap``, the
sources query's other half), a pull job told its DP, and ``PullDPResponse`` rows from the
State System and their end in DistMgr."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from actors.sitedb.enums import ContentAccessType, JobState

__all__ = [
    "delete_content_dp_map",
    "delete_pull_dp_response",
    "insert_pull_dp_response",
    "open_jobs",
    "pull_job_bytes",
    "set_content_dp_map",
    "set_pull_notified",
    "set_pull_progress",
]


def set_content_dp_map(
    conn: sqlite3.Connection, *, content_id: str, version: int, server_name: str
) -> None:
    """The DP holds (and can serve) this version of the content: kept true on every DP's
    install and update, so the pull DP sources query finds it."""
    conn.execute(
        "INSERT INTO ContentDPMap (ContentID, Version, ServerName, AccessType) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (ContentID, ServerName) DO UPDATE SET Version = excluded.Version,"
        " AccessType = excluded.AccessType",
        (content_id, version, server_name, int(ContentAccessType.AVAILABLE)),
    )


def delete_content_dp_map(conn: sqlite3.Connection, *, content_id: str, server_name: str) -> None:
    """The content left the DP (removal, or the package was deleted)."""
    conn.execute(
        "DELETE FROM ContentDPMap WHERE ContentID = ? AND ServerName = ?",
        (content_id, server_name),
    )


def set_pull_notified(conn: sqlite3.Connection, *, job_id: int, dp_id: int, now: str) -> None:
    """The reference's update once the pull DP is told (its N'' literal spelt as SQLite
    takes it): the job stays, for the state message (or a status poll) to end it."""
    conn.execute(
        "update DistributionJobs set DPID = ?, SendAction = 'PullQueryResultAction',"
        " State = ?, LastUpdateTime = ? where JobID = ?",
        (dp_id, int(JobState.NOTIFIED), now, job_id),
    )


def insert_pull_dp_response(
    conn: sqlite3.Connection,
    *,
    pkg_status_id: int,
    message_time: str,
    pkg_version: int,
    action_state: int,
    action_data: str,
) -> None:
    """``spProcessPullDPMessage``: the pull DP's state message, keyed by its PkgStatus row
    (a message sent twice, after a restart, updates the same row)."""
    conn.execute(
        "INSERT INTO PullDPResponse (PkgStatusID, MessageTime, PkgVersion, ActionState,"
        " ActionData) VALUES (?, ?, ?, ?, ?) ON CONFLICT (PkgStatusID, MessageTime) DO UPDATE"
        " SET PkgVersion = excluded.PkgVersion, ActionState = excluded.ActionState,"
        " ActionData = excluded.ActionData",
        (pkg_status_id, message_time, pkg_version, action_state, action_data),
    )


def delete_pull_dp_response(
    conn: sqlite3.Connection, *, pkg_status_id: int, message_time: str
) -> None:
    """The reference's ``DELETE FROM PullDPResponse WHERE PkgStatusID = .. AND MessageTime
    = ..`` once DistMgr has processed the response."""
    conn.execute(
        "DELETE FROM PullDPResponse WHERE PkgStatusID = ? AND MessageTime = ?",
        (pkg_status_id, message_time),
    )


def set_pull_progress(
    conn: sqlite3.Connection,
    *,
    job_id: int,
    percent: int,
    bytes_full: int | None,
    bytes_delta: int | None,
) -> bool:
    """A pull DP's in-progress state message on its job: the percentage, and the bytes that
    crossed when the message carries them (a run's last one: what the pull DP's runs of
    the job since it started moved). The job keeps the most it was told: a run after a
    restart that finds the files already there moves nothing, and does not erase them.
    False when the job is gone (its success was stored first)."""
    cur = conn.execute(
        "UPDATE DistributionJobs SET PullPercent = ?1,"
        " BytesFull = CASE WHEN ?2 IS NULL THEN BytesFull ELSE max(BytesFull, ?2) END,"
        " BytesDelta = CASE WHEN ?3 IS NULL THEN BytesDelta ELSE max(BytesDelta, ?3) END"
        " WHERE JobID = ?4",
        (percent, bytes_full, bytes_delta, job_id),
    )
    return cur.rowcount == 1


def pull_job_bytes(conn: sqlite3.Connection, job_id: int) -> tuple[int, int]:
    """The bytes a pull DP's job was told of so far, read inside the write that ends it (an
    in-progress message stored a moment before counts)."""
    row = conn.execute(
        "SELECT BytesFull, BytesDelta FROM DistributionJobs WHERE JobID = ?", (job_id,)
    ).fetchone()
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def open_jobs(conn: sqlite3.Connection, job_ids: Sequence[int]) -> set[int]:
    """Which of ``job_ids`` still have their row, read inside the write that would end them
    (the status poll and the pull DP's state message may both have read a job open)."""
    if not job_ids:
        return set()
    marks = ", ".join("?" for _ in job_ids)
    rows = conn.execute(f"SELECT JobID FROM DistributionJobs WHERE JobID IN ({marks})", job_ids)
    return {int(r[0]) for r in rows}
