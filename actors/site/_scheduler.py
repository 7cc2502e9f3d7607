"""Scheduler (``SMS_SCHEDULER``): mini-jobs into send requests, and their completion.

A mini-job (a ``MiniJobs`` row DistMgr or the despooler wrote) becomes a signed
instruction in ``schedule.box/tosend`` and a send request for the Sender. While the send
runs, the send request's status (state, total size, remaining) is logged every
``scheduler_poll_interval`` in which it changed, as the product's scheduler refreshes its
send request list.
When the send completes, the job is done: the instruction is deleted, the package file's reference
count goes down (the file is deleted at 0) and the send request with it. Jobs left
unfinished by a previous run are taken again at start (the Sender resumes their bytes).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio

from actors import addresses
from actors.site._capacity import SendRequestList, SentBytes
from actors.site._instruction import Instruction, SiteKey, sign
from actors.site._keyed import KeyedLocks
from actors.site._paths import release_package_file, tosend_box
from actors.site.messages import MiniJobCreated, PackageNotification, SendRequest, SendResult
from actors.sitedb import MiniJobRow, NotificationType, PackageRow, SiteDatabase, ops
from actors.status import CMTraceLog, Component
from bus import handler
from contentlib import hash_file

__all__ = ["Scheduler"]


class Scheduler(Component):
    """``<SITE>/Scheduler``."""

    workers = 64  # each handler follows its send request to the end
    request_timeout = None

    def __init__(
        self,
        *,
        site: str,
        db: SiteDatabase,
        key: SiteKey,
        server_root: Path,
        requests: SendRequestList,
        poll_interval: float = 60.0,
        log: CMTraceLog | None = None,
    ) -> None:
        self.site = site
        self.db = db
        self.key = key
        self.server_root = server_root
        self.requests = requests  # the sender writes how far each got
        self.poll_interval = poll_interval
        self.trace_log = log
        self._running: set[int] = set()
        self.completed = 0
        # A package file's hash by (path, size, mtime): a PCK built once per version goes
        # to every site that lacks it, and is read whole once, not once per mini-job.
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._hashing: KeyedLocks[str] = KeyedLocks()
        self.files_hashed = 0

    async def on_start(self) -> None:
        for job in await self.db.minijobs():
            await self.send(self.address, MiniJobCreated(job.job_id))

    @handler
    async def minijob(self, msg: MiniJobCreated) -> None:
        if msg.job_id in self._running:
            return
        job = await self.db.minijob(msg.job_id)
        if job is None:
            return
        self._running.add(job.job_id)
        try:
            await self._run(job)
        finally:
            self._running.discard(job.job_id)

    async def _run(self, job: MiniJobRow) -> None:
        pkg = await self.db.package(job.pkg_id)
        name = pkg.name if pkg is not None else job.pkg_id
        job_name = f"{job.job_id:08X}"
        title = f"[Software Distribution for {name}, Package ID = {job.pkg_id}]~"
        request_id = job.send_request_id or f"{job.job_id:03X}SQ{self.site}"
        icl = tosend_box(self.server_root) / f"{job_name}.Icl"
        self.trace("========  Processing Jobs  ========")
        self.trace(f"<Activating JOB {job_name}>{title}")
        self.trace(
            f"Destination site:  {job.dest_site}, Preferred Address: *, Priority: {job.priority}"
        )
        try:
            package_sha256 = await self._package_hash(job.transfer_root)
        except FileNotFoundError:
            await self._drop(job, job_name, pkg)
            return
        instruction = Instruction(
            job_id=job.job_id,
            send_request_id=request_id,
            pkg_id=job.pkg_id,
            version=job.version,
            sender_site=self.site,
            dest_site=job.dest_site,
            final_site=job.final_site,
            package_sha256=package_sha256,
            package_size=job.size,
            base_version=job.base_version,
        )
        self.trace(f"Instruction type:  {instruction.type}~")
        self.trace(f"Creating instruction file: {icl}~")
        await anyio.to_thread.run_sync(_write_atomic, icl, sign(self.key, instruction))
        self.trace(f"Transfer root:  {job.transfer_root}~")
        self.trace(f"<Updating JOB {job_name}>{title}")
        await self.db.write(
            partial(
                ops.set_minijob_state,
                job_id=job.job_id,
                state=ops.MINIJOB_SENDING,
                send_request_id=request_id,
                attempts=job.attempts + 1,
            )
        )
        self.trace(f"Created new send request ID:  {request_id}~")
        entry = self.requests.open(request_id, job.size)
        show = partial(self._request_list, job, request_id, job_name, entry, self.clock.wall())
        show()
        request = SendRequest(
            request_id,
            job.pkg_id,
            job.version,
            job.dest_site,
            job.priority,
            job.transfer_root,
            str(icl),
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._refresh, entry, show)
                result: SendResult = await self.request(addresses.sender(self.site), request, None)
                tg.cancel_scope.cancel()
            await self._finish(job, request_id, job_name, title, icl, result)
        finally:
            self.requests.close(request_id)

    async def _package_hash(self, path: str) -> str:
        """The file's SHA-256, read again only when the file changed (its stat says); one
        worker thread hop either way."""

        def stat_and_hash() -> tuple[tuple[str, int, int], str, bool]:
            st = os.stat(path)
            key = (path, st.st_size, st.st_mtime_ns)
            known = self._hashes.get(key)
            return key, known or hash_file(path)[0], known is None

        # Mini-jobs for several sites run side by side: the first hashes, the others wait
        # for its digest instead of reading the file again.
        async with self._hashing.hold(path):
            key, digest, hashed = await anyio.to_thread.run_sync(stat_and_hash)
            if hashed:
                self._hashes[key] = digest
                self.files_hashed += 1
        return digest

    async def _drop(self, job: MiniJobRow, job_name: str, pkg: PackageRow | None) -> None:
        """The job's package file is gone (deleted by hand, a disk restored without it): the
        job cannot run, now or after any restart. It is dropped with its reference, and the
        package's DistMgr, when it is this site's, looks at the package again: a site still
        lacking the version gets a mini-job with a package file built anew. One lost file
        never stops the scheduler (it would fail again at every restart)."""
        root = job.transfer_root
        self.trace(
            f"Package file {root} of job {job_name} (package {job.pkg_id} version"
            f" {job.version} to site {job.final_site}) does not exist; the job is dropped.~",
            severity="E",
        )

        def drop(conn: sqlite3.Connection) -> int:
            ops.drop_minijob(conn, job.job_id)
            return release_package_file(conn, root)

        await self.db.write(drop)
        if pkg is not None and pkg.source_site == self.site:
            # as SMSDBMON would for a DP change (no PkgNotification row stands behind it)
            notice = PackageNotification(
                0, job.pkg_id, NotificationType.SERVER_CHANGED, pkg.priority, 0
            )
            await self.send(addresses.distmgr(self.site), notice)

    async def _refresh(self, entry: SentBytes, show: Callable[[], None]) -> None:
        """The send request's status, every poll interval while it runs, when its state or
        remaining bytes changed since the last line (a request waiting for a sending
        thread, or a send stalled on its link, does not repeat itself)."""
        last = (entry.state, entry.remaining)
        while True:
            await self.clock.sleep(self.poll_interval)
            now = (entry.state, entry.remaining)
            if now != last:
                last = now
                show()

    def _request_list(
        self,
        job: MiniJobRow,
        request_id: str,
        job_name: str,
        entry: SentBytes,
        started: dt.datetime,
    ) -> None:
        # The reference leaves FinalSite empty when the destination is the final site.
        final = job.final_site if job.final_site != job.dest_site else ""
        start = started.strftime("%H:%M")
        heartbeat = self.clock.wall().strftime("%H:%M")
        self.trace("====== Updating Send Request List =======")
        self.trace(
            f"Send Request {request_id} JobID: {job_name} DestSite: {job.dest_site} FinalSite:"
            f" {final} State: {entry.state} Status: Action: None Total size:"
            f" {job.size // 1024}k Remaining: {entry.remaining // 1024}k Heartbeat: {heartbeat}"
            f" Start: {start} Finish: {start} Retry: SWD PkgID: {job.pkg_id} SWD Pkg Version:"
            f" {job.version}"
        )

    async def _finish(
        self,
        job: MiniJobRow,
        request_id: str,
        job_name: str,
        title: str,
        icl: Path,
        result: SendResult,
    ) -> None:
        self.trace("======  Checking Status of All Send Requests  ======")
        self.trace(f"Checking send request {request_id}~")
        if not result.ok:
            self.trace(f"Send request {request_id} failed: {result.reason}~", severity="E")
            await self.db.write(
                partial(ops.set_minijob_state, job_id=job.job_id, state=ops.MINIJOB_FAILED)
            )
            return
        rate = int(result.bytes_on_link / result.seconds) if result.seconds > 0 else 0
        self.trace(f"Sending completed ({rate} bytes/sec).~")
        self.trace(f"<Updating JOB {job_name}>{title}")
        self.trace("Send request has successfully completed.~")
        self.trace("<JOB STATUS - COMPLETE>~")
        self.trace(f"Deleting instruction file {icl}.~")
        root = job.transfer_root

        def done(conn: sqlite3.Connection) -> int:
            ops.set_minijob_state(conn, job.job_id, ops.MINIJOB_COMPLETE)
            return release_package_file(conn, root)

        left = await self.db.write(done)
        await anyio.to_thread.run_sync(_unlink, icl)
        if left == 0:
            self._hashes = {k: v for k, v in self._hashes.items() if k[0] != root}
            self.trace(f"Deleting job package source [{root}].~")
            self.trace(f"Deleted reference counted file {root}")
        self.trace(f"Decremented ref count on file {root}, count = {left}")
        self.trace(f"Deleting send request with ID: {request_id}.~")
        self.trace(f"Deleted job {job_name}.~")
        self.completed += 1


def _write_atomic(path: Path, data: bytes) -> None:
    """Whole or not at all, not synced: the instruction is written again (and signed
    again) each time its mini-job runs, at the next start too, so a copy lost in a crash
    costs nothing (the mini-job row is what remembers the send)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
