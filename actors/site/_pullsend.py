"""PkgXferMgr's pull DP sending thread: the reference's four phases.

1. *Sources*: the source DPs (``PullDPMap`` joined to ``ContentDPMap``) that hold the
   exact version; none: 8212 and a retry after ``pulldp_retry_delay``.
2. *Capacity*: the pull DP's jobs in states 2-4 with a ``SendAction`` against its
   ``max_active_jobs``; full: 8211 and a retry.
3. *Package info bundle*: ``<PkgID>.TZ`` (the version's manifests) with its SHA-256, copied
   into the pull DP's ``SMS_DP$``.
4. *Notification*: the XML, stored by the pull DP (``PullDPNotify``); the job gets
   ``SendAction = N'PullQueryResultAction'`` and stays until the pull DP's state message
   (or a status poll, the backup) ends it.

The site sends no content itself, so no 8200; 8210 comes when the job ends.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from actors import addresses
from actors.dp import (
    PackageInfoBundle,
    PullContent,
    PullDPHolds,
    PullDPNotify,
    PullLocation,
    PullNotification,
    bundle_bytes,
    bundle_name,
    notification_xml,
    staging_folder,
)
from actors.site._sending import RetryJob
from actors.sitedb import (
    DistributionJobRow,
    DistributionPointRow,
    JobAction,
    JobState,
    PkgStatusValue,
    ops,
    product_time,
)
from bus import BusError
from contentlib import ContentLibError, content_id

if TYPE_CHECKING:
    from actors.site._pkgxfermgr import PkgXferMgr

__all__ = ["PollPullJob", "PullSending"]

ContentUrl = Callable[[str, str], str]  # (source DP, content ID) -> its DPUrl


class PollPullJob(msgspec.Struct, frozen=True):
    """The status poll of a notified pull DP job (``count`` polls so far)."""

    job_id: int
    count: int = 1


class PullSending:
    """The pull DP side of one PkgXferMgr."""

    def __init__(self, mgr: PkgXferMgr, content_url: ContentUrl) -> None:
        self.mgr = mgr
        self.content_url = content_url
        # Packages with a pull DP job that found no source: a standard DP of the site
        # installing one of them wakes those jobs (no read per job for the others).
        self._awaiting_source: set[str] = set()

    async def run(self, job: DistributionJobRow, dp: DistributionPointRow, priority: int) -> None:
        mgr, settings = self.mgr, self.mgr.settings
        mgr.trace(
            f"Pull DP Sending thread starting for Job: {job.job_id}, package: {job.pkg_id},"
            f" Version: {job.package_version}, Priority: {priority}, server: {dp.server_name},"
            f" DPPriority: {dp.priority}"
        )
        attempts = settings.pulldp_notification_attempts
        failures = job.failure_count + 1
        restart = _restart_text(mgr.clock.wall(), settings.pulldp_retry_delay)
        # Phase 1: sources.
        sources = await mgr.db.pull_dp_sources(dp.server_name, job.pkg_id, job.package_version)
        if not sources:
            mgr.trace(
                f"~Unable to find any source locations for one or more contents under package"
                f" {job.pkg_id}, for pull DP {dp.server_name}. Notification not sent."
            )
            mgr.trace(
                f"~ PullDP notification failed. Failure count = {failures}/{attempts},"
                f" Restart time = {restart}"
            )
            await self._retry(job, dp, 8212, failures)
            return
        # Phase 2: capacity.
        capacity = dp.max_active_jobs or settings.pulldp_max_active_jobs
        if await mgr.db.pull_dp_active_jobs(dp.nal_path) >= capacity:
            mgr.trace(f"PullDP {dp.nal_path} has reached maximum capacity {capacity}")
            mgr.trace(f"PullDP has no capacity. Restart time = {restart}", severity="W")
            await self._retry(job, dp, 8211, failures, count=False)
            return
        # Phase 3: the package info bundle.
        cid = content_id(job.pkg_id, job.package_version)
        try:
            manifest = mgr.library.manifest(cid)
        except ContentLibError:
            mgr.trace(f"~Content {cid} is not in the site's content library", severity="E")
            await self._retry(job, dp, 8212, failures)
            return
        mgr.trace(f"Sending package info bundle {job.pkg_id} to PullDP. {dp.nal_path}")
        data, digest = bundle_bytes(PackageInfoBundle(job.pkg_id, job.package_version, (manifest,)))
        share = staging_folder(mgr.dp_root(dp))
        await anyio.to_thread.run_sync(_write_atomic, share / bundle_name(job.pkg_id), data)
        # Phase 4: the notification.
        notification = PullNotification(
            pkg_id=job.pkg_id,
            version=job.package_version,
            action="redist" if job.action == JobAction.REDISTRIBUTE else "add",
            allow_fallback=True,
            package_size=sum(f.size for f in manifest.files),
            hash=digest,
            priority=priority,
            contents=(
                PullContent(
                    cid,
                    tuple(
                        PullLocation(self.content_url(src, cid), rank, src)
                        for rank, src in enumerate(sources, 1)
                    ),
                ),
            ),
        )
        try:
            await mgr.request(
                addresses.pulldp(dp.server_name),
                PullDPNotify(job.pkg_id, job.package_version, notification_xml(notification)),
            )
        except BusError as exc:
            mgr.trace(f"~Failed to notify pull DP {dp.server_name}: {exc}", severity="W")
            await self._retry(job, dp, 8212, failures)
            return
        mgr.trace(f"~Successfully performed WMI actions on pull DP {dp.server_name}.")
        mgr.trace(
            f"~ PullDP notification sent. Attempted count = {failures}/{attempts},"
            f" Restart time = {restart}"
        )
        now = product_time(mgr.clock.wall())
        notified = partial(ops.set_pull_notified, job_id=job.job_id, dp_id=dp.dp_id, now=now)
        in_progress = partial(
            ops.upsert_dp_status,
            pkg_id=job.pkg_id,
            dp=dp,
            status=PkgStatusValue.NONE,
            version=job.package_version,
            now=now,
        )

        def op(conn: sqlite3.Connection) -> None:
            notified(conn)
            in_progress(conn)

        await mgr.db.write(op)
        await mgr.changed(job.pkg_id)
        mgr.trace("Pull DP Sending thread complete~")
        mgr.send_later(settings.pulldp_polling_delay, mgr.address, PollPullJob(job.job_id))

    async def _retry(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        message_id: int,
        failures: int,
        *,
        count: bool = True,
    ) -> None:
        """8212 / 8211 and Retrying until ``pulldp_notification_attempts`` tries have
        failed, then Failed (8204)."""
        mgr, settings = self.mgr, self.mgr.settings
        give_up = count and failures >= settings.pulldp_notification_attempts
        delay = settings.pulldp_retry_delay
        fail = partial(
            ops.fail_job,
            job_id=job.job_id,
            give_up=give_up,
            failures=failures if count else job.failure_count,
            restart_time=None if give_up else product_time(_later(mgr.clock.wall(), delay)),
            now=product_time(mgr.clock.wall()),
        )
        reason = (
            "no source DP holds the content yet"
            if message_id == 8212
            else "the pull DP has reached its maximum capacity"
        )
        messages = [mgr._message(message_id, job, dp)]
        if give_up:
            messages.append(mgr._message(8204, job, dp, reason))
        await mgr.reporter.raise_messages(messages, op=fail)
        await mgr._status(
            job, dp, PkgStatusValue.FAILED if give_up else PkgStatusValue.RETRY, reason
        )
        if not give_up:
            if message_id == 8212:
                self._awaiting_source.add(job.pkg_id)
            mgr.send_later(delay, mgr.address, RetryJob(job.job_id, job.action))

    async def source_installed(self, pkg_id: str, source: str) -> None:
        """A standard DP of the site now holds the package: a pull DP job that found no
        source (8212) tries again now instead of after ``pulldp_retry_delay`` (20 minutes
        by default: a package sent to a pull DP and its source at once would otherwise
        wait that long for nothing). The retry already scheduled stays; it finds the job
        ended, notified or retrying again, as any retry does."""
        if pkg_id not in self._awaiting_source:
            return
        self._awaiting_source.discard(pkg_id)  # a try that finds none again puts it back
        mgr = self.mgr
        for job in await mgr.db.distribution_jobs(state=JobState.RETRYING):
            if job.pkg_id != pkg_id or job.action == JobAction.REMOVE:
                continue
            dp = await mgr.db.distribution_point(job.dp_id)
            if dp is None or not dp.is_pull_dp:
                continue
            if source not in await mgr.db.pull_dp_sources(
                dp.server_name, job.pkg_id, job.package_version
            ):
                continue  # not one of its sources, or another version
            mgr.trace(
                f"~Source DP {source} now holds package {job.pkg_id} version"
                f" {job.package_version}: retrying the notification of pull DP"
                f" {dp.server_name} now (job {job.job_id})"
            )
            mgr.send_later(0.0, mgr.address, RetryJob(job.job_id, job.action))

    async def held_version(self, dp: DistributionPointRow, pkg_id: str, version: int) -> int:
        """For a cancel: ``version`` if the pull DP's library holds it (its job may have
        ended just before the cancel reached it, or was a redistribute of a version it
        has), else 0 (also when it does not answer)."""
        try:
            holds = await self.mgr.request(
                addresses.pulldp(dp.server_name), PullDPHolds(pkg_id, version)
            )
        except BusError:
            return 0
        return version if holds else 0

    async def poll(self, msg: PollPullJob) -> None:
        """The backup: ask the pull DP whether it holds the version; if so, end the job."""
        mgr = self.mgr
        job = await mgr.db.distribution_job(msg.job_id)
        if job is None or job.state != JobState.NOTIFIED:
            return  # ended by the state message
        dp = await mgr.db.distribution_point(job.dp_id)
        if dp is None:
            return
        pkg = await mgr.db.package(job.pkg_id)
        mgr.trace(
            f"Pull DP Sending thread starting for Job: {job.job_id}, package: {job.pkg_id},"
            f" Version: {job.package_version}, Priority: {pkg.priority if pkg else 2},"
            f" server: {dp.server_name}, DPPriority: {dp.priority}"
        )
        try:
            holds = await mgr.request(
                addresses.pulldp(dp.server_name), PullDPHolds(job.pkg_id, job.package_version)
            )
        except BusError:
            holds = False
        if holds:
            mgr.trace(
                f"~Finished sending SWD package {job.pkg_id} version {job.package_version}"
                f" to distribution point {dp.server_name}"
            )
            # As a sending thread ends: the final STA dropped, 8210 stored, then DistMgr
            # told (it deletes the job with the Installed status, in one commit). The bytes
            # are the job's as they are now (the pull DP's last in-progress message may have
            # set them since the poll began).
            sent = mgr._message(8210, job, dp)
            job = await mgr.db.distribution_job(job.job_id) or job
            dropped = await mgr._drop_status(
                job,
                dp,
                PkgStatusValue.INSTALLED,
                bytes_full=job.bytes_full,
                bytes_delta=job.bytes_delta,
            )
            try:
                await mgr.reporter.raise_messages([sent], op=partial(_still_open, job.job_id))
            except _JobEnded:  # the pull DP's state message ended it meanwhile, with 8210
                await mgr.inbox.remove(Path(dropped.path))
            else:
                await mgr._deliver_status(job, dp, PkgStatusValue.INSTALLED, dropped)
        elif msg.count < mgr.settings.pulldp_status_polls:
            delay = mgr.settings.pulldp_polling_delay
            mgr.send_later(delay, mgr.address, PollPullJob(msg.job_id, msg.count + 1))
        mgr.trace("Pull DP Sending thread complete~")


class _JobEnded(Exception):
    """The job a status poll would end was ended meanwhile (the pull DP's state message)."""


def _still_open(job_id: int, conn: sqlite3.Connection) -> None:
    if not ops.open_jobs(conn, [job_id]):
        raise _JobEnded


def _later(now: dt.datetime, delay: float) -> dt.datetime:
    return now + dt.timedelta(seconds=delay)


def _restart_text(now: dt.datetime, delay: float) -> str:
    """The reference's ``Restart time = 1/10/2019 2:00:42 AM`` (UTC here)."""
    t = _later(now, delay).astimezone(dt.UTC)
    return f"{t.month}/{t.day}/{t.year} {t:%I:%M:%S %p}".replace(" 0", " ", 1) + " UTC"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
