"""The content status of a package on each DP it targets: one rule for the facade and the CLI.

Read from the site database's rows and each DP's DataLib manifests only, so it works on a
running hierarchy and on a data root a run left behind alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec

from actors.config import HierarchyConfig
from actors.dp import content_library, dp_root
from actors.sitedb import (
    DistributionPointRow,
    PkgStatusValue,
    ServerAction,
    SiteDatabase,
)
from actors.status import describe, stored_message
from contentlib import inspect_library

__all__ = ["ContentState", "ContentStatus", "HeldVersion", "dp_content_status", "held_on_disk"]

ContentState = Literal["Installed", "InProgress", "Retrying", "Failed", "Removed"]
"""A DP's state for a package: Installed, Failed and Removed are final (nothing more
happens without a new request); InProgress and Retrying are on their way."""


class ContentStatus(msgspec.Struct, frozen=True):
    """One targeted DP's view of a package."""

    dp: str  # server name, PS1DP1.CONTOSO.COM
    nal_path: str
    state: ContentState
    version: int  # the version the DP's content library holds (0: none)
    last_message: int | None  # the last status message ID that concerned this DP
    detail: str = ""  # that message's text when it is a warning or an error: the reason
    bytes_full: int = 0
    """Bytes of whole files that crossed the DP's link for its latest install (0: none
    recorded); a resumed send counts what every try moved."""
    bytes_delta: int = 0
    """Bytes of deltas that crossed the link for that install."""
    percent: int | None = None
    """A pull DP's download percentage while InProgress, as its last in-progress state
    message reported it (None: not a pull DP, not downloading, or no message yet)."""

    @property
    def final(self) -> bool:
        return self.state in ("Installed", "Failed", "Removed")


# PkgStatus values a DP can stay in; every other value is on its way somewhere
_FINAL_STATES: dict[PkgStatusValue, ContentState] = {
    PkgStatusValue.INSTALLED: "Installed",
    PkgStatusValue.RETRY: "Retrying",
    PkgStatusValue.FAILED: "Failed",
    PkgStatusValue.REMOVED: "Removed",
}


HeldVersion = Callable[[DistributionPointRow, str], int]
"""The latest version of a package a DP's content library holds (0: none)."""


def held_on_disk(config: HierarchyConfig) -> HeldVersion:
    """Read from each DP's DataLib manifests, read-only: for a data root no running
    hierarchy owns (opening a ContentLibrary would clean its temp folder under a run still
    going). A damaged manifest counts as not held, as the library itself would judge it."""

    @functools.cache  # one read of each library per status query, not one per package
    def versions(library: Path) -> dict[str, int]:
        latest: dict[str, int] = {}
        for m in inspect_library(library).manifests.values():
            latest[m.package_id] = max(m.version, latest.get(m.package_id, 0))
        return latest

    def held(dp: DistributionPointRow, pkg_id: str) -> int:
        library = content_library(dp_root(config, dp.server_name, dp.is_site_server))
        return versions(library).get(pkg_id, 0)

    return held


async def dp_content_status(
    db: SiteDatabase, pkg_id: str, site_code: str, held: HeldVersion
) -> tuple[ContentStatus, ...]:
    """Per DP the package targets (or was removed from): state from the site's rows,
    version from ``held``, bytes sent from the DP's latest install."""
    read = await db.content_rows(pkg_id, site_code)  # one hop, one snapshot
    rows = {r.pkg_server: r for r in read.status}
    servers = {s.nal_path: s for s in read.servers}
    sent = {r.nal_path: r for r in read.sent}
    out: list[ContentStatus] = []
    for nal in servers.keys() | rows.keys():
        dp = await db.distribution_point(nal)
        if dp is None:
            continue
        row = rows.get(nal)
        state: ContentState = (
            "InProgress"
            if row is None
            else _FINAL_STATES.get(PkgStatusValue(row.status), "InProgress")
        )
        server_row = servers.get(nal)
        asked = server_row is not None and (
            server_row.action != ServerAction.NONE
            or server_row.refresh_trigger
            or state == "Removed"  # added back after a removal
        )
        if asked or (dp.dp_id in read.busy and state in ("Installed", "Removed", "Failed")):
            state = "InProgress"  # asked for, or a new job for it is still open
        stored = read.messages.get(nal)
        last = None if stored is None else stored_message(stored)
        moved = sent.get(nal)
        out.append(
            ContentStatus(
                dp=dp.server_name,
                nal_path=nal,
                state=state,
                version=held(dp, pkg_id),
                last_message=None if last is None else last.message_id,
                detail=describe(last) if last is not None and last.severity != "I" else "",
                bytes_full=moved.bytes_full if moved is not None else 0,
                bytes_delta=moved.bytes_delta if moved is not None else 0,
                percent=read.percents.get(dp.dp_id) if state == "InProgress" else None,
            )
        )
    return tuple(sorted(out, key=lambda d: d.dp))
