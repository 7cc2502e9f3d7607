"""PkgXferMgr: the package transfer manager of a site server.

It takes the ``DistributionJobs`` rows SMSDBMON hands it and, for a standard DP, runs a
sending thread per job: every file the DP lacks (all of them on Redistribute) is copied in
chunks over the DP's link into its ``SMS_DP$`` share, as a delta against the DP's previous
version of the file where that is smaller, and the DP provider is asked to verify and add
each file and then the content version. A cut transfer resumes from the staged bytes on
the next try; a failed job is retried on ``distribution_retry_delay``.

Jobs of one package on one DP run in creation order, and a newer job supersedes an older
one that has not started (an update queued behind a distribute sends only the newest).
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors._crashpoints import crash_point
from actors.config import Settings
from actors.dpprovider import (
    DPAddContent,
    DPAddFile,
    DPApplyDelta,
    DPInventory,
    DPQuery,
    DPRemovePackage,
    DPSignature,
    staging_name,
)
from actors.errors import TransferError
from actors.messages import DistributionJobNotification, TransferStatus
from actors.network import NetworkLink
from actors.sitedb import (
    DistributionJobRow,
    DistributionPointRow,
    JobAction,
    JobState,
    PackageRow,
    PkgStatusValue,
    SiteDatabase,
    ops,
    product_time,
)
from actors.status import (
    ATTR_DP_NAL_PATH,
    ATTR_PACKAGE_ID,
    ATTR_PACKAGE_VERSION,
    CMTraceLog,
    StatusMessage,
    StatusReporter,
)
from bus import Actor, BusError, RemoteError, handler
from contentlib import (
    ContentLibError,
    ContentLibrary,
    FileEntry,
    FileSignature,
    HashMismatch,
)

__all__ = ["PkgXferMgr", "RetryJob"]

# Chunk sizes: the reference writes 983040-byte blocks to a throttled share; a local,
# unthrottled copy goes in large blocks, one worker-thread hop each.
_LINK_CHUNK = 983040
_LOCAL_CHUNK = 64 << 20
# Below this a file is sent whole: a delta cannot save enough to pay for itself.
_DELTA_MIN_SIZE = 16 << 10


class RetryJob(msgspec.Struct, frozen=True):
    """Scheduled by PkgXferMgr itself when a job failed and its retry delay has passed."""

    job_id: int


class PkgXferMgr(Actor):
    """``<SITE>/PkgXferMgr``: sending threads (workers) for standard-DP jobs."""

    def __init__(
        self,
        *,
        site: str,
        db: SiteDatabase,
        library: ContentLibrary,
        reporter: StatusReporter,
        settings: Settings,
        links: Mapping[str, NetworkLink],
        dp_root: Callable[[DistributionPointRow], Path],
        log: CMTraceLog | None = None,
    ) -> None:
        self.site = site
        self.db = db
        self.library = library
        self.reporter = reporter
        self.settings = settings
        self.links = links
        self.dp_root = dp_root
        self.log_file = log
        self.distmgr = f"{site}/DistMgr"
        # Sending capacity: max packages x threads per package sending threads.
        self.workers = settings.pkgxfer_max_packages * settings.pkgxfer_threads_per_package
        self.mailbox_size = 10_000
        self._active: set[int] = set()
        self._order: defaultdict[tuple[int, str], anyio.Lock] = defaultdict(anyio.Lock)

    async def on_start(self) -> None:
        # Jobs a previous run accepted but did not finish are taken up again; a job that
        # also arrives from SMSDBMON is run once (``_active`` and the row's state).
        for job in await self.db.distribution_jobs():
            if job.state == JobState.RETRYING:
                self.send_later(
                    self.settings.distribution_retry_delay, self.address, RetryJob(job.job_id)
                )
            elif job.state != JobState.FAILED:
                self.send_later(0.0, self.address, RetryJob(job.job_id))

    async def request(self, address: str, msg: Any, timeout: float | None = None) -> Any:
        """Ask DistMgr or a DP provider, with no clock timeout by default: their time is
        real work (hashing a file, a database write), not simulated network time, and a
        60-clock-second timeout at time_scale 0.0001 fired after 6 ms and failed good jobs."""
        return await super().request(address, msg, timeout)

    @handler
    async def job_created(self, msg: DistributionJobNotification) -> None:
        await self._run(msg.job_id)

    @handler
    async def retry(self, msg: RetryJob) -> None:
        await self._run(msg.job_id)

    # -- one job -------------------------------------------------------------------------

    async def _run(self, job_id: int) -> None:
        if job_id in self._active:
            return
        self._active.add(job_id)
        try:
            found = await self.db.distribution_job_superseded(job_id)
            if found is None or found[0].state == JobState.FAILED:
                return  # finished (the row is deleted) or given up
            key = (found[0].dp_id, found[0].pkg_id)
            lock = self._order[key]
            waited = lock.locked()
            async with lock:
                if waited:  # an earlier job of this DP and package ran meanwhile
                    found = await self.db.distribution_job_superseded(job_id)
                if found is not None and found[0].state != JobState.FAILED:
                    await self._run_in_order(*found)
            if not lock.locked() and not lock.statistics().tasks_waiting:
                del self._order[key]  # one lock per DP and package in flight, not forever
        finally:
            self._active.discard(job_id)

    async def _run_in_order(self, job: DistributionJobRow, superseded: bool) -> None:
        if superseded:
            await self._end_superseded(job, "a newer job")
            return
        dp = await self.db.distribution_point(job.dp_id)
        if dp is None:
            await self.db.write(partial(ops.delete_job, job_id=job.job_id))
            return
        if dp.server_name not in self.links:
            reason = f"distribution point {dp.server_name} is not in the hierarchy file"
            await self._failed(job, dp, _GiveUp(reason), give_up=True)
            return
        if job.action == JobAction.REMOVE:
            await self._remove(job, dp)
            return
        pkg = await self.db.package(job.pkg_id)
        if pkg is None or pkg.stored_pkg_version > job.package_version:
            # A job for an older version than the site stores: the newer version's job
            # (created with the version, in the same commit) brings the DP up to date.
            await self._end_superseded(job, "a newer version of the package")
            return
        self._log(
            f"Found send request with ID: {job.job_id}, Package: {job.pkg_id},"
            f" Version:{job.package_version}, Priority: 2, Destination: {dp.server_name},"
            " DPPriority: 200"
        )
        try:
            inventory = await self._inventory(job, dp)
            if inventory.previous is not None and inventory.previous.version > job.package_version:
                await self._end_superseded(job, f"version {inventory.previous.version} on the DP")
                return
            self._log(
                f"Sending thread starting for Job: {job.job_id}, package: {job.pkg_id},"
                f" Version: {job.package_version}, Priority: 2, server: {dp.server_name},"
                " DPPriority: 200"
            )
            await self._status(job, dp, PkgStatusValue.NONE)  # DistMgr marks the job SENDING
            await self._send(job, dp, pkg, inventory)
        except _Superseded as exc:  # (jobs of one DP and package run one at a time)
            await self._end_superseded(job, str(exc))
            return
        except _GiveUp as exc:
            await self._failed(job, dp, exc, give_up=True)
            return
        except _TRANSIENT as exc:
            await self._failed(job, dp, exc)
            return
        except Exception as exc:
            await self._failed(job, dp, _GiveUp(f"{type(exc).__name__}: {exc}"), give_up=True)
            return
        self._log("~Sending completed successfully")
        self._log(
            f"~Finished sending SWD package {job.pkg_id} version {job.package_version}"
            f" to distribution point {dp.server_name}"
        )
        # 8200 and 8210 (one commit) before the status-3 STA: DistMgr's 2330 follows them,
        # as in the reference, and once the DP reads Installed every message is stored.
        await self.reporter.raise_messages(
            [self._message(8200, job, dp), self._message(8210, job, dp)]
        )
        # DistMgr deletes the job with its final status (one commit): nothing left here.
        await self._status(job, dp, PkgStatusValue.INSTALLED)
        self._log("Sending thread complete~")

    async def _end_superseded(self, job: DistributionJobRow, by: str) -> None:
        """End a job without touching the DP: something newer covers it."""
        self._log(f"~Job {job.job_id} for package {job.pkg_id} is superseded by {by}")
        await self.db.write(partial(ops.delete_job, job_id=job.job_id))

    async def _inventory(self, job: DistributionJobRow, dp: DistributionPointRow) -> DPInventory:
        content_id = f"{job.pkg_id}.{job.package_version}"
        try:
            manifest = self.library.manifest(content_id)
        except ContentLibError as exc:
            raise _GiveUp(
                f"content {content_id} is not in the content library of site {self.site}"
            ) from exc
        inventory: DPInventory = await self.request(
            _provider(dp), DPQuery(job.pkg_id, tuple(f.sha256 for f in manifest.files))
        )
        return inventory

    async def _send(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        pkg: PackageRow,
        inventory: DPInventory,
    ) -> None:
        content_id = f"{job.pkg_id}.{job.package_version}"
        manifest = self.library.manifest(content_id)
        redistribute = job.action == JobAction.REDISTRIBUTE
        self._log(f"Sending legacy content {content_id} for package {job.pkg_id}")
        self._log(f"Redistribute={int(redistribute)}, Related=")
        provider = _provider(dp)
        link = self.links[dp.server_name]
        previous = {f.path: f for f in inventory.previous.files} if inventory.previous else {}
        done: set[str] = set()
        for entry, present in zip(manifest.files, inventory.present, strict=True):
            if entry.sha256 in done or (present and not redistribute):
                continue
            done.add(entry.sha256)
            old = previous.get(entry.path)
            source = _SiteCopy(entry, Path(pkg.source) / entry.path)
            if (
                not redistribute
                and old is not None
                and old.sha256 != entry.sha256
                and entry.size >= _DELTA_MIN_SIZE
                and await self._send_delta(source, old, content_id, dp, link)
            ):
                continue
            await self._send_file(source, content_id, dp, link, replace=redistribute)
            self._log(f"Adding {entry.path} file in {content_id}")
            crash_point("pkgxfermgr.file_sent")
        added: bool = await self.request(provider, DPAddContent(manifest))
        if not added:
            raise _Superseded(f"{dp.server_name} holds a newer version of {job.pkg_id}")
        crash_point("pkgxfermgr.content_added")
        self._log(f"Completed post-actions for remote DP {dp.server_name}")

    async def _send_file(
        self,
        copy: _SiteCopy,
        content_id: str,
        dp: DistributionPointRow,
        link: NetworkLink,
        *,
        replace: bool,
    ) -> None:
        entry = copy.entry
        name = staging_name(entry.sha256, content_id)
        staged = self.dp_root(dp) / "SMS_DP$" / name
        self._log(f"Sending file '\\\\{dp.server_name}\\SMS_DP$\\{name}'")
        try:
            await _transmit(
                self.library.file_path(entry.sha256), entry.size, staged, link, self._log
            )
            await self.request(_provider(dp), DPAddFile(entry.sha256, entry.size, name, replace))
        except (FileNotFoundError, RemoteError) as exc:
            if isinstance(exc, RemoteError) and not isinstance(exc.original, HashMismatch):
                raise
            # The DP got other bytes than the hash says, or the site has no copy: the
            # site's library may be damaged. Mend it from the source and send it again.
            await self._mend_site_copy(copy, exc)
            await self._send_file(copy, content_id, dp, link, replace=replace)

    async def _mend_site_copy(self, copy: _SiteCopy, exc: BaseException) -> None:
        """Check the site's stored file; re-read it from the package source where the source
        still has those bytes. Raises ``_GiveUp`` (naming the file) where it does not, and
        the original error where the stored copy is fine (the bytes were damaged in transit)."""
        entry = copy.entry
        if copy.mended or await self.library.verify_file(entry.sha256) == "ok":
            raise exc
        copy.mended = True
        if await self.library.repair_file(entry.sha256, entry.size, copy.source):
            self._log(
                f"The content library's copy of {entry.path} ({entry.sha256}) was damaged;"
                f" it was read again from the package source {copy.source}",
                severity="W",
            )
            return
        raise _GiveUp(
            f"the site's copy of {entry.path} ({entry.sha256}) is damaged and the package"
            f" source {copy.source} no longer holds those bytes; update the package"
        ) from exc

    async def _send_delta(
        self,
        copy: _SiteCopy,
        old: FileEntry,
        content_id: str,
        dp: DistributionPointRow,
        link: NetworkLink,
    ) -> bool:
        """Send a file as a delta from the DP's ``old`` file; False when that is not smaller
        (or did not rebuild the file on the DP: the whole file goes instead)."""
        entry = copy.entry
        if self.library.has_file(old.sha256):
            delta = bytes(await self.library.file_delta(old.sha256, entry.sha256))
        else:  # the site no longer has the old file: the DP's signature of it will do
            sig: FileSignature = await self.request(_provider(dp), DPSignature(old.sha256))
            delta = bytes(await self.library.file_delta_from_signature(sig, entry.sha256))
        if len(delta) >= entry.size:
            return False
        name = staging_name(entry.sha256, content_id, "delta")
        staged = self.dp_root(dp) / "SMS_DP$" / name
        self._log(
            f"Sending delta of {entry.path} ({len(delta)} of {entry.size} bytes)"
            f" '\\\\{dp.server_name}\\SMS_DP$\\{name}'"
        )
        await _transmit(delta, len(delta), staged, link, self._log)
        try:
            await self.request(
                _provider(dp), DPApplyDelta(old.sha256, name, entry.sha256, entry.size)
            )
        except RemoteError as exc:
            if not isinstance(exc.original, HashMismatch):
                raise
            # Built from a damaged copy on one side or the other: the whole file goes.
            await self._mend_site_copy(copy, exc)
            return False
        self._log(f"Adding {entry.path} file in {content_id} (delta)")
        return True

    async def _remove(self, job: DistributionJobRow, dp: DistributionPointRow) -> None:
        self._log(f"Removing package {job.pkg_id} from distribution point {dp.server_name}")
        try:
            await self.request(_provider(dp), DPRemovePackage(job.pkg_id))
        except BusError as exc:
            await self._failed(job, dp, exc)
            return
        await self._status(job, dp, PkgStatusValue.REMOVED)  # DistMgr ends the job

    async def _failed(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        exc: BaseException,
        *,
        give_up: bool = False,
    ) -> None:
        """8203 and Retrying until the retries run out (or at once for a failure no retry
        can mend: ``give_up``), then 8204 and Failed; the reason goes with both."""
        failures = job.failure_count + 1
        give_up = give_up or failures > self.settings.distribution_retry_count
        delay = self.settings.distribution_retry_delay
        restart = self.clock.wall().timestamp() + delay
        self._log(
            f"Failed to send package {job.pkg_id} version {job.package_version} to"
            f" {dp.server_name}: {exc}. Failure count = {failures}/"
            f"{self.settings.distribution_retry_count}",
            severity="E" if give_up else "W",
        )
        row = (
            int(JobState.FAILED if give_up else JobState.RETRYING),
            failures,
            None if give_up else product_time(_utc(restart)),
            product_time(),
            job.job_id,
        )
        await self.reporter.raise_messages(
            [self._message(8204 if give_up else 8203, job, dp, str(exc))],
            op=lambda conn: conn.execute(
                "update DistributionJobs set State = ?, FailureCount = ?, RestartTime = ?,"
                " LastUpdateTime = ? where JobID = ?",
                row,
            ),
        )
        await self._status(
            job, dp, PkgStatusValue.FAILED if give_up else PkgStatusValue.RETRY, str(exc)
        )
        if not give_up:
            self.send_later(delay, self.address, RetryJob(job.job_id))

    # -- helpers -------------------------------------------------------------------------

    async def _status(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        status: PkgStatusValue,
        detail: str = "",
    ) -> None:
        """The STA to DistMgr; awaited, so the job ends only after the status is stored."""
        await self.request(
            self.distmgr,
            TransferStatus(
                job.job_id,
                job.pkg_id,
                job.package_version,
                dp.server_name,
                dp.nal_path,
                int(status),
                detail,
            ),
        )
        self._log(
            f"Sent status to the distribution manager for pkg {job.pkg_id}, version"
            f" {job.package_version}, status {int(status)} and distribution point"
            f" {dp.nal_path}~"
        )

    def _message(
        self,
        message_id: int,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        reason: str | None = None,
    ) -> StatusMessage:
        attributes = {ATTR_PACKAGE_ID: job.pkg_id, ATTR_PACKAGE_VERSION: str(job.package_version)}
        if message_id != 8200:  # the reference's 8200 names no DP attribute
            attributes[ATTR_DP_NAL_PATH] = dp.nal_path
        strings: tuple[str, ...] = (job.pkg_id, str(job.package_version), dp.server_name)
        if reason is not None:
            strings += (reason,)
        return self.reporter.message(message_id, strings, attributes)

    def _log(self, line: str, *, severity: str = "I") -> None:
        if self.log_file is not None:
            self.log_file.write(line, severity=severity)


_TRANSIENT = (TransferError, ContentLibError, BusError, OSError)
"""Failures a later try may not meet again (a link, a disk, a busy DP): retried."""


class _GiveUp(Exception):
    """A failure no retry can mend (the DP is gone from the hierarchy, the site's content
    is damaged beyond repair): the job fails at once, with this reason."""


class _Superseded(_GiveUp):
    """The DP already holds a newer version: the job ends without touching it."""


class _SiteCopy:
    """A file of the version being sent: its entry, where the package source has it, and
    whether its stored copy was already mended during this job (mended once, not twice)."""

    __slots__ = ("entry", "mended", "source")

    def __init__(self, entry: FileEntry, source: Path) -> None:
        self.entry = entry
        self.source = source
        self.mended = False


def _provider(dp: DistributionPointRow) -> str:
    return f"{dp.server_name}/DPProvider"


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


async def _transmit(
    source: Path | bytes,
    size: int,
    staged: Path,
    link: NetworkLink,
    log: Callable[[str], None],
) -> None:
    """Copy ``source`` to the staged file over ``link``, resuming after a cut transfer.

    Bytes a cut transfer left in the staged file are kept and the copy goes on from their
    end ("Attempt to write N bytes ... at position P"); the DP verifies the whole file's
    hash before it is used, so a damaged remainder costs one more try, never bad content.
    """
    await link.open()
    chunk = _LINK_CHUNK if link.throttled else _LOCAL_CHUNK
    resume_at: int | None = None  # found in the worker thread, with the first chunk
    while True:  # at least once: an empty file is written too
        position, n = await anyio.to_thread.run_sync(
            _write_chunk, source, size, staged, resume_at, link.allowance(chunk)
        )
        if link.throttled:
            log(f"~Wrote {n} bytes to {staged.name} at position {position}")
        position += n
        resume_at = position
        await link.carry(n)
        if position >= size:
            return


def _write_chunk(
    source: Path | bytes, size: int, staged: Path, position: int | None, allowed: int
) -> tuple[int, int]:
    """Write the next chunk (at most ``allowed`` bytes); returns where it went and its size."""
    if position is None:
        position = _resume_position(staged, size)
    n = min(allowed, size - position)
    _write_range(source, staged, position, n)
    return position, n


def _resume_position(staged: Path, size: int) -> int:
    try:
        have = staged.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size:
        staged.unlink()
        return 0
    return have


def _write_range(source: Path | bytes, staged: Path, position: int, n: int) -> None:
    staged.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT
    fd = os.open(staged, flags, 0o644)
    try:
        os.ftruncate(fd, position)  # drop anything past the resume point
        if isinstance(source, bytes):
            os.pwrite(fd, source[position : position + n], position)
            return
        with open(source, "rb") as src:
            src.seek(position)
            offset = position
            remaining = n
            while remaining:
                block = src.read(min(remaining, 8 << 20))
                if not block:
                    raise TransferError(f"{source} ended before {position + n} bytes")
                os.pwrite(fd, block, offset)
                offset += len(block)
                remaining -= len(block)
    finally:
        os.close(fd)
