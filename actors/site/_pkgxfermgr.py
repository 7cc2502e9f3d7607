"""PkgXferMgr: the package transfer manager of a site server.

It takes the ``DistributionJobs`` rows SMSDBMON hands it and, for a standard DP, runs a
sending thread per job: every file the DP lacks (all of them on Redistribute) is copied in
chunks over the DP's link into its ``SMS_DP$`` share, as a delta against the DP's previous
version of the file where that is smaller, and the DP provider is asked to verify and add
each file and then the content version. A cut transfer resumes from the staged bytes on
the next try; a failed job is retried on ``distribution_retry_delay``.

Jobs of one package on one DP run in creation order, and a newer job supersedes an older
one that has not started (an update queued behind a distribute sends only the newest).

While it sends, a job publishes :class:`~actors.messages.TransferProgress` on
``transfer_progress`` (rate-limited) and counts the bytes that cross the link, whole files
and deltas apart; they reach DistMgr with the Installed status. An administrator's
:class:`~actors.messages.CancelTransfer` (and a removal of the package from the DP) stops
a send within one chunk; see :meth:`PkgXferMgr.cancel_transfer` for what it leaves.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from actors import addresses
from actors._crashpoints import crash_point
from actors.config import Settings
from actors.dp import (
    DPAbandon,
    DPAddContent,
    DPAddFile,
    DPApplyDelta,
    DPInventory,
    DPQuery,
    DPRemovePackage,
    DPSignature,
    discard_staged,
    staging_folder,
    staging_name,
)
from actors.errors import TransferError
from actors.network import NetworkLink
from actors.site._inbox import StatusInbox
from actors.site._keyed import KeyedLocks
from actors.site._pullsend import PollPullJob, PullSending
from actors.site._sending import RetryJob, Send, transmit
from actors.site.messages import (
    PACKAGE_CHANGED_TOPIC,
    TRANSFER_PROGRESS_TOPIC,
    CancelTransfer,
    DistributionJobNotification,
    PackageChanged,
    StatusFile,
    TransferProgress,
    TransferStatus,
)
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
    Component,
    StatusMessage,
    StatusReporter,
    as_thread,
    new_thread_id,
)
from bus import BusClosed, BusError, RemoteError, handler
from contentlib import (
    ContentLibError,
    ContentLibrary,
    FileEntry,
    FileSignature,
    HashMismatch,
    ThreadHop,
    content_id,
)

__all__ = ["CANCELLED_REASON", "PROGRESS_INTERVAL", "PkgXferMgr", "RetryJob"]

# Below this a file is sent whole: a delta cannot save enough to pay for itself.
_DELTA_MIN_SIZE = 16 << 10

PROGRESS_INTERVAL = 0.5
"""Clock seconds between two TransferProgress events of one job (first and last chunk
always go): a subscriber sees a bar move, the bus does not carry one event per chunk."""

CANCELLED_REASON = "cancelled by the administrator"
"""The reason an administrator's cancel gives in its 8204 and the DP's status detail."""

# Workers beyond the sending threads: a cancel, a removal or a job parked while every
# sending thread is busy always finds one, so none of them waits for a send to end.
_CONTROL_WORKERS = 4
# The statuses that end a job (their STA ends it: DistMgr deletes the job as it stores them).
_FINAL = (PkgStatusValue.INSTALLED, PkgStatusValue.REMOVED)

_Key = tuple[int, str]  # (DPID, PkgID): the jobs of one package on one DP run in order


class PkgXferMgr(Component):
    """``<SITE>/PkgXferMgr``: sending threads for standard-DP jobs.

    ``sending_threads`` jobs send at once; the actor has a few workers more, so that a
    :class:`CancelTransfer`, a removal and the parking of a job that waits for a sending
    thread are handled at once, never behind the sends.
    """

    # Its asks of DistMgr and the DPs are real work (hashing a file, a database write), not
    # simulated network time: a 60-clock-second timeout at time_scale 0.0001 fired after
    # 6 ms and failed good jobs.
    request_timeout = None

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
        inbox: StatusInbox,
        log: CMTraceLog | None = None,
        content_url: Callable[[str, str], str] | None = None,
    ) -> None:
        self.site = site
        self.inbox = inbox
        self.db = db
        self.library = library
        self.reporter = reporter
        self.settings = settings
        self.links = links
        self.dp_root = dp_root
        self.trace_log = log
        self.distmgr = addresses.distmgr(site)
        # Sending capacity: max packages x threads per package sending threads.
        self.sending_threads = settings.pkgxfer_max_packages * settings.pkgxfer_threads_per_package
        self.workers = self.sending_threads + _CONTROL_WORKERS
        self.mailbox_size = 10_000
        self.progress_interval = PROGRESS_INTERVAL
        self._active: set[int] = set()
        self._order: KeyedLocks[_Key] = KeyedLocks()  # a DP and package's jobs, in order
        self._threads = 0  # sending threads running
        self._parked: deque[int] = deque()  # jobs waiting for a sending thread
        self._sends: dict[_Key, Send] = {}  # the send running for a DP and package
        self._cancelling: Counter[_Key] = Counter()  # keys an administrator's cancel ends
        self._hop = ThreadHop(f"{site} PkgXferMgr")  # small files' writes into SMS_DP$
        # Pull DPs: their sources' DPUrls (the site's content server knows the address).
        self.pull = PullSending(self, content_url or (lambda dp, cid: f"http://{dp}/{cid}"))

    async def on_start(self) -> None:
        # Jobs a previous run accepted but did not finish are taken up again; a job that
        # also arrives from SMSDBMON is run once (``_active`` and the row's state).
        for job in await self.db.distribution_jobs():
            retry = RetryJob(job.job_id, job.action)
            if job.state == JobState.RETRYING:
                self.send_later(self.settings.distribution_retry_delay, self.address, retry)
            elif job.state != JobState.FAILED:
                self.send_later(0.0, self.address, retry)

    @handler
    async def job_created(self, msg: DistributionJobNotification) -> None:
        await self._dispatch(msg.job_id, msg.action)

    @handler
    async def retry(self, msg: RetryJob) -> None:
        await self._dispatch(msg.job_id, msg.action)

    @handler
    async def poll_pull(self, msg: PollPullJob) -> None:
        await self.pull.poll(msg)

    @handler
    async def cancel_transfer(self, msg: CancelTransfer) -> bool:
        """Stop the package's send to the DP and end its pending and retrying jobs there.

        The send stops within one chunk (a request that changes the DP, such as adding a
        verified file, is let finish: a cancel lands between two of them). Once the send
        has ended, in one commit: the jobs' rows go, 8204 says "cancelled by the
        administrator", and the DP's status row is final — Installed at the version it
        holds if that is the version the jobs were for (a redistribute cancelled: the DP
        still has it whole), else Failed (a cancelled update leaves the older version in
        the DP's library, and Failed keeps a restart from sending it again). The staged
        ``SMS_DP$`` files of the package go; no version is added to the DP's library (files
        already added stay unreferenced, reused by the next job, collected at the next
        open). Nothing the cancelled send does comes after that commit.

        Answers True when a send or a job was cancelled; False when there was none, or the
        send had already begun to add the version to the DP (it completes: Installed). A
        request DistMgr has not yet turned into a job is not cancelled."""
        dp = await self.db.distribution_point(msg.dp)
        if dp is None:
            return False
        key = (dp.dp_id, msg.pkg_id)
        self._cancelling[key] += 1  # a job that gets the key before us now ends untouched
        try:
            send = self._sends.get(key)
            stopped = send is not None and send.cancel()
            if stopped:
                self.trace(f"~Cancelling the send of package {msg.pkg_id} to {dp.server_name}")
            async with self._order.hold(key):  # once the send has ended and cleaned up
                ended = await self._end_cancelled(dp, msg.pkg_id)
            # (a send that ended by itself before the cancel reached it stopped nothing)
            return ended or (send is not None and stopped and send.scope.cancelled_caught)
        finally:
            self._cancelling[key] -= 1
            if not self._cancelling[key]:
                del self._cancelling[key]

    # -- one job -------------------------------------------------------------------------

    async def _dispatch(self, job_id: int, action: int) -> None:
        """A removal runs at once (it may have to stop a send); other jobs take a sending
        thread, or wait parked for one without holding a worker."""
        if action == JobAction.REMOVE:
            await self._run(job_id)
            return
        if self._threads >= self.sending_threads:
            self._parked.append(job_id)
            return
        self._threads += 1
        try:
            await self._run(job_id)
            while self._parked:  # a sending thread takes the parked jobs, oldest first
                await self._run(self._parked.popleft())
        finally:
            self._threads -= 1

    async def _run(self, job_id: int) -> None:
        if job_id in self._active:
            return
        self._active.add(job_id)
        try:
            found = await self.db.distribution_job_superseded(job_id)
            if found is None or found[0].state == JobState.FAILED:
                return  # finished (the row is deleted) or given up
            job = found[0]
            key = (job.dp_id, job.pkg_id)
            if job.action == JobAction.REMOVE and not found[1]:
                self._stop_for_removal(key, job)
            waited = self._order.busy(key)  # another job or cancel holds or awaits the key
            async with self._order.hold(key):
                if key in self._cancelling and job.action != JobAction.REMOVE:
                    return  # an administrator's cancel ends it once it holds the key
                if waited:
                    # Read again: an earlier job or a cancel may have ended or superseded it.
                    found = await self.db.distribution_job_superseded(job_id)
                if found is not None and found[0].state != JobState.FAILED:
                    await self._run_in_order(*found)
        finally:
            self._active.discard(job_id)

    def _outcome_dropped(self, job: DistributionJobRow) -> bool:
        """The job's final STA is in DistMgr's inbox: a crash came after the sending thread
        dropped it and before DistMgr stored it (and deleted the job). The job is done;
        DistMgr stores it."""
        return self.inbox.holds_any(job.job_id, _FINAL)

    def _stop_for_removal(self, key: _Key, job: DistributionJobRow) -> None:
        """A removal of the package from the DP stops its older send there first, instead
        of waiting for it to finish only to remove what it sent."""
        send = self._sends.get(key)
        if send is not None and send.job.job_id < job.job_id and send.cancel():
            self.trace(
                f"~Stopping the send of package {job.pkg_id} (job {send.job.job_id}): the"
                f" package is being removed from the distribution point (job {job.job_id})"
            )

    async def _run_in_order(
        self, job: DistributionJobRow, superseded: bool, pkg: PackageRow | None
    ) -> None:
        """``pkg``: the job's package, read with the job (no second read per job)."""
        if superseded:
            await self._end_superseded(job, "a newer job")
            return
        dp = await self.db.distribution_point(job.dp_id)
        if dp is None or self._outcome_dropped(job):
            await self.db.write(partial(ops.delete_job, job_id=job.job_id))
            return
        if dp.is_pull_dp and job.action != JobAction.REMOVE:
            await self._run_pull(job, dp, pkg)
            return
        if dp.server_name not in self.links and not dp.is_pull_dp:
            reason = f"distribution point {dp.server_name} is not in the hierarchy file"
            await self._failed(job, dp, _GiveUp(reason), give_up=True)
            return
        if job.action == JobAction.REMOVE:
            await self._remove(job, dp)
            return
        if pkg is None or pkg.stored_pkg_version > job.package_version:
            # A job for an older version than the site stores: the newer version's job
            # (created with the version, in the same commit) brings the DP up to date.
            await self._end_superseded(job, "a newer version of the package")
            return
        self.trace(
            f"Found send request with ID: {job.job_id}, Package: {job.pkg_id},"
            f" Version:{job.package_version}, Priority: {pkg.priority},"
            f" Destination: {dp.server_name}, DPPriority: {dp.priority}"
        )
        tid = new_thread_id()
        self.trace(f"~Created sending thread (Thread ID = 0x{tid:X})")
        key = (job.dp_id, job.pkg_id)
        if key in self._cancelling:
            return  # cancelled before it began: the cancel ends it (no await since this check)
        send = Send(job, dp, self._publish_progress, self.clock.now, self.progress_interval)
        self._sends[key] = send
        try:
            with as_thread(tid):
                await self._attempt(job, dp, pkg, send)
        finally:
            del self._sends[key]

    async def _run_pull(
        self, job: DistributionJobRow, dp: DistributionPointRow, pkg: PackageRow | None
    ) -> None:
        if pkg is None or pkg.stored_pkg_version > job.package_version:
            await self._end_superseded(job, "a newer version of the package")
            return
        if job.state == JobState.NOTIFIED:  # told before a restart: its state message ends it
            self.send_later(
                self.settings.pulldp_polling_delay, self.address, PollPullJob(job.job_id)
            )
            return
        self.trace(
            f"Found send request with ID: {job.job_id}, Package: {job.pkg_id},"
            f" Version:{job.package_version}, Priority: {pkg.priority},"
            f" Destination: {dp.server_name}, DPPriority: {dp.priority}"
        )
        tid = new_thread_id()
        self.trace(f"~Created sending thread (Thread ID = 0x{tid:X})")
        with as_thread(tid):
            await self.pull.run(job, dp, pkg.priority)

    async def changed(self, pkg_id: str) -> None:
        """A DP status of the package changed: ``Hierarchy.wait`` reads it again."""
        with suppress(BusClosed):
            await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))

    async def _attempt(
        self, job: DistributionJobRow, dp: DistributionPointRow, pkg: PackageRow, send: Send
    ) -> None:
        """One try of an add or redistribute job, which a cancel may stop (``send.scope``);
        a cancel by shutdown passes through, leaving the job to resume at the next start."""
        try:
            with send.scope:
                await self._start_sending(job, dp, pkg, send)
            if send.scope.cancelled_caught:
                # Stopped by a cancel or a removal, which end the job: only what it left
                # on the DP is ours to clean up, and no status of this send may follow.
                await self._leave_dp(dp, job.pkg_id, {job.package_version})
                self.trace(f"~Send of package {job.pkg_id} to {dp.server_name} stopped")
                return
        except _Superseded as exc:  # (jobs of one DP and package run one at a time)
            await self._abandon(dp, _content_id(job))
            await self._end_superseded(job, str(exc))
            return
        except _GiveUp as exc:
            await self._failed(job, dp, exc, give_up=True, send=send)
            return
        except _TRANSIENT as exc:
            await self._failed(job, dp, exc, send=send)
            return
        except Exception as exc:
            reason = _GiveUp(f"{type(exc).__name__}: {exc}")
            await self._failed(job, dp, reason, give_up=True, send=send)
            return
        await self._completed(job, dp, send)

    async def _start_sending(
        self, job: DistributionJobRow, dp: DistributionPointRow, pkg: PackageRow, send: Send
    ) -> None:
        inventory = await self._inventory(job, dp)
        if inventory.previous is not None and inventory.previous.version > job.package_version:
            raise _Superseded(f"version {inventory.previous.version} on the DP")
        self.trace(
            f"Sending thread starting for Job: {job.job_id}, package: {job.pkg_id},"
            f" Version: {job.package_version}, Priority: {pkg.priority},"
            f" server: {dp.server_name}, DPPriority: {dp.priority}"
        )
        # DistMgr marks the job SENDING; shielded: a cancel never lets it land after the
        # cancel's own status.
        with anyio.CancelScope(shield=True):
            await self._status(job, dp, PkgStatusValue.NONE)
        await self._send(job, dp, pkg, inventory, send)

    async def _completed(
        self, job: DistributionJobRow, dp: DistributionPointRow, send: Send
    ) -> None:
        self.trace("~Sending completed successfully")
        self.trace(
            f"~Finished sending SWD package {job.pkg_id} version {job.package_version}"
            f" to distribution point {dp.server_name}"
        )
        # 8200 and 8210 go with the status-3 STA: DistMgr stores them and its 2330 after
        # them in one commit, as the reference orders them, and once the DP reads Installed
        # every message is stored. Their lines go where the reference's log has them: 8200,
        # the status-3 line, then 8210. The job's row goes with the Installed status, in
        # DistMgr's commit: until then a crash leaves the job, which ends at once if its
        # STA survived (``_outcome_dropped``) and is sent again (nothing left to copy) if
        # not, so the STA need not be synced.
        begun, sent = self._message(8200, job, dp), self._message(8210, job, dp)
        dropped = await self._drop_status(
            job,
            dp,
            PkgStatusValue.INSTALLED,
            bytes_full=job.bytes_full + send.bytes_full,
            bytes_delta=job.bytes_delta + send.bytes_delta,
        )
        crash_point("pkgxfermgr.status_dropped")
        await self.request(self.distmgr, msgspec.structs.replace(dropped, messages=(begun, sent)))
        self.reporter.log(begun)
        self._status_sent(job, dp, PkgStatusValue.INSTALLED)
        self.reporter.log(sent)
        self.trace("Sending thread complete~")
        await self.pull.source_installed(job.pkg_id, dp.server_name)

    async def _end_superseded(self, job: DistributionJobRow, by: str) -> None:
        """End a job without touching the DP: something newer covers it."""
        self.trace(f"~Job {job.job_id} for package {job.pkg_id} is superseded by {by}")
        await self.db.write(partial(ops.delete_job, job_id=job.job_id))

    async def _inventory(self, job: DistributionJobRow, dp: DistributionPointRow) -> DPInventory:
        content_id = _content_id(job)
        try:
            manifest = self.library.manifest(content_id)
        except ContentLibError as exc:
            raise _GiveUp(
                f"content {content_id} is not in the content library of site {self.site}"
            ) from exc
        inventory: DPInventory = await self.request(
            _provider(dp),
            DPQuery(job.pkg_id, tuple(f.sha256 for f in manifest.files), content_id),
        )
        return inventory

    async def _send(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        pkg: PackageRow,
        inventory: DPInventory,
        send: Send,
    ) -> None:
        content_id = _content_id(job)
        manifest = self.library.manifest(content_id)
        redistribute = job.action == JobAction.REDISTRIBUTE
        self.trace(
            f"Performing preactions package {job.pkg_id}, Distribution point {dp.server_name}"
        )
        self.trace(f"Sending legacy content {content_id} for package {job.pkg_id}")
        self.trace(f"Redistribute={int(redistribute)}, Related=")
        link = self.links[dp.server_name]
        previous = {f.path: f for f in inventory.previous.files} if inventory.previous else {}
        todo = _files_to_send(manifest.files, inventory.present, redistribute=redistribute)
        send.plan(sum(entry.size for entry in todo))
        for entry in todo:
            old = previous.get(entry.path)
            source = _SiteCopy(entry, Path(pkg.source) / entry.path)
            if (
                not redistribute
                and old is not None
                and old.sha256 != entry.sha256
                and entry.size >= _DELTA_MIN_SIZE
                and await self._send_delta(source, old, content_id, dp, link, send)
            ):
                continue
            await self._send_file(source, content_id, dp, link, send, replace=redistribute)
            self.trace(f"Adding {entry.path} file in {content_id}")
            crash_point("pkgxfermgr.file_sent")
        await send.commit()  # from here on the version goes onto the DP: no cancel
        added: bool = await self._change_dp(dp, DPAddContent(manifest))
        if not added:
            raise _Superseded(f"{dp.server_name} holds a newer version of {job.pkg_id}")
        crash_point("pkgxfermgr.content_added")
        self.trace(f"Completed post-actions for remote DP {dp.server_name}")

    async def _send_file(
        self,
        copy: _SiteCopy,
        content_id: str,
        dp: DistributionPointRow,
        link: NetworkLink,
        send: Send,
        *,
        replace: bool,
    ) -> None:
        entry = copy.entry
        name = staging_name(entry.sha256, content_id)
        staged = staging_folder(self.dp_root(dp)) / name
        share = f"\\\\{dp.server_name}\\SMS_DP$\\{name}"
        self.trace(f"Sending file '{share}'")
        before = send.sent
        source = self.library.file_path(entry.sha256)
        try:
            self.trace(f"~Sending Started [{source}]")
            await transmit(
                source,
                entry.size,
                staged,
                link,
                self.trace,
                send,
                delta=False,
                shown=share,
                hop=self._hop,
            )
            self.trace(f"~Sending completed [{source}]")
            await self._change_dp(
                dp, DPAddFile(entry.sha256, entry.size, name, replace, content_id)
            )
        except (FileNotFoundError, RemoteError) as exc:
            if isinstance(exc, RemoteError) and not isinstance(exc.original, HashMismatch):
                raise
            # The DP got other bytes than the hash says, or the site has no copy: the
            # site's library may be damaged. Mend it from the source and send it again.
            await self._mend_site_copy(copy, exc)
            send.plan(send.sent - before)  # what went before is sent again
            await self._send_file(copy, content_id, dp, link, send, replace=replace)

    async def _mend_site_copy(self, copy: _SiteCopy, exc: BaseException) -> None:
        """Check the site's stored file; re-read it from the package source where the source
        still has those bytes. Raises ``_GiveUp`` (naming the file) where it does not, and
        the original error where the stored copy is fine (the bytes were damaged in transit)."""
        entry = copy.entry
        if copy.mended or await self.library.verify_file(entry.sha256) == "ok":
            raise exc
        copy.mended = True
        if await self.library.repair_file(entry.sha256, entry.size, copy.source):
            self.trace(
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
        send: Send,
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
        staged = staging_folder(self.dp_root(dp)) / name
        self.trace(
            f"Sending delta of {entry.path} ({len(delta)} of {entry.size} bytes)"
            f" '\\\\{dp.server_name}\\SMS_DP$\\{name}'"
        )
        send.plan(len(delta) - entry.size)  # the delta goes instead of the file
        share = f"\\\\{dp.server_name}\\SMS_DP$\\{name}"
        await transmit(
            delta,
            len(delta),
            staged,
            link,
            self.trace,
            send,
            delta=True,
            shown=share,
            hop=self._hop,
        )
        try:
            await self._change_dp(
                dp, DPApplyDelta(old.sha256, name, entry.sha256, entry.size, content_id)
            )
        except RemoteError as exc:
            if not isinstance(exc.original, HashMismatch):
                raise
            # Built from a damaged copy on one side or the other: the whole file goes.
            await self._mend_site_copy(copy, exc)
            send.plan(entry.size)  # after the delta
            return False
        self.trace(f"Adding {entry.path} file in {content_id} (delta)")
        return True

    async def _remove(self, job: DistributionJobRow, dp: DistributionPointRow) -> None:
        self.trace(f"Removing package {job.pkg_id} from distribution point {dp.server_name}")
        # The package's older jobs on the DP (the send this removal stopped, one waiting
        # for its retry) end here: none may put the content back after the removal.
        await self.db.write(
            partial(ops.end_older_jobs, dp_id=dp.dp_id, pkg_id=job.pkg_id, before=job.job_id)
        )
        await self._discard_staged(dp, job.pkg_id)
        try:
            await self.request(_provider(dp), DPRemovePackage(job.pkg_id))
        except BusError as exc:
            await self._failed(job, dp, exc)
            return
        # (the job's row goes with the Removed status, in DistMgr's commit)
        dropped = await self._drop_status(job, dp, PkgStatusValue.REMOVED)
        await self._deliver_status(job, dp, PkgStatusValue.REMOVED, dropped)

    async def _failed(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        exc: BaseException,
        *,
        give_up: bool = False,
        send: Send | None = None,
    ) -> None:
        """8203 and Retrying until the retries run out (or at once for a failure no retry
        can mend: ``give_up``), then 8204 and Failed; the reason goes with both. The bytes
        the try moved are added to the job's, in the same commit."""
        failures = job.failure_count + 1
        give_up = give_up or failures > self.settings.distribution_retry_count
        delay = self.settings.distribution_retry_delay
        restart = self.clock.wall().timestamp() + delay
        self.trace(
            f"Failed to send package {job.pkg_id} version {job.package_version} to"
            f" {dp.server_name}: {exc}. Failure count = {failures}/"
            f"{self.settings.distribution_retry_count}",
            severity="E" if give_up else "W",
        )
        fail = partial(
            ops.fail_job,
            job_id=job.job_id,
            give_up=give_up,
            failures=failures,
            restart_time=None if give_up else product_time(_utc(restart)),
            now=product_time(self.clock.wall()),
            bytes_full=send.bytes_full if send is not None else 0,
            bytes_delta=send.bytes_delta if send is not None else 0,
        )
        if give_up:  # no try will add the version: what the DP received for it goes
            await self._abandon(dp, _content_id(job))
        await self.reporter.raise_messages(
            [self._message(8204 if give_up else 8203, job, dp, str(exc))], op=fail
        )
        await self._status(
            job, dp, PkgStatusValue.FAILED if give_up else PkgStatusValue.RETRY, str(exc)
        )
        if not give_up:
            self.send_later(delay, self.address, RetryJob(job.job_id, job.action))

    # -- cancel --------------------------------------------------------------------------

    async def _end_cancelled(self, dp: DistributionPointRow, pkg_id: str) -> bool:
        """With the DP and package held: end their open add and redistribute jobs as
        cancelled (see :meth:`cancel_transfer`); False when there were none."""
        jobs = await self.db.cancellable_jobs(dp.dp_id, pkg_id)
        await self._leave_dp(dp, pkg_id, {j.package_version for j in jobs})
        if not jobs:
            return False
        last = max(jobs, key=lambda j: j.package_version)
        held = await self._held_version(dp, pkg_id, last.package_version)
        whole = held >= last.package_version  # the DP holds what the jobs were for
        cancel = partial(
            ops.cancel_jobs,
            dp=dp,
            pkg_id=pkg_id,
            job_ids=[j.job_id for j in jobs],
            status=PkgStatusValue.INSTALLED if whole else PkgStatusValue.FAILED,
            version=held if whole else last.package_version,
            now=product_time(self.clock.wall()),
        )
        self.trace(
            f"Cancelled sending package {pkg_id} version {last.package_version} to"
            f" {dp.server_name} ({CANCELLED_REASON}); jobs"
            f" {', '.join(str(j.job_id) for j in jobs)} ended",
            severity="W",
        )
        await self.reporter.raise_messages(
            [self._message(8204, last, dp, CANCELLED_REASON)], op=cancel
        )
        with suppress(BusClosed):  # Hierarchy.wait sees the final status
            await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))
        return True

    async def _held_version(self, dp: DistributionPointRow, pkg_id: str, version: int) -> int:
        """The latest version of the package the DP's library holds (0: none, or the DP
        did not answer: the cancelled request then counts as not done); a pull DP says
        whether it holds ``version``."""
        if dp.is_pull_dp:
            return await self.pull.held_version(dp, pkg_id, version)
        try:
            inventory: DPInventory = await self.request(_provider(dp), DPQuery(pkg_id, ()))
        except BusError:
            return 0
        return inventory.previous.version if inventory.previous is not None else 0

    async def _leave_dp(
        self, dp: DistributionPointRow, pkg_id: str, versions: Iterable[int]
    ) -> None:
        """Leave the DP as it was before jobs of these versions: their staged bytes go, and
        the files it received (and held) for them that no version uses."""
        await self._discard_staged(dp, pkg_id)
        for version in sorted(versions):
            await self._abandon(dp, content_id(pkg_id, version))

    async def _abandon(self, dp: DistributionPointRow, content_id: str) -> None:
        """Tell the DP the version will not be added (a DP that does not answer drops the
        files at its next start)."""
        with suppress(BusError):
            await self._change_dp(dp, DPAbandon(content_id))

    async def _discard_staged(self, dp: DistributionPointRow, pkg_id: str) -> None:
        """Delete the package's files in the DP's ``SMS_DP$`` (with the package held, so no
        send of it is writing there)."""
        staging = staging_folder(self.dp_root(dp))
        removed = await anyio.to_thread.run_sync(discard_staged, staging, pkg_id)
        if removed:
            self.trace(f"~Deleted {removed} staged file(s) of package {pkg_id} on {dp.server_name}")

    # -- helpers -------------------------------------------------------------------------

    async def _status(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        status: PkgStatusValue,
        detail: str = "",
    ) -> None:
        """A status of a job that goes on (started, retrying, failed): the STA dropped and
        processed."""
        dropped = await self._drop_status(job, dp, status, detail)
        await self._deliver_status(job, dp, status, dropped)

    async def _drop_status(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        status: PkgStatusValue,
        detail: str = "",
        *,
        bytes_full: int = 0,
        bytes_delta: int = 0,
    ) -> StatusFile:
        """The STA file in ``distmgr.box\\incoming``, and the request that hands it to
        DistMgr. Not synced: a job stays until DistMgr has stored its final status (and
        deletes it in that commit), so a lost file costs a resend, never the outcome."""
        sta = TransferStatus(
            job.job_id,
            job.pkg_id,
            job.package_version,
            dp.server_name,
            dp.nal_path,
            int(status),
            detail,
            bytes_full,
            bytes_delta,
        )
        path = await self.inbox.drop(sta)
        return StatusFile(str(path), sta)

    async def _deliver_status(
        self,
        job: DistributionJobRow,
        dp: DistributionPointRow,
        status: PkgStatusValue,
        dropped: StatusFile,
    ) -> None:
        """Tell DistMgr of the file; awaited, so the status is stored when this returns."""
        await self.request(self.distmgr, dropped)
        self._status_sent(job, dp, status)

    def _status_sent(
        self, job: DistributionJobRow, dp: DistributionPointRow, status: PkgStatusValue
    ) -> None:
        self.trace(
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

    async def _change_dp(self, dp: DistributionPointRow, msg: Any) -> Any:
        """A request that changes the DP (add a file, apply a delta, add the version):
        shielded, so a cancel lands before or after it, never while the DP acts on it."""
        with anyio.CancelScope(shield=True):
            return await self.request(_provider(dp), msg)

    async def _publish_progress(self, event: TransferProgress) -> None:
        with suppress(BusClosed):  # the bus is stopping: nobody is left to see it
            await self.publish(TRANSFER_PROGRESS_TOPIC, event)


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


def _files_to_send(
    files: Sequence[FileEntry], present: Sequence[bool], *, redistribute: bool
) -> list[FileEntry]:
    """The files a job sends: each distinct file the DP lacks (all of them on redistribute)."""
    todo: list[FileEntry] = []
    seen: set[str] = set()
    for entry, has in zip(files, present, strict=True):
        if entry.sha256 in seen or (has and not redistribute):
            continue
        seen.add(entry.sha256)
        todo.append(entry)
    return todo


def _content_id(job: DistributionJobRow) -> str:
    return content_id(job.pkg_id, job.package_version)


def _provider(dp: DistributionPointRow) -> str:
    if dp.is_pull_dp:  # its PullDP component takes the removal
        return addresses.pulldp(dp.server_name)
    return addresses.dp_provider(dp.server_name)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)
