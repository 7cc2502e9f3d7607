"""The SMS Provider's statements: what an admin operation writes, run inside its write.

The provider decides (and raises its typed errors); these only read and write rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import msgspec

from actors.sitedb.enums import PackageAction, ServerAction
from actors.sitedb.schema import SMSPACKAGES_COLUMNS

__all__ = [
    "ProviderPackage",
    "insert_package",
    "insert_pkg_server",
    "next_package_number",
    "provider_package",
    "request_delete",
    "request_redistribute",
    "request_refresh",
    "server_action",
    "set_server_actions",
]

_INSERT_PACKAGE = (
    f"insert into SMSPackages ({', '.join(SMSPACKAGES_COLUMNS)})"
    f" values ({', '.join('?' * len(SMSPACKAGES_COLUMNS))})"
)


class ProviderPackage(msgspec.Struct, frozen=True):
    """What the provider checks of a package before it changes it."""

    source: str
    source_site: str
    stored_pkg_version: int
    action: PackageAction


def provider_package(conn: sqlite3.Connection, pkg_id: str) -> ProviderPackage | None:
    row = conn.execute(
        "SELECT Source, SourceSite, StoredPkgVersion, Action FROM SMSPackages WHERE PkgID = ?",
        (pkg_id,),
    ).fetchone()
    return None if row is None else ProviderPackage(row[0], row[1], row[2], PackageAction(row[3]))


def next_package_number(conn: sqlite3.Connection, site: str, first: int) -> int:
    """The site's next package number, never below ``first`` (IDs are never reused)."""
    (number,) = conn.execute(
        "INSERT INTO PackageIDCounters (SiteCode, LastID) VALUES (?, ?)"
        " ON CONFLICT (SiteCode) DO UPDATE SET LastID = MAX(LastID + 1, excluded.LastID)"
        " RETURNING LastID",
        (site, first),
    ).fetchone()
    return int(number)


def insert_package(conn: sqlite3.Connection, values: tuple[object, ...]) -> None:
    """The reference's ``insert SMSPackages``, a value per column of SMSPACKAGES_COLUMNS."""
    conn.execute(_INSERT_PACKAGE, values)


def server_action(conn: sqlite3.Connection, pkg_id: str, nal_path: str) -> ServerAction | None:
    """The DP's PkgServers Action for the package (None: the package does not target it)."""
    row = conn.execute(
        "SELECT Action FROM PkgServers WHERE PkgID = ? AND NALPath = ?", (pkg_id, nal_path)
    ).fetchone()
    return None if row is None else ServerAction(row[0])


def set_server_actions(
    conn: sqlite3.Connection, pkg_id: str, nal_paths: Iterable[str], action: ServerAction
) -> None:
    conn.executemany(
        "update PkgServers set Action = ? where PkgID = ? and NALPath = ?",
        [(int(action), pkg_id, nal) for nal in nal_paths],
    )


def insert_pkg_server(
    conn: sqlite3.Connection,
    *,
    pkg_id: str,
    nal_path: str,
    site_code: str,
    source_site: str,
    last_refresh: str,
) -> bool:
    """AddDistributionPoints' row (Action 2); False when the DP's site is not in Sites."""
    cur = conn.execute(
        "insert into PkgServers (PkgID, NALPath, SiteCode, SiteName, SourceSite, LastRefresh,"
        " RefreshTrigger, UpdateMask, Action) select ?, ?, ?, Sites.SiteName, ?, ?, 0, 0, ?"
        " from Sites where SiteCode = ?",
        (pkg_id, nal_path, site_code, source_site, last_refresh, int(ServerAction.ADD), site_code),
    )
    return cur.rowcount == 1


def request_refresh(
    conn: sqlite3.Connection, pkg: ProviderPackage, pkg_id: str, mask: int, mask_ex: int
) -> None:
    """RefreshPkgSource: the package's Action 1 with the refresh masks."""
    conn.execute(
        "update SMSPackages set Source = ?, StoredPkgVersion = ?, UpdateMask = ?,"
        " UpdateMaskEx = ?, Action = ? where PkgID = ?",
        (pkg.source, pkg.stored_pkg_version, mask, mask_ex, int(PackageAction.UPDATE), pkg_id),
    )


def request_redistribute(conn: sqlite3.Connection, pkg_id: str, nal_path: str) -> None:
    conn.execute(
        "update PkgServers set RefreshTrigger = 1 where PkgID = ? and NALPath = ?",
        (pkg_id, nal_path),
    )


def request_delete(conn: sqlite3.Connection, pkg_id: str) -> None:
    """Delete: every DP Action 3 (remove), then the package Action 3 (delete)."""
    conn.execute(
        "update PkgServers set Action = ? where PkgID = ? and Action <> ?",
        (int(ServerAction.REMOVE), pkg_id, int(ServerAction.REMOVE)),
    )
    conn.execute(
        "update SMSPackages set Action = ? where PkgID = ?", (int(PackageAction.DELETE), pkg_id)
    )
