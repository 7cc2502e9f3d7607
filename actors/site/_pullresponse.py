"""DistMgr's processing of a ``<PkgStatusID>.PUL``: a pull DP's state message, which the
State System stored in ``PullDPResponse``, becomes the DP's package status.

A success (State ID 1) for the version the site stores makes the DP Installed, marks it a
source of that version (``ContentDPMap``), ends its pull jobs for the package with 8210
and deletes the response row, in one commit. A failure (State ID 3: the pull DP refused
the job, its package info bundle did not verify) makes it Failed and ends the jobs with
8204 and the pull DP's reason; a redistribute tries again. An in-progress message (State
ID 2) stores its download percentage on the DP's job (``content_status`` shows it), and the
job's last one the bytes that crossed, which the success records in ``DPTransferBytes``
(or records itself, when a restart let the success be processed first).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from actors.dp import (
    STATE_FAILED,
    STATE_IN_PROGRESS,
    STATE_SUCCESS,
    PullProgress,
    parse_progress,
)
from actors.site.messages import PACKAGE_CHANGED_TOPIC, PackageChanged, PullResponseNotification
from actors.sitedb import (
    DistributionJobRow,
    JobAction,
    PkgStatusValue,
    PullResponseDetail,
    ops,
    product_time,
)
from actors.status import ATTR_DP_NAL_PATH, ATTR_PACKAGE_ID, ATTR_PACKAGE_VERSION, StatusMessage

if TYPE_CHECKING:
    from actors.site._distmgr import DistMgr

__all__ = ["process_pull_response"]


async def process_pull_response(mgr: DistMgr, msg: PullResponseNotification) -> None:
    pks = msg.pkg_status_id
    mgr.trace(
        "SQL>>>select s.ID, s.PkgServer, s.SiteCode, p.StoredPkgVersion, s.Status,"
        " r.PkgVersion, r.ActionState, r.ActionData, p.PkgFlags, p.ShareType,"
        " CONVERT(VARCHAR(64), r.MessageTime, 127) AS MessageTime from PullDPResponse r join"
        f" PkgStatus s on r.PkgStatusID = s.PKID AND r.PkgStatusID = {pks} join SMSPackages p"
        " on s.ID = p.PkgID"
    )
    changed: set[str] = set()
    async with mgr.pul_locks.hold(pks):  # the rows are read and deleted by one at a time
        for r in await mgr.db.pull_response_detail(pks):
            await _process_row(mgr, pks, r)
            changed.add(r.pkg_id)
    mgr.trace(f"~Successfully processed PullDP response file {mgr.pul_box / f'{pks}.PUL'}")
    for pkg_id in sorted(changed):  # last: Hierarchy.wait may return on it
        await mgr.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))


async def _process_row(mgr: DistMgr, pks: int, r: PullResponseDetail) -> None:
    mgr.trace(f"~Processing PullDP response {r.site_code} - {r.pkg_server}")
    mgr.trace(
        f"    Package {r.pkg_id}, Version {r.pkg_version}({r.stored_pkg_version}),"
        f" ActionState {r.action_state}, PkgStatus {r.status}, ActionData = {r.action_data}"
    )
    dp = await mgr.db.distribution_point(r.pkg_server)
    current = r.pkg_version == r.stored_pkg_version  # an older version's message is moot
    if r.action_state == STATE_SUCCESS and current:
        status = PkgStatusValue.INSTALLED
    elif r.action_state == STATE_FAILED and current:
        status = PkgStatusValue.FAILED
    else:
        status = PkgStatusValue(r.status)
    jobs = (
        [
            j
            for j in await mgr.db.distribution_jobs(dp_id=dp.dp_id)
            if j.pkg_id == r.pkg_id
            and j.package_version <= r.pkg_version
            and j.action != JobAction.REMOVE
        ]
        if dp is not None and status in (PkgStatusValue.INSTALLED, PkgStatusValue.FAILED)
        else []
    )
    now = product_time(mgr.clock.wall())
    final = current and status in (PkgStatusValue.INSTALLED, PkgStatusValue.FAILED)
    progress = parse_progress(r.action_data) if r.action_state == STATE_IN_PROGRESS else None
    running = (
        [
            j
            for j in await mgr.db.distribution_jobs(dp_id=dp.dp_id)
            if j.pkg_id == r.pkg_id
            and j.package_version == r.pkg_version
            and j.action != JobAction.REMOVE
        ]
        if dp is not None and progress is not None and current
        else []
    )

    def op(conn: sqlite3.Connection) -> None:
        if jobs and not ops.open_jobs(conn, [j.job_id for j in jobs]):
            raise _JobsEnded  # the status poll ended them since they were read
        if dp is not None and final:  # (an in-progress message rewrites nothing it read)
            ops.upsert_dp_status(
                conn, pkg_id=r.pkg_id, dp=dp, status=status, version=r.pkg_version, now=now
            )
        if dp is not None and status == PkgStatusValue.INSTALLED:
            ops.set_content_dp_map(
                conn, content_id=r.pkg_id, version=r.pkg_version, server_name=dp.server_name
            )
        if dp is not None and progress is not None:
            _store_progress(conn, r, dp.nal_path, running, progress)
        if dp is not None and final and status == PkgStatusValue.INSTALLED and jobs:
            last = max(jobs, key=lambda j: j.package_version)
            # read here, not with the jobs above: an in-progress message of the same
            # response batch may have stored the bytes on the job since
            full, delta = ops.pull_job_bytes(conn, last.job_id)
            if last.package_version == r.pkg_version and (full or delta):
                ops.record_transfer_bytes(
                    conn,
                    pkg_id=r.pkg_id,
                    nal_path=dp.nal_path,
                    version=r.pkg_version,
                    bytes_full=full,
                    bytes_delta=delta,
                )
        for job in jobs:  # the job ends with the status that ends it
            ops.delete_job(conn, job.job_id)
        ops.delete_pull_dp_response(conn, pkg_status_id=pks, message_time=r.message_time)

    messages: list[StatusMessage] = []
    if jobs and dp is not None:
        last = max(jobs, key=lambda j: j.package_version)
        failed = status == PkgStatusValue.FAILED
        strings = (r.pkg_id, str(last.package_version), dp.server_name)
        messages.append(
            mgr.reporter.message(
                8204 if failed else 8210,
                (*strings, r.action_data or "the pull DP reported a failure")
                if failed
                else strings,
                {
                    ATTR_PACKAGE_ID: r.pkg_id,
                    ATTR_PACKAGE_VERSION: str(last.package_version),
                    ATTR_DP_NAL_PATH: dp.nal_path,
                },
            )
        )
    try:
        await mgr.reporter.raise_messages(messages, op=op)
    except _JobsEnded:
        # Nothing was written: once more, without the jobs (and their 8210 or 8204) the
        # poll's status has ended.
        await _process_row(mgr, pks, r)
        return
    mgr.trace(
        f"~Successfully updated the package server status for {r.pkg_server} for package"
        f" {r.pkg_id}, Status {int(status)}"
    )
    mgr.trace(
        f"SQL>>>DELETE FROM PullDPResponse WHERE PkgStatusID = {pks} AND MessageTime ="
        f" '{r.message_time}'"
    )


class _JobsEnded(Exception):
    """The pull jobs a state message would end were ended meanwhile (the status poll)."""


def _store_progress(
    conn: sqlite3.Connection,
    r: PullResponseDetail,
    nal_path: str,
    running: list[DistributionJobRow],
    progress: PullProgress,
) -> None:
    """An in-progress message on the version's open job; the bytes of one that comes after
    the success (a restart can reorder them) go straight to ``DPTransferBytes``. Whether the
    job is still open and the DP Installed is read inside this write: the success may have
    been stored since ``running`` was read."""
    kept = [
        ops.set_pull_progress(
            conn,
            job_id=job.job_id,
            percent=progress.percent,
            bytes_full=progress.bytes_full,
            bytes_delta=progress.bytes_delta,
        )
        for job in running
    ]
    installed = r.pkg_version == r.stored_pkg_version and ops.dp_status_is(
        conn, r.pkg_id, nal_path, PkgStatusValue.INSTALLED, r.pkg_version
    )
    if not any(kept) and installed and progress.bytes_full is not None:
        ops.record_transfer_bytes(
            conn,
            pkg_id=r.pkg_id,
            nal_path=nal_path,
            version=r.pkg_version,
            bytes_full=progress.bytes_full,
            bytes_delta=progress.bytes_delta or 0,
            keep_larger=True,
        )
