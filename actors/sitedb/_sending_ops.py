"""Writes of the sending between sites: mini-jobs, reference counted package files, site
keys, and what the despooler commits when a package file arrives."""

from __future__ import annotations

import sqlite3

from actors.sitedb.enums import PackageAction, PkgStatusType, PkgStatusValue, ServerAction

__all__ = [
    "MINIJOB_COMPLETE",
    "MINIJOB_FAILED",
    "MINIJOB_PENDING",
    "MINIJOB_SENDING",
    "add_package_file_ref",
    "despooled",
    "drop_minijob",
    "insert_minijob",
    "release_package_file_ref",
    "save_site_key",
    "set_minijob_state",
    "site_lacks_base",
    "take_arrived_version",
]

MINIJOB_PENDING = 0
MINIJOB_SENDING = 1
MINIJOB_COMPLETE = 2
MINIJOB_FAILED = 3

# UpdateMask the despooler writes: the package's content arrived (the reference's 160)
CONTENT_ARRIVED_MASK = 160


def insert_minijob(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    version: int,
    dest_site: str,
    final_site: str,
    transfer_root: str,
    priority: int,
    size: int,
    now: str,
    base_version: int = 0,
) -> int | None:
    """A mini-job, unless one exists for that version and final site (None then); the
    package file's reference count goes up with it."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO MiniJobs (PkgID, Version, BaseVersion, DestSite, FinalSite,"
        " TransferRoot, Priority, Size, CreationTime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (pkg_id, version, base_version, dest_site, final_site, transfer_root, priority, size, now),
    )
    if cur.rowcount != 1:
        return None
    add_package_file_ref(conn, transfer_root)
    return cur.lastrowid


def add_package_file_ref(conn: sqlite3.Connection, path: str) -> int:
    conn.execute(
        "INSERT INTO PackageFileRefs (Path, RefCount) VALUES (?, 1)"
        " ON CONFLICT (Path) DO UPDATE SET RefCount = RefCount + 1",
        (path,),
    )
    return int(
        conn.execute("SELECT RefCount FROM PackageFileRefs WHERE Path = ?", (path,)).fetchone()[0]
    )


def release_package_file_ref(conn: sqlite3.Connection, path: str) -> int:
    """One reference fewer; the count left (the row goes at 0)."""
    conn.execute("UPDATE PackageFileRefs SET RefCount = RefCount - 1 WHERE Path = ?", (path,))
    row = conn.execute("SELECT RefCount FROM PackageFileRefs WHERE Path = ?", (path,)).fetchone()
    left = int(row[0]) if row else 0
    if left <= 0:
        conn.execute("DELETE FROM PackageFileRefs WHERE Path = ?", (path,))
    return max(left, 0)


def set_minijob_state(
    conn: sqlite3.Connection,
    job_id: int,
    state: int,
    *,
    send_request_id: str | None = None,
    attempts: int | None = None,
) -> None:
    conn.execute(
        "UPDATE MiniJobs SET State = ?, SendRequestID = COALESCE(?, SendRequestID),"
        " Attempts = COALESCE(?, Attempts) WHERE JobID = ?",
        (state, send_request_id, attempts, job_id),
    )
    if state == MINIJOB_COMPLETE:
        conn.execute("DELETE FROM MiniJobs WHERE JobID = ?", (job_id,))


def drop_minijob(conn: sqlite3.Connection, job_id: int) -> None:
    """A mini-job that cannot run (its package file is gone): the row goes, so the package's
    source may write a new one for that version and site."""
    conn.execute("DELETE FROM MiniJobs WHERE JobID = ?", (job_id,))


def save_site_key(conn: sqlite3.Connection, site_code: str, public_key: str) -> None:
    conn.execute(
        "INSERT INTO SiteKeys (SiteCode, PublicKey) VALUES (?, ?)"
        " ON CONFLICT (SiteCode) DO UPDATE SET PublicKey = excluded.PublicKey"
        " WHERE PublicKey <> excluded.PublicKey",
        (site_code, public_key),
    )


def despooled(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    version: int,
    site_code: str,
    server: str,
    stored_path: str,
    now: str,
) -> bool:
    """The package's content arrived here (the reference's SQL of despooler step 7-3/7-4):
    ``SMSPackages_L`` says so (its trigger notifies DistMgr) and the site's Type 1 status
    row is Installed. False (nothing written) when a newer version is stored already."""
    row = conn.execute(
        "SELECT StoredPkgVersion FROM SMSPackages WHERE PkgID = ?", (pkg_id,)
    ).fetchone()
    if row is None or int(row[0]) >= version:
        return False
    conn.execute(
        "update SMSPackages set StoredPkgPath = ?, StoredPkgVersion = ?, UpdateMask = ?,"
        " UpdateMaskEx = 0, Action = ? where PkgID = ?",
        (stored_path, version, CONTENT_ARRIVED_MASK, int(PackageAction.UPDATE), pkg_id),
    )
    conn.execute(
        "INSERT INTO PkgStatus (ID, Type, SiteCode, PkgServer, Status, UpdateTime, Location,"
        " SourceVersion) VALUES (?, ?, ?, ?, 2, ?, ?, ?)"
        " ON CONFLICT (ID, Type, SiteCode, PkgServer) DO UPDATE SET Status = 2,"
        " UpdateTime = excluded.UpdateTime, Location = excluded.Location,"
        " SourceVersion = excluded.SourceVersion",
        (pkg_id, int(PkgStatusType.SITE), site_code, server, now, stored_path, version),
    )
    return True


def site_lacks_base(
    conn: sqlite3.Connection, *, pkg_id: str, site_code: str, server: str, now: str
) -> None:
    """The despooler was sent the changes from a version this site's library does not
    hold: the site's Type 1 status row says Failed. DRS takes it to the other sites; where
    it arrives, a trigger asks DistMgr to look at the package again, and the package's
    source site sends the whole package (``SiteDatabase.site_version`` no longer counts the
    site as holding a version)."""
    conn.execute(
        "INSERT INTO PkgStatus (ID, Type, SiteCode, PkgServer, Status, UpdateTime)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (ID, Type, SiteCode, PkgServer) DO UPDATE SET Status = excluded.Status,"
        " UpdateTime = excluded.UpdateTime",
        (pkg_id, int(PkgStatusType.SITE), site_code, server, int(PkgStatusValue.FAILED), now),
    )


def take_arrived_version(
    conn: sqlite3.Connection, *, pkg_id: str, site_code: str, action_seq: int
) -> bool:
    """DistMgr at a destination site takes a version the despooler stored: every DP of the
    site that holds the package and has no action pending gets it (Action 1), and the
    package's action is reset if no request came in meanwhile (compare and set)."""
    conn.execute(
        "update PkgServers set Action = ? where PkgID = ? and SiteCode = ? and Action = ?",
        (int(ServerAction.UPDATE), pkg_id, site_code, int(ServerAction.NONE)),
    )
    cur = conn.execute(
        "update SMSPackages set Action = 0, UpdateMask = 0, UpdateMaskEx = 0"
        " where PkgID = ? and ActionSeq = ?",
        (pkg_id, action_seq),
    )
    return cur.rowcount == 1
