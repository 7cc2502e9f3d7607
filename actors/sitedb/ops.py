"""Row changes as functions of a connection, so one transaction can hold several of them.

Each runs inside the single writer's transaction (``SiteDatabase.write``): a caller can put
a row change and the status message that reports it (``StatusReporter.report(op=...)``)
in one commit.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable
from functools import partial

from actors.sitedb._drs_ops import (
    ReplicationRecord,
    apply_replication,
    save_drs_sent,
)
from actors.sitedb._provider_ops import (
    ProviderPackage,
    insert_package,
    insert_pkg_server,
    next_package_number,
    provider_package,
    request_delete,
    request_redistribute,
    request_refresh,
    server_action,
    set_server_actions,
)
from actors.sitedb._pull_ops import (
    delete_content_dp_map,
    delete_pull_dp_response,
    insert_pull_dp_response,
    open_jobs,
    pull_job_bytes,
    set_content_dp_map,
    set_pull_notified,
    set_pull_progress,
)
from actors.sitedb._sending_ops import (
    MINIJOB_COMPLETE,
    MINIJOB_FAILED,
    MINIJOB_PENDING,
    MINIJOB_SENDING,
    add_package_file_ref,
    despooled,
    drop_minijob,
    insert_minijob,
    release_package_file_ref,
    save_site_key,
    set_minijob_state,
    site_lacks_base,
    take_arrived_version,
)
from actors.sitedb._times import product_time, refresh_time
from actors.sitedb.enums import (
    JobAction,
    JobState,
    PackageAction,
    PkgStatusType,
    PkgStatusValue,
    ServerAction,
)
from actors.sitedb.rows import DistributionPointRow, PkgServerRow, StatusMessageRow

__all__ = [
    "MINIJOB_COMPLETE",
    "MINIJOB_FAILED",
    "MINIJOB_PENDING",
    "MINIJOB_SENDING",
    "ProviderPackage",
    "ReplicationRecord",
    "add_package_file_ref",
    "apply_replication",
    "cancel_jobs",
    "delete_content_dp_map",
    "delete_job",
    "delete_package_rows",
    "delete_pull_dp_response",
    "delete_removed_server",
    "delete_transfer_bytes",
    "despooled",
    "drop_minijob",
    "end_older_jobs",
    "fail_job",
    "insert_distribution_job",
    "insert_minijob",
    "insert_package",
    "insert_pkg_server",
    "insert_pull_dp_response",
    "insert_removal_job",
    "insert_status_message",
    "mark_stale_servers",
    "next_package_number",
    "open_jobs",
    "package_action",
    "park_package",
    "provider_package",
    "pull_job_bytes",
    "record_transfer_bytes",
    "release_package_file_ref",
    "request_delete",
    "request_redistribute",
    "request_refresh",
    "reset_server_actions",
    "save_drs_sent",
    "save_site_key",
    "server_action",
    "set_content_dp_map",
    "set_job_state",
    "set_minijob_state",
    "set_pull_notified",
    "set_pull_progress",
    "set_server_actions",
    "site_lacks_base",
    "store_package_version",
    "take_arrived_version",
    "targeted_version",
    "upsert_dp_status",
    "upsert_pkg_status",
]


def store_package_version(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    site_code: str,
    version: int,
    content_id: str,
    content_hash: str,
    size: int,
    now: dt.datetime,
    action_seq: int,
) -> bool:
    """DistMgr's commit of a new version, with the work it implies.

    Every DP of the site that holds or wants the package and has no action pending is
    marked ``Action = 1`` (update) in the same transaction, so a crash before the DP
    threads run leaves the jobs to create in the database, not in memory. The package's
    Action is reset only if no admin request came in since DistMgr read it (compare and
    set on ``ActionSeq``); returns whether it was reset.
    """
    conn.execute(
        "update SMSPackages set SourceVersion = ?, StoredPkgVersion = ?, Hash = ?, NewHash = ?,"
        " SourceSize = ?, LastRefresh = ? where PkgID = ?",
        (version, version, content_hash, content_hash, size // 1024, refresh_time(now), pkg_id),
    )
    conn.execute(
        "insert or replace into PackageContents (PkgID, ContentID, PackageVersion, Hash, Size)"
        " values (?, ?, ?, ?, ?)",
        (pkg_id, content_id, version, content_hash, size),
    )
    conn.execute(
        "update PkgServers set Action = ? where PkgID = ? and SiteCode = ? and Action = ?",
        (int(ServerAction.UPDATE), pkg_id, site_code, int(ServerAction.NONE)),
    )
    return park_package(conn, pkg_id, action_seq)


def park_package(conn: sqlite3.Connection, pkg_id: str, action_seq: int) -> bool:
    """Reset the package's Action (and masks) if no admin request came in since DistMgr
    read ``action_seq``; returns whether it did."""
    cur = conn.execute(
        "update SMSPackages set Action = ?, UpdateMask = 0, UpdateMaskEx = 0"
        " where PkgID = ? and ActionSeq = ?",
        (int(PackageAction.NONE), pkg_id, action_seq),
    )
    return cur.rowcount == 1


def reset_server_actions(conn: sqlite3.Connection, servers: Iterable[PkgServerRow]) -> None:
    """Clear the DPs' pending actions (a failed package is parked), each only if it still
    holds what DistMgr read: a request written since stays."""
    conn.executemany(
        "update PkgServers set Action = 0, RefreshTrigger = 0 where PkgID = ? and NALPath = ?"
        " and Action = ? and RefreshTrigger = ?",
        [(s.pkg_id, s.nal_path, int(s.action), s.refresh_trigger) for s in servers],
    )


def mark_stale_servers(conn: sqlite3.Connection, site_code: str) -> list[tuple[str, str]]:
    """DPs the site's rows say are Installed at a version older than the package's stored
    one, with no open job and no pending action: a crash lost the work between the version
    commit and the jobs (a defect of an older build, or of a database restored from a
    backup). They are marked ``Action = 1`` so DistMgr creates their jobs; returns them as
    (PkgID, NALPath)."""
    stale = conn.execute(
        "SELECT s.PkgID, s.NALPath FROM PkgServers s"
        " JOIN SMSPackages p ON p.PkgID = s.PkgID"
        " JOIN PkgStatus st ON st.ID = s.PkgID AND st.Type = ? AND st.PkgServer = s.NALPath"
        " JOIN DistributionPoints dp ON dp.NALPath = s.NALPath"
        " WHERE s.SiteCode = ? AND s.Action = 0 AND s.RefreshTrigger = 0 AND p.Action = 0"
        " AND st.Status = ? AND st.SourceVersion < p.StoredPkgVersion"
        " AND NOT EXISTS (SELECT 1 FROM DistributionJobs j WHERE j.DPID = dp.DPID"
        " AND j.PkgID = s.PkgID AND j.State <> ?)"
        " ORDER BY s.PkgID, s.NALPath",
        (int(PkgStatusType.DP), site_code, int(PkgStatusValue.INSTALLED), int(JobState.FAILED)),
    ).fetchall()
    conn.executemany(
        "update PkgServers set Action = ? where PkgID = ? and NALPath = ? and Action = 0",
        [(int(ServerAction.UPDATE), pkg_id, nal) for pkg_id, nal in stale],
    )
    return [(str(pkg_id), str(nal)) for pkg_id, nal in stale]


def insert_distribution_job(
    conn: sqlite3.Connection,
    *,
    dp: DistributionPointRow,
    pkg_id: str,
    package_version: int,
    action: JobAction,
    now: dt.datetime,
    server: PkgServerRow | None = None,
) -> int:
    """The reference's DP thread: create the PkgXferMgr job, then reset the DP's action.

    With ``server`` (the row the DP thread read) the reset is a compare and set: a request
    the provider wrote since (a redistribute, a removal) stays for the next processing.

    An older job of the DP and package that has not started or waits for its retry is
    superseded here, in the same commit (a redistribute only by another redistribute):
    no stale job stays open to keep the DP "in progress" or to run after the new one."""
    if action != JobAction.REMOVE:
        conn.execute(
            "delete from DistributionJobs where DPID = ? and PkgID = ? and State in (?, ?)"
            " and (Action = ? or ? = ?)",
            (
                dp.dp_id,
                pkg_id,
                int(JobState.PENDING),
                int(JobState.RETRYING),
                int(JobAction.ADD_OR_UPDATE),
                int(action),
                int(JobAction.REDISTRIBUTE),
            ),
        )
    cur = conn.execute(
        "insert into DistributionJobs (DPID, PkgID, PackageVersion, State, CreationTime,"
        " Action) values (?, ?, ?, ?, ?, ?)",
        (dp.dp_id, pkg_id, package_version, int(JobState.PENDING), product_time(now), int(action)),
    )
    sql = (
        "update PkgServers set UpdateMask = 0, Action = 0, RefreshTrigger = 0,"
        " LastRefresh = ? where PkgID = ? and NALPath = ? and SiteCode = ? and Action <> ?"
    )
    args: tuple[object, ...] = (
        refresh_time(now),
        pkg_id,
        dp.nal_path,
        dp.site_code,
        int(ServerAction.REMOVE),
    )
    if server is not None:
        sql += " and Action = ? and RefreshTrigger = ?"
        args += (int(server.action), server.refresh_trigger)
    conn.execute(sql, args)
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


def upsert_dp_status(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    dp: DistributionPointRow,
    status: PkgStatusValue,
    version: int,
    now: str,
) -> int:
    """The DP's PkgStatus Type 2 row, as the reference's STA processing writes it (an
    installed package gets its share, HTTP and signature locations)."""
    row = partial(
        upsert_pkg_status,
        conn,
        pkg_id=pkg_id,
        type=PkgStatusType.DP,
        site_code=dp.site_code,
        pkg_server=dp.nal_path,
        status=int(status),
        source_version=version,
        now=now,
    )
    if status != PkgStatusValue.INSTALLED:
        return row()
    server = dp.server_name
    share = f'MSWNET:["SMS_SITE={dp.site_code}"]\\\\{server}'
    return row(
        location=f"{share}\\SMSPKGC$\\{pkg_id}\\",
        http_url=f"http://{server}/SMS_DP_SMSPKG$/{pkg_id}",
        sig_url=f"http://{server}/SMS_DP_SMSSIG$/{pkg_id}",
        sig_location=f"{share}\\SMSSIG$\\{pkg_id}.{version}.tar",
    )


def targeted_version(conn: sqlite3.Connection, pkg_id: str, nal_path: str) -> int | None:
    """The package's stored version if it targets the DP (and is not being removed from
    it); None otherwise."""
    row = conn.execute(
        "SELECT p.StoredPkgVersion FROM SMSPackages p JOIN PkgServers s ON s.PkgID = p.PkgID"
        " WHERE p.PkgID = ? AND s.NALPath = ? AND s.Action <> ?",
        (pkg_id, nal_path, int(ServerAction.REMOVE)),
    ).fetchone()
    return None if row is None else int(row[0])


def dp_status_is(
    conn: sqlite3.Connection, pkg_id: str, nal_path: str, status: PkgStatusValue, version: int
) -> bool:
    """Whether the DP's PkgStatus row already says ``status`` for ``version``, read inside
    a write (an STA processed again after a crash changes nothing)."""
    row = conn.execute(
        "select 1 from PkgStatus where ID = ? and Type = ? and PkgServer = ? and Status = ?"
        " and SourceVersion = ?",
        (pkg_id, int(PkgStatusType.DP), nal_path, int(status), version),
    ).fetchone()
    return row is not None


def delete_job(conn: sqlite3.Connection, job_id: int) -> None:
    conn.execute("delete from DistributionJobs where JobID = ?", (job_id,))


def set_job_state(conn: sqlite3.Connection, job_id: int, state: JobState, now: str) -> None:
    conn.execute(
        "update DistributionJobs set State = ?, LastUpdateTime = ? where JobID = ?",
        (int(state), now, job_id),
    )


def fail_job(
    conn: sqlite3.Connection,
    *,
    job_id: int,
    give_up: bool,
    failures: int,
    restart_time: str | None,
    now: str,
    bytes_full: int = 0,
    bytes_delta: int = 0,
) -> None:
    """A try of the job failed: Retrying until ``restart_time`` (or Failed for good with
    ``give_up``); the bytes the try moved are added to the job's, so the install that
    follows counts every try."""
    conn.execute(
        "update DistributionJobs set State = ?, FailureCount = ?, RestartTime = ?,"
        " LastUpdateTime = ?, BytesFull = BytesFull + ?, BytesDelta = BytesDelta + ?"
        " where JobID = ?",
        (
            int(JobState.FAILED if give_up else JobState.RETRYING),
            failures,
            restart_time,
            now,
            bytes_full,
            bytes_delta,
            job_id,
        ),
    )


def record_transfer_bytes(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    nal_path: str,
    version: int,
    bytes_full: int,
    bytes_delta: int,
    keep_larger: bool = False,
) -> None:
    """The DP's latest install of the package, and what crossed its link for it (written
    in the commit of its Installed status). ``keep_larger``: a pull DP's bytes that came
    after its success (a restart can reorder the messages) replace only another version's
    or fewer (a job run again after a restart downloads nothing: the bytes stay)."""
    keep = (
        " where Version <> excluded.Version"
        " or BytesFull + BytesDelta < excluded.BytesFull + excluded.BytesDelta"
        if keep_larger
        else ""
    )
    conn.execute(
        "insert into DPTransferBytes (PkgID, NALPath, Version, BytesFull, BytesDelta)"
        " values (?, ?, ?, ?, ?) on conflict (PkgID, NALPath) do update set"
        " Version = excluded.Version, BytesFull = excluded.BytesFull,"
        " BytesDelta = excluded.BytesDelta" + keep,
        (pkg_id, nal_path, version, bytes_full, bytes_delta),
    )


def delete_transfer_bytes(conn: sqlite3.Connection, pkg_id: str, nal_path: str) -> None:
    """The package left the DP: no install of it there to count."""
    conn.execute("delete from DPTransferBytes where PkgID = ? and NALPath = ?", (pkg_id, nal_path))


def end_older_jobs(conn: sqlite3.Connection, *, dp_id: int, pkg_id: str, before: int) -> int:
    """A removal of the package from the DP ends its older add and redistribute jobs there
    (pending, waiting for a retry, given up, or the send it cancelled): none may run after
    the removal and put the content back. Returns how many went."""
    cur = conn.execute(
        "delete from DistributionJobs where DPID = ? and PkgID = ? and JobID < ? and Action <> ?",
        (dp_id, pkg_id, before, int(JobAction.REMOVE)),
    )
    return cur.rowcount


def cancel_jobs(
    conn: sqlite3.Connection,
    *,
    dp: DistributionPointRow,
    pkg_id: str,
    job_ids: Iterable[int],
    status: PkgStatusValue,
    version: int,
    now: str,
) -> bool:
    """An administrator's cancel: the jobs go, and the DP's status row becomes ``status``
    at ``version`` if the package still targets the DP (a removal under way or done owns
    the row then). Returns whether the status was written."""
    conn.executemany("delete from DistributionJobs where JobID = ?", [(j,) for j in job_ids])
    if targeted_version(conn, pkg_id, dp.nal_path) is None:
        return False
    upsert_dp_status(conn, pkg_id=pkg_id, dp=dp, status=status, version=version, now=now)
    return True


def insert_removal_job(
    conn: sqlite3.Connection,
    *,
    dp: DistributionPointRow,
    pkg_id: str,
    version: int,
    now: dt.datetime,
) -> bool:
    """A remove job for PkgXferMgr (run after the DP's earlier jobs); False if one is already
    asked for. The DP's Action stays 3 until it confirms (the status-6 STA drops the row)."""
    if conn.execute(
        "SELECT 1 FROM DistributionJobs WHERE DPID = ? AND PkgID = ? AND Action = ?",
        (dp.dp_id, pkg_id, int(JobAction.REMOVE)),
    ).fetchone():
        return False
    conn.execute(
        "insert into DistributionJobs (DPID, PkgID, PackageVersion, State, CreationTime, Action)"
        " values (?, ?, ?, ?, ?, ?)",
        (
            dp.dp_id,
            pkg_id,
            version,
            int(JobState.PENDING),
            product_time(now),
            int(JobAction.REMOVE),
        ),
    )
    conn.execute(
        "update PkgServers set UpdateMask = 0, RefreshTrigger = 0, LastRefresh = ?"
        " where PkgID = ? and NALPath = ?",
        (refresh_time(now), pkg_id, dp.nal_path),
    )
    return True


def delete_removed_server(conn: sqlite3.Connection, pkg_id: str, nal_path: str) -> None:
    """The DP confirmed a removal: its PkgServers row goes (unless it was added back)."""
    conn.execute(
        "delete from PkgServers where PkgID = ? and NALPath = ? and Action = ?",
        (pkg_id, nal_path, int(ServerAction.REMOVE)),
    )


def package_action(conn: sqlite3.Connection, pkg_id: str) -> PackageAction | None:
    """The package's Action (None: no such package), read inside a write."""
    row = conn.execute("SELECT Action FROM SMSPackages WHERE PkgID = ?", (pkg_id,)).fetchone()
    return None if row is None else PackageAction(row[0])


def delete_package_rows(conn: sqlite3.Connection, pkg_id: str) -> None:
    """The last step of a delete: every row of the package at this site."""
    for table, column in (
        ("ContentDPMap", "ContentID"),
        ("DistributionJobs", "PkgID"),
        ("DPTransferBytes", "PkgID"),
        ("PkgStatus", "ID"),
        ("PackageContents", "PkgID"),
        ("SMSPackages", "PkgID"),
    ):
        conn.execute(f"delete from {table} where {column} = ?", (pkg_id,))


def insert_status_message(conn: sqlite3.Connection, msg: StatusMessageRow) -> int:
    """A status message and its attributes; returns its RecordID."""
    cur = conn.execute(
        "INSERT INTO StatusMessages (MessageID, Severity, Component, SiteCode, MachineName,"
        " Time, InsStrings) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            msg.message_id,
            msg.severity,
            msg.component,
            msg.site,
            msg.system,
            msg.time,
            json.dumps(list(msg.strings)),
        ),
    )
    record_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO StatusMessageAttributes (RecordID, AttributeID, AttributeValue)"
        " VALUES (?, ?, ?)",
        [(record_id, aid, value) for aid, value in msg.attributes.items()],
    )
    return record_id
