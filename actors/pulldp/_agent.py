"""The PullDP component of a pull distribution point (what CcmExec hosts on the machine).

It takes the site's notification (``PullDPNotify``: stored first, as WMI keeps it, so a
restart picks it up again), checks the package info bundle's hash, runs one content job
per content item through the reference's states, downloads what its library lacks from
the ranked sources over HTTP (:mod:`actors.pulldp._dts`), applies single instancing into
its own content library, reports the result to the site's management point as a state
message, and clears the job. At most ``max_active_jobs`` packages download at once.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from pathlib import Path

import aiohttp
import anyio
import msgspec

from actors.dp import (
    STATE_FAILED,
    STATE_IN_PROGRESS,
    STATE_SUCCESS,
    DPAbandon,
    DPRemovePackage,
    PullContent,
    PullDPHolds,
    PullDPNotify,
    PullDPStateMessage,
    PullNotification,
    PullProgress,
    bundle_name,
    parse_notification,
    progress_data,
    read_bundle,
    report_xml,
    staging_folder,
)
from actors.errors import BadNotification, TransferError
from actors.network import NetworkLink
from actors.pulldp._dts import Source, download_file, remove_tree
from actors.pulldp._rdc import WHOLE_MAX, RdcFile, rdc_download
from actors.status import CMTraceLog, Component, Severity
from bus import Clock, handler
from contentlib import ContentLibError, ContentLibrary, FileEntry, Manifest, content_id

__all__ = ["JOBS_FOLDER", "PROGRESS_INTERVAL", "Progress", "PullDPAgent", "RunPullJob"]

JOBS_FOLDER = "PullDPJobs"  # beside SMS_DP$: the stored notifications (WMI's instances)
PROGRESS_INTERVAL = 0.5  # clock seconds between two progress events of one job
STATE_STEP = 10  # percent between two intermediate state messages of one job
STATE_INTERVAL = 5.0  # and clock seconds at least

Progress = Callable[[str, int, int, int], Awaitable[None]]
"""(package ID, version, bytes downloaded, bytes to download) -> publish it."""


class RunPullJob(msgspec.Struct, frozen=True):
    """Run (again) the stored job of a package: sent to itself after a failed try."""

    pkg_id: str


class PullDPAgent(Component):
    """``<pull DP>/PullDP``."""

    request_timeout = None
    workers = 4

    def __init__(
        self,
        *,
        name: str,
        nal_path: str,
        root: Path,
        library: ContentLibrary,
        links: Mapping[str, NetworkLink],
        clock: Clock,
        mp_url: str,
        locate: Callable[[str], str],
        max_active_jobs: int,
        retry_delay: float,
        log: CMTraceLog | None = None,
        dts_log: CMTraceLog | None = None,
        provider_log: CMTraceLog | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.name = name
        self.nal_path = nal_path
        self.root = root
        self.library = library
        self.links = {k.upper(): v for k, v in links.items()}
        self._clock = clock
        self.mp_url = mp_url
        self.locate = locate  # a DPUrl (by the DP's name) -> where it is served now
        self.retry_delay = retry_delay
        self.trace_log = log
        self.dts_log = dts_log
        self.provider_log = provider_log  # the DP WMI provider's SMSDPProv.log
        self.progress = progress
        self.limiter = anyio.CapacityLimiter(max(1, max_active_jobs))
        self.jobs = root / JOBS_FOLDER
        self.staging = staging_folder(root)
        self.bytes_downloaded = 0  # every payload byte that crossed, all jobs (bodies)
        self.wire_bytes = 0  # ... and with the HTTP requests' and responses' lines and headers
        self.session: aiohttp.ClientSession | None = None
        self._locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self._queued: set[str] = set()
        self._running: dict[str, anyio.CancelScope] = {}  # a package's job, to abandon it
        # (bytes full, bytes delta) earlier tries of a job moved, by "<pkg>.<version>", until
        # the job is cleared: its bytes count what every try moved, as a standard DP's do
        # (a try whose final state message did not get through included)
        self._tries: dict[str, tuple[int, int]] = {}

    async def on_start(self) -> None:
        await anyio.to_thread.run_sync(self._make_folders)
        if self.session is None:
            # A 4 MiB read buffer: measured 257 -> 375 MB/s on loopback (hash and write
            # included) against aiohttp's default 64 KiB.
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(sock_read=60), read_bufsize=4 << 20
            )
        for name in sorted(os.listdir(self.jobs)):
            if name.endswith(".xml"):  # a restart: the stored jobs run again
                self._start(name[: -len(".xml")])

    async def on_stop(self) -> None:
        if self.session is not None:
            with anyio.CancelScope(shield=True):
                await self.session.close()
            self.session = None

    def _make_folders(self) -> None:
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    # -- requests ------------------------------------------------------------------------

    @handler
    async def notify(self, msg: PullDPNotify) -> bool:
        """Store the notification (atomically), then run it; answers once it is stored."""
        parse_notification(msg.notification)  # a malformed one is refused here
        path = self.jobs / f"{msg.pkg_id}.xml"
        await anyio.to_thread.run_sync(_write_atomic, path, msg.notification.encode())
        self._provider("Successfully notified PullDP")
        self._start(msg.pkg_id)
        return True

    @handler
    async def holds(self, msg: PullDPHolds) -> bool:
        """The status poll: the version is in the library and no job for it is stored (a
        stored one still has its state messages to send: they end the site's job, with the
        bytes the last in-progress one carries)."""
        cid = content_id(msg.pkg_id, msg.version)
        if cid not in self.library.content_ids(msg.pkg_id):
            return False
        try:
            text = await anyio.Path(self.jobs / f"{msg.pkg_id}.xml").read_text()
            stored = parse_notification(text)
        except (FileNotFoundError, BadNotification):
            return True
        return stored.version != msg.version

    @handler
    async def remove_package(self, msg: DPRemovePackage) -> None:
        """The package leaves the pull DP: its stored job, staged files and content."""
        async with self._locks[msg.pkg_id]:
            await anyio.Path(self.jobs / f"{msg.pkg_id}.xml").unlink(missing_ok=True)
            await anyio.to_thread.run_sync(remove_tree, self.staging / msg.pkg_id)
            for cid in self.library.content_ids(msg.pkg_id):
                await self.library.remove_content(cid)
                self.trace(
                    f"Content '{cid}' for package '{msg.pkg_id}' has been removed from content"
                    " library successfully"
                )

    @handler
    async def abandon(self, msg: DPAbandon) -> None:
        """The site will not have this version here (an administrator's cancel, a job
        failed for good): its stored job goes and a download of it stops."""
        pkg_id, _, version = msg.content_id.rpartition(".")
        path = self.jobs / f"{pkg_id}.xml"
        try:
            stored = parse_notification(await anyio.Path(path).read_text())
        except (FileNotFoundError, BadNotification):
            return
        if str(stored.version) != version:
            return  # a newer job is stored: it goes on
        await anyio.Path(path).unlink(missing_ok=True)
        scope = self._running.get(pkg_id)
        if scope is not None:
            scope.cancel()

    @handler
    async def run_again(self, msg: RunPullJob) -> None:
        self._start(msg.pkg_id)

    def _start(self, pkg_id: str) -> None:
        if pkg_id in self._queued:
            return  # one run per package waits; it reads the newest stored notification
        self._queued.add(pkg_id)
        self.start_task(self._job, pkg_id)

    # -- a job ---------------------------------------------------------------------------

    async def _job(self, pkg_id: str) -> None:
        async with self._locks[pkg_id]:
            self._queued.discard(pkg_id)
            path = self.jobs / f"{pkg_id}.xml"
            try:
                text = path.read_text()
            except FileNotFoundError:
                return  # done by an earlier run
            n: PullNotification | None = None
            try:
                n = parse_notification(text)
                scope = self._running[pkg_id] = anyio.CancelScope()
                with scope:
                    async with self.limiter:
                        state = await self._execute(n)
                    await self._report(n, state)
                if scope.cancelled_caught:  # abandoned by the site: nothing to report
                    self.trace(f"Pull DP job for package {n.pkg_id}.{n.version} abandoned")
                    self._tries.pop(f"{n.pkg_id}.{n.version}", None)
                    await anyio.to_thread.run_sync(remove_tree, self.staging / pkg_id)
                    return
            except BadNotification as exc:
                self.trace(f"Pull DP job for package {pkg_id} refused: {exc}", severity="E")
                if n is not None:  # the site learns it failed (the .TZ did not verify)
                    self._tries.pop(f"{n.pkg_id}.{n.version}", None)
                    with suppress(TransferError, aiohttp.ClientError, OSError):
                        await self._report(n, STATE_FAILED, str(exc))
                await anyio.to_thread.run_sync(_unlink_if_same, path, text)
                return
            except (TransferError, ContentLibError, aiohttp.ClientError, OSError) as exc:
                self.trace(
                    f"Pull DP job for package {pkg_id} failed: {exc}. Will retry in"
                    f" {self.retry_delay} seconds",
                    severity="W",
                )
                self.send_later(self.retry_delay, self.address, RunPullJob(pkg_id))
                return
            finally:
                self._running.pop(pkg_id, None)
            self._tries.pop(f"{n.pkg_id}.{n.version}", None)
            await self._clear(n)
            await anyio.to_thread.run_sync(_unlink_if_same, path, text)

    async def _execute(self, n: PullNotification) -> int:
        tag = f"{n.pkg_id}.{n.version}"
        count = len(n.contents)
        self.trace(f"CPullDPService::LoadJobsFromXML for {tag}")
        self.trace(f"- {tag} - XML has {count} content jobs.")
        jobs: list[tuple[str, PullContent]] = []
        for content in n.contents:
            guid = _guid()
            self.trace("CPullDPPkgContJob::LoadContentJobFromXML(): Set JobState = NotStarted")
            self.trace(
                f"- {tag} - Loaded content job {guid} for content {content.content_id} from XML..."
            )
            jobs.append((guid, content))
        self.trace(
            f"CPullDPPkgJob::LoadJobFromXML() successfully loaded job for package {tag},"
            f" there are {count} content jobs. ..."
        )
        tz = self.staging / bundle_name(n.pkg_id)
        try:
            data = await anyio.to_thread.run_sync(tz.read_bytes)
        except FileNotFoundError as exc:
            raise BadNotification(f"package info bundle {tz} is missing") from exc
        bundle = read_bundle(data, n.hash)  # before any job runs
        self.trace(f"Successfully verified content info Hash {tz} :{n.hash}")
        manifests = {m.content_id: m for m in bundle.contents}
        self.trace("CPullDPService::ExecuteJobs(). 1 jobs to do")
        self.trace(f"{tag} Starting Download  there are {count} content jobs.")
        tracker = _Tracker(self, n, sum(m.size for m in _todo_all(self, n, manifests)))
        tracker.bytes_full, tracker.bytes_delta = self._tries.get(tag, (0, 0))
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            # The intermediate state messages go out beside the downloads (none waits for
            # the MP's answer); the last one is through before the final one is sent.
            tg.start_soon(tracker.send_states)
            tracker.state(PullProgress(0))
            try:
                for guid, content in jobs:
                    manifest = manifests.get(content.content_id)
                    if manifest is None:
                        raise BadNotification(
                            f"{content.content_id} is not in the package info bundle"
                        )
                    await self._content_job(n, guid, content, manifest, tracker)
                tracker.state(PullProgress(100, tracker.bytes_full, tracker.bytes_delta))
            except Exception as exc:  # raised as itself once the messages are sent
                failure = exc
            tracker.close()
        self._tries[tag] = (tracker.bytes_full, tracker.bytes_delta)
        if failure is not None:
            raise failure
        await tracker.report(final=True)
        self.trace(
            f"All {count} content jobs for {tag} have completed, notify of success for this"
            " pull dp job."
        )
        self.trace(f"{tag} has completed successfully, will clear stored content job state.")
        return STATE_SUCCESS

    async def _content_job(
        self,
        n: PullNotification,
        guid: str,
        content: PullContent,
        manifest: Manifest,
        tracker: _Tracker,
    ) -> None:
        tag, cid = f"{n.pkg_id}.{n.version}", content.content_id
        self.trace(f"Content job {guid} running.")
        self.trace(
            f"ContentExecuteJob {guid} (state: 1-NotStarted) for package {tag} content {cid}."
        )
        folder = self.staging / n.pkg_id / cid
        await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
        sources = [
            Source(loc.source, self.locate(loc.url), self._link(loc.source))
            for loc in content.locations
        ]
        redist = n.action == "redist"
        todo = _todo(self.library, manifest, redist=redist)
        rdc = [] if redist else self._rdc_files(todo, self._previous(n.pkg_id, n.version))
        again: list[FileEntry] = []
        if rdc:
            again = await self._signatures(n, guid, content, sources, folder, rdc, tracker)
        if redist:
            self.trace(f"{cid}: redistribute/redownload all files")
        else:
            for entry in todo:
                self.trace(f"File To Download: {os.path.basename(entry.path)}")
            present = len({e.sha256 for e in manifest.files}) - len(todo)
            self.trace(f"{cid}: {present} files already exists, {len(todo)} files to download")
        built = {f.entry.sha256 for f in rdc}
        full = [e for e in todo if e.sha256 not in built] + again
        if full:
            dts = _guid()
            self.trace(
                f"Created FullDownload(Manifest) DTS job {dts} for package {tag}, content id"
                f" {cid}, content job id {guid}."
            )
            self._dts(
                f"DTSJob {dts} created to download from '{content.locations[0].url}' to '{folder}'."
            )
            self._dts(f"Starting BITS job '{_guid()}' for DTS job '{dts}' under user 'S-1-5-18'.")
            self._dts(f"DTSJob {dts} in state 'DownloadingData'.")
            for entry in full:
                await download_file(
                    self._session(),
                    sources,
                    entry,
                    folder / entry.sha256,
                    allow_fallback=n.allow_fallback,
                    progress=tracker.add,
                    wire=tracker.crossed_full,
                    failed=self._source_failed,
                )
            self._dts(f"DTS job {dts} has completed:")
            self.trace(
                f"DTS message for content job {guid} received, searching 1 active jobs for any"
                f" containing this content job.  DTS Job is {dts}"
            )
            self.trace(
                f"DTS succeeded message received for {tag}, content job {guid}, status is 0x0 :"
            )
        self.trace(
            f"ContentExecuteJob {guid} (state: 9-Downloaded) for package {tag} content {cid}."
        )
        self.trace("CPullDPPkgContJob::ApplySingleInstancing(): JobState = Downloaded")
        with anyio.CancelScope(shield=True):  # an abandon lands before or after, not inside
            for entry in todo:
                await self.library.add_file_from_path(  # each was hashed as it was written
                    entry.sha256,
                    entry.size,
                    folder / entry.sha256,
                    move=True,
                    replace=redist,
                    verified=True,
                )
            await self.library.add_content(manifest)
        self._provider(
            f"Content '{cid}' for package '{n.pkg_id}' has been added to content library"
            " successfully"
        )
        await anyio.to_thread.run_sync(remove_tree, folder)
        self.trace("CPullDPPkgContJob::NotifySIApplied(). JobState = SIApplied")
        self.trace(f"Content job {guid} running.")
        self.trace(
            f"ContentExecuteJob {guid} (state: 13-SIApplied) for package {tag} content {cid}."
        )
        self.trace(
            f"CPullDPPkgContJob::NotifySucceeded(). Content job {guid} for package {tag} and"
            f" content {cid} has completed successfully. JobState = Succeeded"
        )
        self.trace(f"Notification that content job {guid} for package {tag} has completed.")

    async def _signatures(
        self,
        n: PullNotification,
        guid: str,
        content: PullContent,
        sources: list[Source],
        folder: Path,
        files: list[RdcFile],
        tracker: _Tracker,
    ) -> list[FileEntry]:
        """RDC: the changed files' signatures, then only the bytes the old files lack;
        returns the files to fetch whole after all."""
        tag, cid = f"{n.pkg_id}.{n.version}", content.content_id
        dts = _guid()
        self.trace(
            f"Created SignatureDownload DTS job {dts} for package {tag}, content id {cid}."
            " JobState = NotStarted"
        )
        self.trace(
            f"CPullDPPkgContJob::NotifyDeltaDownload. JobState = [Downloading Signature] {cid}"
            f" for package {tag} content job id {guid}"
        )
        self.trace(
            f"ContentExecuteJob {guid} (state: 4-Downloading Signature) for package {tag}"
            f" content {cid}."
        )
        sig_url = content.locations[0].url.replace("SMS_DP_SMSPKG$", "SMS_DP_SMSSIG$")
        self._dts(f"DTSJob {dts} created to download from '{sig_url}' to '{folder}'.")
        self._dts(f"Starting BITS download for DTS job '{dts}'.")
        self._dts(f"Starting BITS job '{_guid()}' for DTS job '{dts}' under user 'S-1-5-18'.")
        self._dts(f"Adding to BITS job: {cid}.tar")
        return await rdc_download(
            self._session(),
            sources,
            files,
            self.library,
            folder,
            allow_fallback=n.allow_fallback,
            progress=tracker.add,
            wire=tracker.crossed_delta,
            signatures_done=lambda: self._signatures_done(tag, cid, guid, dts),
            failed=self._source_failed,
        )

    def _signatures_done(self, tag: str, cid: str, guid: str, dts: str) -> None:
        self._dts(f"DTSJob {dts} successfully completed download.")
        self._dts(f"Execute called for DTS job '{dts}'.  Current state: 'RetrievedData'.")
        self._dts(f"DTSJob {dts} in state 'NotifiedComplete'.")
        self._dts(f"DTS job {dts} has completed:")
        self.trace(
            f"DTS message for content job {guid} received, searching 1 active jobs for any"
            f" containing this content job.  DTS Job is {dts}"
        )
        self.trace(f"DTS succeeded message received for {tag}, content job {guid}, status is 0x0 :")
        self.trace(
            f"ContentExecuteJob {guid} (state: 5-Signature Downloaded) for package {tag}"
            f" content {cid}. ..."
        )

    async def _report(self, n: PullNotification, state: int, data: str = "") -> None:
        """The state message to the site's MP (raises on failure: the job is retried)."""
        tag = f"{n.pkg_id}.{n.version}"
        self.trace(f"Report state message 0x{state:08X} ({state}) to MP for package '{tag}'")
        message = PullDPStateMessage(
            machine=self.name,
            pkg_id=n.pkg_id,
            version=n.version,
            state=state,
            nal_path=self.nal_path,
            job_guid=_guid(),
            data=data,
            time=self._clock.wall(),
        )
        body = report_xml(message)
        self.trace("Sending Report")
        async with self._session().post(self.mp_url, data=body.encode()) as response:
            if response.status != 200:
                raise TransferError(f"the management point answered HTTP {response.status}")
        self.trace("Request was successful.")
        self.trace("CPullDPResponse::ReportPackageState return value 0x00000000.")

    async def _clear(self, n: PullNotification) -> None:
        tag, count = f"{n.pkg_id}.{n.version}", len(n.contents)
        self.trace(f"Clearing content job states for all {count} content jobs in package {tag}.")
        self.trace("CPullDPService::ClearCompletedJobs(), removing 1 completed jobs.")
        self.trace(f"Removing job for package {tag} from job array and WMI.")
        self.trace(f"Clearing content job states for all {count} content jobs in package {tag}.")

    # -- helpers -------------------------------------------------------------------------

    def _rdc_files(self, todo: list[FileEntry], previous: dict[str, FileEntry]) -> list[RdcFile]:
        """An update's files to build by RDC: each changed one from its old version (by
        path, else the one old file of the same name: a renamed folder), and a small new
        one whole in the same requests. None without an older version here."""
        if not previous:
            return []
        by_name: dict[str, list[FileEntry]] = defaultdict(list)
        for e in previous.values():
            by_name[os.path.basename(e.path)].append(e)
        out: list[RdcFile] = []
        for entry in todo:
            old = previous.get(entry.path)
            if old is None and len(same := by_name.get(os.path.basename(entry.path), [])) == 1:
                old = same[0]
            if old is not None and self.library.has_file(old.sha256):
                out.append(RdcFile(entry, old, self.library.file_path(old.sha256)))
            elif entry.size <= WHOLE_MAX:
                out.append(RdcFile(entry, None, None))
        return out

    def _previous(self, pkg_id: str, version: int) -> dict[str, FileEntry]:
        """The files of the newest older version the library holds, by path."""
        older = [c for c in self.library.content_ids(pkg_id) if _version_of(c) < version]
        if not older:
            return {}
        return {e.path: e for e in self.library.manifest(older[-1]).files}

    def _link(self, source: str) -> NetworkLink:
        link = self.links.get(source.upper())
        if link is None:  # no [[link]] between them: a local, unthrottled path
            link = self.links[source.upper()] = NetworkLink(f"{source}->{self.name}", self._clock)
        return link

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise TransferError(f"pull DP {self.name} is not running")
        return self.session

    def _source_failed(self, why: str) -> None:
        self._dts(f"Download from {why}; trying the next source", severity="W")

    def _provider(self, line: str) -> None:
        if self.provider_log is not None:
            self.provider_log.write(line, when=self._clock.wall())

    def _dts(self, line: str, *, severity: Severity = "I") -> None:
        if self.dts_log is not None:
            self.dts_log.write(line, severity=severity, when=self._clock.wall())


class _Tracker:
    """A job's progress: bytes downloaded of those to download, published rate-limited."""

    def __init__(self, agent: PullDPAgent, n: PullNotification, total: int) -> None:
        self.agent = agent
        self.n = n
        self.total = total
        self.done = 0
        self.last: float | None = None
        self.reported = 0  # the percentage the last intermediate state message carried
        self.last_message: float | None = None
        self.bytes_full = 0  # what crossed for this job: whole files (failed tries too)
        self.bytes_delta = 0  # ... and RDC (signatures and chunks)
        # At most one message per STATE_STEP %, so 1 + 100 / STATE_STEP + 1 in all.
        self._states, self._pending = anyio.create_memory_object_stream[PullProgress](
            2 + 100 // STATE_STEP
        )

    def crossed_full(self, payload: int, overhead: int) -> None:
        self.bytes_full += payload
        self.agent.bytes_downloaded += payload
        self.agent.wire_bytes += payload + overhead

    def crossed_delta(self, payload: int, overhead: int) -> None:
        self.bytes_delta += payload
        self.agent.bytes_downloaded += payload
        self.agent.wire_bytes += payload + overhead

    async def add(self, nbytes: int) -> None:
        self.done += nbytes
        await self.report()
        self.state_message()

    def state_message(self) -> None:
        """The intermediate state message (State 2) with the running percentage, at each
        step of STATE_STEP % and at most once per STATE_INTERVAL of the clock: the site
        hears how far the download is without a message per read."""
        percent = min(100, self.done * 100 // max(1, self.total))
        now = self.agent.clock.now()
        if percent >= 100 or percent < self.reported + STATE_STEP:
            return
        if self.last_message is not None and now - self.last_message < STATE_INTERVAL:
            return
        self.reported, self.last_message = percent, now
        self.state(PullProgress(percent))

    def state(self, progress: PullProgress) -> None:
        """Queue a State 2 message for :meth:`send_states` (never waits: the queue holds
        every message a job can have)."""
        self._states.send_nowait(progress)

    def close(self) -> None:
        """No more messages: :meth:`send_states` ends once the queued ones are sent."""
        self._states.close()

    async def send_states(self) -> None:
        async with self._pending:
            async for progress in self._pending:
                # one that does not get through is not retried: a later one matters more
                with suppress(TransferError, aiohttp.ClientError, OSError):
                    await self.agent._report(self.n, STATE_IN_PROGRESS, progress_data(progress))

    async def report(self, *, final: bool = False) -> None:
        publish = self.agent.progress
        if publish is None:
            return
        now = self.agent.clock.now()
        if not final and self.last is not None and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        total = max(self.total, self.done)
        await publish(self.n.pkg_id, self.n.version, total if final else self.done, total)


def _todo(library: ContentLibrary, manifest: Manifest, *, redist: bool) -> list[FileEntry]:
    """Each distinct file to download: those the library lacks (all on redistribute)."""
    seen: set[str] = set()
    todo: list[FileEntry] = []
    for entry in manifest.files:
        if entry.sha256 in seen or (not redist and library.has_file(entry.sha256)):
            continue
        seen.add(entry.sha256)
        todo.append(entry)
    return todo


def _todo_all(
    agent: PullDPAgent, n: PullNotification, manifests: Mapping[str, Manifest]
) -> list[FileEntry]:
    return [
        e
        for c in n.contents
        if c.content_id in manifests
        for e in _todo(agent.library, manifests[c.content_id], redist=n.action == "redist")
    ]


def _version_of(cid: str) -> int:
    return int(cid.rsplit(".", 1)[1])


def _guid() -> str:
    return "{" + str(uuid.uuid4()).upper() + "}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _unlink_if_same(path: Path, text: str) -> None:
    """Clear a stored job unless a newer notification replaced it meanwhile."""
    try:
        if path.read_text() == text:
            path.unlink()
    except FileNotFoundError:
        pass
