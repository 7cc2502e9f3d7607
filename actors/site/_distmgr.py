"""DistMgr: the distribution manager of a site server.

The main thread takes SMSDBMON's package notifications into the package processing queue
(a package queued twice is processed once; one that changes while it is processed is
processed again after). ``package_processing_threads`` workers each take a package: on its
source site a new or refreshed package is snapshotted into the site's content library as
a new version (SHA-256 content hash, algorithm 32780), then DP threads, at most
``threads_per_package`` at a time, create the PkgXferMgr jobs (``DistributionJobs``) and
reset the DP's action, as the reference's SQL shows. The STA statuses PkgXferMgr sends
back become the DP's ``PkgStatus`` Type 2 row and the status messages 2330 / 2332.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from actors import addresses
from actors._crashpoints import crash_point
from actors.config import HierarchyConfig
from actors.errors import CmdistError
from actors.site._inbox import StatusInbox
from actors.site._keyed import KeyedLocks
from actors.site._paths import package_file, release_package_file
from actors.site._pullresponse import process_pull_response
from actors.site.messages import (
    PACKAGE_CHANGED_TOPIC,
    MiniJobCreated,
    PackageChanged,
    PackageNotification,
    PullResponseNotification,
    StatusFile,
    TransferStatus,
)
from actors.sitedb import (
    DistributionPointRow,
    JobAction,
    JobState,
    NotificationType,
    PackageAction,
    PackageRow,
    PkgServerRow,
    PkgStatusValue,
    ServerAction,
    SiteDatabase,
    UpdateMaskEx,
    WriteOp,
    ops,
    product_time,
)
from actors.status import (
    ATTR_DP_NAL_PATH,
    ATTR_PACKAGE_ID,
    CMTraceLog,
    Component,
    StatusMessage,
    StatusReporter,
    as_thread,
    format_thread_id,
    new_thread_id,
)
from bus import BusClosed, handler
from contentlib import ContentLibError, ContentLibrary, Manifest, parse_content_id
from contentlib import content_id as make_content_id

__all__ = ["PACKAGE_CHANGED_TOPIC", "DistMgr"]


_HASH_ALGORITHM = 32780  # CALG_SHA_256, as the reference logs it
CONTENT_ARRIVED_MASK = 160  # the despooler's UpdateMask: a version arrived from another site
_MAX_DELTA_VERSIONS = 5  # a site further behind gets the whole package (PCK)


class DistMgr(Component):
    """``<SITE>/DistMgr``."""

    # Notifications are only queued here; STA statuses are processed by several workers
    # at once (each is a few database writes that the single writer group-commits).
    workers = 8
    mailbox_size = 10_000

    def __init__(
        self,
        *,
        site: str,
        hierarchy: HierarchyConfig,
        db: SiteDatabase,
        library: ContentLibrary,
        reporter: StatusReporter,
        inbox: StatusInbox,
        log: CMTraceLog | None = None,
        server_root: Path | None = None,
    ) -> None:
        self.site = site
        self.server_root = server_root or hierarchy.server_root(hierarchy.site(site).server)
        self.inbox = inbox
        self._replication_thread = new_thread_id()
        self.hierarchy = hierarchy
        # Where SMSDBMON drops the .PUL files this DistMgr processes (named in its log).
        server = hierarchy.server_root(hierarchy.site(site).server)
        self.pul_box = server / "inboxes" / "distmgr.box" / "incoming"
        self.settings = hierarchy.settings
        self.db = db
        self.library = library
        self.reporter = reporter
        self.trace_log = log
        self._queue: deque[str] = deque()
        # One .PUL processed at a time per PkgStatus row: each response row inserted drops
        # one, and two workers reading the same rows would process them twice.
        self.pul_locks: KeyedLocks[int] = KeyedLocks()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._wake = anyio.Event()
        self._deleting = anyio.Lock()
        self.processed = 0

    async def on_start(self) -> None:
        # STA files a crash left: their statuses first, then the work still to do.
        for path in self.inbox.pending():
            await self._process_status_file(path)
        for _ in range(self.settings.package_processing_threads):
            self.start_task(self._processing_thread)
        site = self.site
        # DPs left behind their package's stored version with nothing to bring them there:
        # marked for an update, and logged as the defect they are.
        for pkg_id, nal in await self.db.write(lambda conn: ops.mark_stale_servers(conn, site)):
            self.trace(
                f"Package {pkg_id} on {nal} is behind its stored version with no job and no"
                " pending action; marking it for update.",
                severity="W",
            )
        # What a previous run was told but did not finish: packages and DPs with an action.
        for pkg_id in await self.db.packages_with_work(site):
            self._enqueue(pkg_id)

    # -- the main thread -----------------------------------------------------------------

    @handler
    async def notified(self, msg: PackageNotification) -> None:
        if msg.type != NotificationType.SERVER_CHANGED:  # the reference logs it for packages only
            self.trace(f"Found package properties updated notification for package '{msg.pkg_id}'")
        self._enqueue(msg.pkg_id)

    def _enqueue(self, pkg_id: str) -> None:
        if pkg_id in self._queued:
            return  # already waiting: one processing covers both notifications
        if pkg_id in self._running:
            self._again.add(pkg_id)  # changed while being processed: once more after
            return
        self.trace(f"Adding package '{pkg_id}' to package processing queue.")
        self._queued.add(pkg_id)
        self._queue.append(pkg_id)
        self._wake.set()

    async def _processing_thread(self) -> None:
        while True:
            while not self._queue:
                # One event shared by every idle thread: replaced only once it has fired,
                # else each waiter would orphan the others' event and one thread did all.
                if self._wake.is_set():
                    self._wake = anyio.Event()
                await self._wake.wait()
            pkg_id = self._queue.popleft()
            self._queued.discard(pkg_id)
            self.trace(
                f"~Currently using {len(self._running)} out of"
                f" {self.settings.package_processing_threads} allowed package processing"
                " threads."
            )
            self._running.add(pkg_id)
            tid = new_thread_id()
            self.trace(
                f"~Started package processing thread for package '{pkg_id}',"
                f" thread ID = {format_thread_id(tid)}"
            )
            with as_thread(tid):
                try:
                    await self._process(pkg_id)
                    # Not in ``finally``: a publish while the actor is cancelled at
                    # shutdown raised BusClosed over the cancellation. A package processed
                    # while the bus stops is stored all the same: nobody listens any more.
                    with suppress(BusClosed):
                        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))
                finally:
                    self._running.discard(pkg_id)
                    self.processed += 1
                    self.trace(f"~Exiting package processing thread for package {pkg_id}.")
            if pkg_id in self._again:
                self._again.discard(pkg_id)
                self._enqueue(pkg_id)

    # -- a package processing thread -----------------------------------------------------

    async def _process(self, pkg_id: str) -> None:
        """One package: a failure is that package's failure (2302 with the reason, its DPs
        Failed, its action parked until the next admin request), never the component's."""
        pkg, servers = await self.db.package_and_servers(pkg_id)
        if pkg is None:
            return
        try:
            await self._process_package(pkg, servers)
        except Exception as exc:
            await self._package_failed(pkg, _reason(exc))

    async def _process_package(self, pkg: PackageRow, known: list[PkgServerRow]) -> None:
        """``known``: the package's DP rows at every site, read with it; read again where
        the processing writes them (a version stored, content arrived)."""
        pkg_id = pkg.pkg_id
        everywhere: list[PkgServerRow] | None = known
        if self._replicated_add(pkg):
            await self._add_replicated(pkg)
            pkg = await self.db.package(pkg_id) or pkg
            everywhere = None
        elif self._new_here(pkg) and pkg.stored_pkg_version == 0:
            # 2300 comes first, then the processing line (as the reference's log has it)
            await self._report(2300, (pkg.name, pkg_id), pkg_id)
            self._processing_line(pkg)
        else:
            self._processing_line(pkg)
        new_version = False
        if self._new_here(pkg):
            stored = await self._store_new_version(pkg)
            if stored is None:
                return
            pkg, new_version, everywhere = stored, True, None
            crash_point("distmgr.version_committed")
        elif pkg.action == PackageAction.NONE and pkg.source_site == self.site:
            self.trace(
                f"No action specified for the package {pkg_id}, however there may be"
                " package server changes for this package."
            )
        elif self._content_arrived(pkg):
            pkg, everywhere = await self._take_arrived(pkg), None
        if everywhere is None:
            everywhere = await self.db.pkg_servers(pkg_id)  # one read: this site's and others'
        servers = [s for s in everywhere if s.site_code == self.site]
        await self._dp_threads(pkg, servers)
        if pkg.source_site == self.site and pkg.stored_pkg_version > 0:
            await self._send_to_sites(pkg, everywhere)
        if pkg.action == PackageAction.DELETE:
            await self._finish_delete(pkg)
        elif new_version:
            await self._version_processed(pkg)

    async def _version_processed(self, pkg: PackageRow) -> None:
        """The end of storing a version: who sends it, where its definition goes, 2301."""
        pkg_id = pkg.pkg_id
        self.trace(f"~Package {pkg_id} does not have a preferred sender.")
        if len(self.hierarchy.sites) > 1:  # DRS takes the package's rows to the other sites
            self.trace(
                f"Package {pkg_id} is new or has changed, replicating to all applicable sites."
            )
        self._available_version(pkg_id, pkg.stored_pkg_version, 2301)
        self.trace(
            f"~StoredPkgVersion ({pkg.stored_pkg_version}) of package {pkg_id}."
            f" StoredPkgVersion in database is {pkg.stored_pkg_version}."
        )
        self.trace(
            f"~SourceVersion ({pkg.source_version}) of package {pkg_id}."
            f" SourceVersion in database is {pkg.source_version}."
        )
        if pkg.stored_pkg_version == 1:
            self.trace(
                f"~Adding these contents to the package {pkg_id} version {pkg.stored_pkg_version}."
            )
        await self._report(2301, (pkg.name, pkg_id), pkg_id)

    def _processing_line(self, pkg: PackageRow) -> None:
        self.trace(
            f"~Processing package {pkg.pkg_id} (SourceVersion:{pkg.source_version};"
            f"StoredVersion:{pkg.stored_pkg_version})"
        )

    def _replicated_add(self, pkg: PackageRow) -> bool:
        """A package of another site that DRS just brought here (Action 2, no content)."""
        return (
            pkg.source_site != self.site
            and pkg.action == PackageAction.ADD
            and pkg.stored_pkg_version == 0
        )

    async def _add_replicated(self, pkg: PackageRow) -> None:
        """The reference's "Create a package" step 6 at a receiving site: the package is
        known here (2300, 2311, 2301) and its action reset; no content moves until a DP of
        this site wants it (the source site sends it then)."""
        pkg_id = pkg.pkg_id
        await self._report(2300, (pkg.name, pkg_id), pkg_id)
        self._processing_line(pkg)
        self.trace(f"Start adding package {pkg_id}...")
        self.trace(
            f"~The Package Action is {int(pkg.action)}, the Update Mask is {pkg.update_mask}"
            f" and UpdateMaskEx is {pkg.update_mask_ex}."
        )
        self.trace(f"~Successfully created/updated the package {pkg_id}")
        await self._report(2311, (pkg_id,), pkg_id)
        self.trace(f"~Created policy provider trigger for ID {pkg_id}")
        self.trace(f"~Package {pkg_id} does not have a preferred sender.")
        self._available_version(pkg_id, pkg.source_version, 2301)
        self.trace(
            f"~StoredPkgVersion ({pkg.stored_pkg_version}) of package {pkg_id}."
            f" StoredPkgVersion in database is {pkg.stored_pkg_version}."
        )
        self.trace(
            f"~SourceVersion ({pkg.source_version}) of package {pkg_id}."
            f" SourceVersion in database is {pkg.source_version}."
        )
        action_seq = pkg.action_seq
        parked = False

        def park(conn: sqlite3.Connection) -> None:
            nonlocal parked
            parked = ops.park_package(conn, pkg_id, action_seq)

        # The action reset and 2301 in one commit: whoever sees 2301 sees the package done.
        await self._report(2301, (pkg.name, pkg_id), pkg_id, op=park)
        if not parked:
            self._again.add(pkg_id)  # asked again meanwhile: processed once more

    def _content_arrived(self, pkg: PackageRow) -> bool:
        """The despooler stored a version of another site's package here (Action 1 with
        the reference's Update Mask 160)."""
        return (
            pkg.source_site != self.site
            and pkg.action == PackageAction.UPDATE
            and pkg.update_mask == CONTENT_ARRIVED_MASK
        )

    async def _take_arrived(self, pkg: PackageRow) -> PackageRow:
        """Destination site, "Distribute a package to DP across sites" step 9: the DPs of
        this site that hold the package get the new version (targeted ones keep their
        add), and the package's action goes back to 0 (compare and set)."""
        pkg_id = pkg.pkg_id
        self.trace(f"Start updating the package {pkg_id}...")
        self.trace(
            f"~The Package Action is {int(pkg.action)}, the Update Mask is {pkg.update_mask}"
            f" and UpdateMaskEx is {pkg.update_mask_ex}."
        )
        self.trace("~Use drive E for storing the compressed package.")
        site, action_seq = self.site, pkg.action_seq
        if not await self.db.write(
            lambda conn: ops.take_arrived_version(
                conn, pkg_id=pkg_id, site_code=site, action_seq=action_seq
            )
        ):
            self._again.add(pkg_id)
        self.trace(f"~Successfully created/updated the package {pkg_id}")
        # The previous version stays as the base of deltas to DPs; older ones go.
        for old in self.library.content_ids(pkg_id):
            if _version(old) < pkg.stored_pkg_version - 1:
                await self.library.remove_content(old)
        return await self.db.package(pkg_id) or pkg

    async def _send_to_sites(self, pkg: PackageRow, servers: list[PkgServerRow]) -> None:
        """Source site, step 3-3: a compressed copy to every site with a targeted DP that
        lacks this version (its Type 1 row says what it stores), once per version and
        site; routed along the tree, a hop at a time."""
        pkg_id, version = pkg.pkg_id, pkg.stored_pkg_version
        wanted = sorted(
            {
                s.site_code
                for s in servers
                if s.site_code != self.site and s.action != ServerAction.REMOVE
            }
        )
        lacking = [s for s in wanted if await self.db.site_version(pkg_id, s) < version]
        # A site on the way to another one stores the copy it forwards (SS1's through
        # PS1): one send covers both, and the link to it carries the package once.
        on_the_way = {
            hop for site in lacking for hop in self.hierarchy.tree_path(self.site, site)[1:-1]
        }
        for site in lacking:
            if site in on_the_way:
                continue
            if await self.db.minijob_for(pkg_id, version, site) is None:  # not on its way
                await self._minijob(pkg, site, await self._delta_base(pkg, site))

    async def _delta_base(self, pkg: PackageRow, site: str) -> int:
        """The version a site's DLT starts from: the one it holds, if the library still
        has it and it is at most 5 versions behind (0: the site gets the PCK)."""
        held = await self.db.site_version(pkg.pkg_id, site)
        version = pkg.stored_pkg_version
        if held == 0 or version - held > _MAX_DELTA_VERSIONS:
            return 0
        if make_content_id(pkg.pkg_id, held) not in self.library.content_ids(pkg.pkg_id):
            return 0
        # every site on the way stores the copy it forwards: each must hold the base too
        for hop in self.hierarchy.tree_path(self.site, site)[1:-1]:
            if await self.db.site_version(pkg.pkg_id, hop) != held:
                return 0
        return held

    async def _minijob(self, pkg: PackageRow, site: str, base: int) -> None:
        pkg_id, version = pkg.pkg_id, pkg.stored_pkg_version
        self.trace(f"~Package {pkg_id} does not have a preferred sender.")
        if base:  # an update: the compressed changes (2333, with the site)
            await self._report(2333, (pkg_id, site), pkg_id)
        self.trace(f"~Needs to send the compressed package for package {pkg_id} to site {site}")
        self.trace(f"~Sending a copy of package {pkg_id} to site {site}")
        path = self.hierarchy.tree_path(self.site, site)
        hop = path[1]
        if hop == site:
            self.trace(f"~The reporting site of site {site} is this site.")
        self.trace("~Use drive E for storing the compressed package.")
        pck = package_file(self.server_root, pkg_id, version, base)
        self.trace(f"~Setting CMiniJob transfer root to {pck}")
        root = str(pck)
        # DistMgr's own reference while it builds and hands over the file: a send request
        # completing meanwhile cannot delete it under us.
        await self.db.write(lambda conn: ops.add_package_file_ref(conn, root))
        try:
            if not await anyio.to_thread.run_sync(pck.exists):  # built once per version
                await anyio.Path(pck.parent).mkdir(parents=True, exist_ok=True)
                new = make_content_id(pkg_id, version)
                if base:
                    await self.library.write_dlt(make_content_id(pkg_id, base), new, pck)
                else:
                    await self.library.write_pck(new, pck)
            size = (await anyio.Path(pck).stat()).st_size
            now = product_time(self.clock.wall())
            job_id = await self.db.write(
                lambda conn: ops.insert_minijob(
                    conn,
                    pkg_id=pkg_id,
                    version=version,
                    dest_site=hop,
                    final_site=site,
                    transfer_root=root,
                    priority=pkg.priority,
                    size=size,
                    now=now,
                    base_version=base,
                )
            )
            refs = await self.db.package_file_refs(root)
            self.trace(f"Incremented ref count on file {pck}, count = {refs}")
        finally:
            left = await self.db.write(lambda conn: release_package_file(conn, root))
            self.trace(f"Decremented ref count on file {pck}, count = {left}")
        if job_id is None:
            return
        self.trace(
            f"~Created minijob to send compressed copy of package {pkg_id} to site {site}."
            f"  Transfer root = {pck}."
        )
        self.trace(
            f"The package and/or program properties for package {pkg_id} have not changed, "
            " need to determine which site(s) need updated package info."
        )
        self.trace(
            f"A distribution point has been changed at this site, adding site {site} to the"
            f" list of sites to which we are sending package {pkg_id}."
        )
        self.trace(f"Parent site of {site} is {self.hierarchy.site(site).parent}")
        await self.send(addresses.scheduler(self.site), MiniJobCreated(job_id))

    def _available_version(self, pkg_id: str, version: int, status: int) -> None:
        """The product's line for the status of the version its DPs may take."""
        self.trace(
            f"~CDistributionSrcSQL::UpdateAvailableVersion PackageID={pkg_id},"
            f" Version={version}, Status={status}"
        )

    def _new_here(self, pkg: PackageRow) -> bool:
        """A package of this site with a new or refreshed source: a version to store."""
        return pkg.source_site == self.site and pkg.action in (
            PackageAction.ADD,
            PackageAction.UPDATE,
        )

    async def _store_new_version(self, pkg: PackageRow) -> PackageRow | None:
        """Snapshot the source as the next version; the updated row, or None on failure."""
        pkg_id = pkg.pkg_id
        adding = pkg.stored_pkg_version == 0
        if adding:
            self.trace(f"Start adding package {pkg_id}...")
            self._action_line(pkg)
            self._available_version(pkg_id, pkg.source_version, 2300)
        else:
            self.trace(f"Start updating the package {pkg_id}...")
        manifest = await self._snapshot(pkg)
        if manifest is None:
            return None
        await self._commit_version(pkg, manifest)
        if not adding:
            self.trace(f"~Successfully created/updated the package {pkg_id}.")
            await self._report(2311, (pkg_id,), pkg_id)
        # The previous version stays as the base of deltas to DPs; older ones go.
        for old in self.library.content_ids(pkg_id):
            if _version(old) < manifest.version - 1:
                await self.library.remove_content(old)
        return await self.db.package(pkg_id)

    async def _snapshot(self, pkg: PackageRow) -> Manifest | None:
        """The source into the site's content library as the next version (None: the
        package failed, with its reason)."""
        pkg_id = pkg.pkg_id
        version = pkg.stored_pkg_version + 1
        content_id = make_content_id(pkg_id, version)
        self.trace(f"Taking package snapshot for package {pkg_id} from source {pkg.source}")
        try:
            if content_id in self.library.content_ids(pkg_id):
                # A crash after the snapshot and before the database said so: take it again.
                await self.library.remove_content(content_id)
            report = await self.library.snapshot(pkg_id, Path(pkg.source), content_id, sign=True)
        except (OSError, ContentLibError) as exc:
            await self._package_failed(pkg, _reason(exc), source_problem=True)
            return None
        manifest = report.manifest
        self.trace(
            f"The size of package {pkg_id}, version {version} is {manifest.size // 1024} KBytes"
        )
        self.trace(f"Writing package definition for {pkg_id}")
        try:  # the chunk signatures deltas and pull DPs work from, made now as the product does
            signatures_hash = await self.library.sign_content(content_id)
        except (OSError, ContentLibError) as exc:
            await self._package_failed(pkg, _reason(exc))
            return None
        self.trace(f"~Successfully created RDC signatures for package {pkg_id} version {version}")
        self.trace(f"Creating hash for algorithm {_HASH_ALGORITHM}")
        self.trace(f"The hash for algorithm {_HASH_ALGORITHM} is {manifest.content_hash}")
        self.trace(f"The RDC signature hash for algorithm {_HASH_ALGORITHM} is {signatures_hash}")
        adding = pkg.stored_pkg_version == 0
        if adding:
            self.trace(f"~Adding these contents to the package {pkg_id} version {version}.")
        await self._report(2376, (pkg_id,), pkg_id)
        if not adding:
            self.trace(
                f"~The source for package {pkg_id} has changed or the package source needs"
                " to be refreshed"
            )
            self.trace(f"~Adding these contents to the package {pkg_id} version {version}.")
            # the snapshot took the refreshed source: that request is done
            self._action_line(pkg, pkg.update_mask_ex & ~UpdateMaskEx.REFRESH_SOURCE)
        return manifest

    def _action_line(self, pkg: PackageRow, update_mask_ex: int | None = None) -> None:
        mask_ex = pkg.update_mask_ex if update_mask_ex is None else update_mask_ex
        self.trace(
            f"~The Package Action is {int(pkg.action)}, the Update Mask is {pkg.update_mask}"
            f" and UpdateMaskEx is {mask_ex}."
        )

    async def _commit_version(self, pkg: PackageRow, manifest: Manifest) -> None:
        """The version, its DPs marked for update and the package's action reset (compare
        and set) in one commit; changed meanwhile, the package is processed again."""
        store = partial(
            ops.store_package_version,
            pkg_id=pkg.pkg_id,
            site_code=self.site,
            version=manifest.version,
            content_id=manifest.content_id,
            content_hash=manifest.content_hash,
            size=manifest.size,
            now=self.clock.wall(),
            action_seq=pkg.action_seq,
        )
        if not await self.db.write(store):
            self.trace(
                f"~Package {pkg.pkg_id} changed while it was processed; processing it again."
            )
            self._again.add(pkg.pkg_id)

    async def _package_failed(
        self, pkg: PackageRow, reason: str, *, source_problem: bool = False
    ) -> None:
        """2306 (for a source that cannot be snapshotted) and 2302 naming the reason, every
        DP the package targets here Failed, and the action parked (compare and set: a
        request that came in meanwhile is processed next) — in one commit."""
        pkg_id = pkg.pkg_id
        self.trace(f"Failed to process package {pkg_id}: {reason}", severity="E")
        targets = [
            s
            for s in await self.db.pkg_servers(pkg_id, site_code=self.site)
            if s.action != ServerAction.REMOVE
        ]
        failed = []
        for server in targets:
            dp = await self.db.distribution_point(server.nal_path)
            if dp is not None:
                failed.append(
                    self._status_op(pkg_id, dp, PkgStatusValue.FAILED, pkg.stored_pkg_version)
                )
        action_seq = pkg.action_seq
        deleting = pkg.action == PackageAction.DELETE  # a delete is never parked

        def op(conn: sqlite3.Connection) -> None:
            if deleting or not ops.park_package(conn, pkg_id, action_seq):
                return  # asked again meanwhile: the next processing tries again
            for store in failed:
                store(conn)
            ops.reset_server_actions(conn, targets)

        attributes = {ATTR_PACKAGE_ID: pkg_id}
        messages = [self.reporter.message(2302, (pkg.name, pkg_id, reason), attributes)]
        if source_problem:
            messages.insert(
                0, self.reporter.message(2306, (pkg.name, pkg.source, reason), attributes)
            )
        await self.reporter.raise_messages(messages, op=op)
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg_id))

    async def _dp_threads(self, pkg: PackageRow, servers: list[PkgServerRow]) -> None:
        work: list[tuple[PkgServerRow, DistributionPointRow]] = []
        no_content: list[PkgServerRow] = []
        waiting: list[PkgServerRow] = []
        for server in servers:
            wanted = server.action != ServerAction.NONE or server.refresh_trigger
            removing = server.action == ServerAction.REMOVE or pkg.action == PackageAction.DELETE
            if not wanted:
                continue
            if pkg.stored_pkg_version == 0 and not removing:
                if pkg.source_site != self.site:
                    waiting.append(server)  # its content is on its way from the source site
                elif pkg.action == PackageAction.NONE:
                    no_content.append(server)  # its processing failed: nothing to send
                continue
            dp = await self.db.distribution_point(server.nal_path)
            if dp is not None:
                work.append((server, dp))
        if waiting:
            # The DPs keep their action: the despooler's notification brings us back.
            self.trace(
                f"~The contents for the package {pkg.pkg_id} hasn't arrived from site"
                f" {pkg.source_site} yet, will retry later."
            )
        if no_content:
            await self._no_content(pkg, no_content)
        if not work:
            return
        limiter = anyio.CapacityLimiter(self.settings.threads_per_package)

        async def dp_thread(server: PkgServerRow, dp: DistributionPointRow, tid: int) -> None:
            with as_thread(tid):
                await one_dp(server, dp)
            self.trace(
                f"~DP thread for package {pkg.pkg_id} with thread handle {tid:016X} and"
                f" thread ID {tid} ended."
            )

        async def one_dp(server: PkgServerRow, dp: DistributionPointRow) -> None:
            async with limiter:
                try:
                    if server.action == ServerAction.REMOVE or pkg.action == PackageAction.DELETE:
                        await self._remove_from_dp(pkg, dp)
                    else:
                        await self._add_to_dp(pkg, server, dp)
                except Exception as exc:
                    # The DP's action stays set: the next processing (or restart) retries.
                    self.trace(
                        f"DP thread for package {pkg.pkg_id} on {dp.nal_path} failed:"
                        f" {_reason(exc)}",
                        severity="E",
                    )

        async with anyio.create_task_group() as tg:
            for server, dp in work:
                tid = new_thread_id()
                self.trace(_start_line(pkg.pkg_id, server, dp.nal_path))
                self.trace(
                    f"~Created DP processing thread {tid} for addition or update of package"
                    f" {pkg.pkg_id} on server {dp.nal_path}"
                )
                tg.start_soon(dp_thread, server, dp, tid)
            self.trace(
                f"~Waiting for all DP threads to complete for package {pkg.pkg_id}"
                " processing thread."
            )
        self.trace(f"~All DP threads have completed for package {pkg.pkg_id} processing thread.")

    async def _no_content(self, pkg: PackageRow, servers: list[PkgServerRow]) -> None:
        """DPs asked for a package whose processing failed (2302 says why) before it had a
        version: Failed, their request parked, until an update brings content."""
        failed = []
        for server in servers:
            dp = await self.db.distribution_point(server.nal_path)
            if dp is not None:
                failed.append(self._status_op(pkg.pkg_id, dp, PkgStatusValue.FAILED, 0))

        def op(conn: sqlite3.Connection) -> None:
            for store in failed:
                store(conn)
            ops.reset_server_actions(conn, servers)

        await self.db.write(op)
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg.pkg_id))

    async def _add_to_dp(
        self, pkg: PackageRow, server: PkgServerRow, dp: DistributionPointRow
    ) -> None:
        self.trace(
            f"DP Thread: Attempting to add or update package {pkg.pkg_id} on DP {dp.nal_path}"
        )
        if dp.is_pull_dp:
            self.trace(f"Package Server {dp.nal_path} is a PullDP.")
        if pkg.source_site != self.site:
            await self._report(2342, (pkg.name, dp.nal_path), pkg.pkg_id, dp.nal_path)
        action = JobAction.REDISTRIBUTE if server.refresh_trigger else JobAction.ADD_OR_UPDATE
        now = self.clock.wall()
        in_progress = self._status_op(pkg.pkg_id, dp, PkgStatusValue.NONE, pkg.stored_pkg_version)

        def op(conn: sqlite3.Connection) -> None:
            ops.insert_distribution_job(
                conn,
                dp=dp,
                pkg_id=pkg.pkg_id,
                package_version=pkg.stored_pkg_version,
                action=action,
                now=now,
                server=server,
            )
            in_progress(conn)

        self.trace(
            f"~Created package transfer job to send package {pkg.pkg_id} to distribution"
            f" point {dp.nal_path}."
        )
        # The job, the DP's "in progress" row and 2357 in one commit.
        await self._report(2357, (pkg.pkg_id, dp.nal_path), pkg.pkg_id, dp.nal_path, op=op)
        crash_point("distmgr.job_created")
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg.pkg_id))

    async def _remove_from_dp(self, pkg: PackageRow, dp: DistributionPointRow) -> None:
        """A remove job for PkgXferMgr, which runs it after the DP's earlier jobs."""
        self.trace(f"DP Thread: Attempting to remove package {pkg.pkg_id} from DP {dp.nal_path}")
        now = self.clock.wall()
        pending = self._status_op(
            pkg.pkg_id, dp, PkgStatusValue.PENDING_REMOVE, pkg.stored_pkg_version
        )

        def op(conn: sqlite3.Connection) -> None:
            if ops.insert_removal_job(
                conn, dp=dp, pkg_id=pkg.pkg_id, version=pkg.stored_pkg_version, now=now
            ):
                pending(conn)

        await self.db.write(op)
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg.pkg_id))

    async def _finish_delete(self, pkg: PackageRow) -> None:
        """Once no DP holds the package any more, its content and rows go."""
        async with self._deleting:  # the last two DPs' STAs can arrive together
            if await self.db.package(pkg.pkg_id) is not None:
                await self._delete_rows(pkg)

    async def _delete_rows(self, pkg: PackageRow) -> None:
        if await self.db.pkg_server_count(pkg.pkg_id):
            return  # the last DP's STA brings us back here
        for content_id in self.library.content_ids(pkg.pkg_id):
            await self.library.remove_content(content_id)

        await self.db.write(partial(ops.delete_package_rows, pkg_id=pkg.pkg_id))
        self.trace(f"Package {pkg.pkg_id} has been deleted from site {self.site}")
        await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(pkg.pkg_id))

    # -- STA: status from PkgXferMgr -----------------------------------------------------

    @handler
    async def status_file(self, msg: StatusFile) -> None:
        await self._process_status_file(Path(msg.path), msg.status, msg.messages)

    async def _process_status_file(
        self,
        path: Path,
        sent: TransferStatus | None = None,
        messages: tuple[StatusMessage, ...] = (),
    ) -> None:
        """One STA file, on the replication processing thread: the status stored, then the
        file deleted (a crash in between processes it again, which changes nothing).
        ``sent``: the file's status as its sender wrote it (else the file is read);
        ``messages``: the sender's, stored first in the same commit."""
        with as_thread(self._replication_thread):
            self.trace(f"~Processing incoming file {path}.")
            sta = sent if sent is not None else await self.inbox.read(path)
            changed = sta is not None and await self._transfer_status(sta, messages)
            await self.inbox.remove(path)
            self.trace(f"~Successfully delete package status file {path}")
        if sta is not None and changed:
            # Last: ``Hierarchy.wait`` may return on this, so every row and message is stored.
            # (At shutdown nobody listens any more: the status is stored all the same.)
            with suppress(BusClosed):
                await self.publish(PACKAGE_CHANGED_TOPIC, PackageChanged(sta.pkg_id))

    async def _transfer_status(
        self, msg: TransferStatus, messages: tuple[StatusMessage, ...] = ()
    ) -> bool:
        """Store one STA's status (after the sender's ``messages``, in one commit); False
        when it changed nothing."""
        self.trace(f"~Processing STA for regular DP {msg.nal_path}")
        self.trace(f"~Processing status update for package {msg.pkg_id}")
        dp = await self.db.distribution_point(msg.nal_path)
        if dp is None:
            return False
        status = PkgStatusValue(msg.status)
        store_status = self._status_op(msg.pkg_id, dp, status, msg.version)
        final = status in (PkgStatusValue.INSTALLED, PkgStatusValue.REMOVED)
        now = product_time(self.clock.wall())
        deleting = False

        def op(conn: sqlite3.Connection) -> None:
            nonlocal deleting
            action = ops.package_action(conn, msg.pkg_id)
            if action is None:
                raise _PackageGone(msg.pkg_id)  # deleted while the job ran: store nothing
            deleting = action == PackageAction.DELETE
            if final and ops.dp_status_is(conn, msg.pkg_id, msg.nal_path, status, msg.version):
                raise _Repeated  # processed before a crash kept its file: nothing to do
            store_status(conn)
            if status == PkgStatusValue.NONE:  # a sending thread started the job
                ops.set_job_state(conn, msg.job_id, JobState.SENDING, now)
            if final:
                # The job ends with its final status: whoever sees the status sees no job
                # (and a crash before this commit leaves the job to send it again).
                ops.delete_job(conn, msg.job_id)
            if status == PkgStatusValue.INSTALLED:
                ops.record_transfer_bytes(
                    conn,
                    pkg_id=msg.pkg_id,
                    nal_path=msg.nal_path,
                    version=msg.version,
                    bytes_full=msg.bytes_full,
                    bytes_delta=msg.bytes_delta,
                )
            if status == PkgStatusValue.INSTALLED:  # a source for pull DPs from now on
                ops.set_content_dp_map(
                    conn, content_id=msg.pkg_id, version=msg.version, server_name=dp.server_name
                )
            if status == PkgStatusValue.REMOVED:
                ops.delete_content_dp_map(conn, content_id=msg.pkg_id, server_name=dp.server_name)
                ops.delete_transfer_bytes(conn, msg.pkg_id, msg.nal_path)
                ops.delete_removed_server(conn, msg.pkg_id, msg.nal_path)

        # The sender's messages, the status row, the job's state, the bytes sent and
        # 2330 / 2332 in one commit.
        message = {PkgStatusValue.INSTALLED: 2330, PkgStatusValue.REMOVED: 2332}.get(status)
        raised: StatusMessage | None = None
        ours: tuple[StatusMessage, ...] = ()
        if message is not None:
            ours = (self._message(message, (msg.pkg_id, msg.nal_path), msg.pkg_id, msg.nal_path),)
        try:
            if messages or ours:
                await self.reporter.raise_messages((*messages, *ours), op=op, log=False)
                raised = ours[0] if ours else None
            else:
                await self.db.write(op)
        except (_PackageGone, _Repeated):
            # Stored before (or moot): the job ends all the same, the sender's messages
            # are stored as they were before the status came with them.
            end = partial(ops.delete_job, job_id=msg.job_id) if final else None
            if messages:
                await self.reporter.raise_messages(messages, op=end, log=False)
            elif end is not None:
                await self.db.write(end)
            return False
        crash_point("distmgr.status_stored")
        self.trace(
            f"~Successfully updated the package server status for {msg.nal_path} for package"
            f" {msg.pkg_id}, Status {int(status)}"
        )
        if raised is not None:
            self.reporter.log(raised)  # after the status line, as the reference's log has it
        if status == PkgStatusValue.REMOVED and deleting:
            pkg = await self.db.package(msg.pkg_id)
            if pkg is not None:
                await self._finish_delete(pkg)
        return True

    @handler
    async def pull_response(self, msg: PullResponseNotification) -> None:
        """A ``.PUL``: a pull DP's state message (see :mod:`actors.site._pullresponse`)."""
        await process_pull_response(self, msg)

    def _status_op(
        self, pkg_id: str, dp: DistributionPointRow, status: PkgStatusValue, version: int
    ) -> Callable[[sqlite3.Connection], int]:
        """The DP's PkgStatus Type 2 row, to write inside another operation's commit."""
        return partial(
            ops.upsert_dp_status,
            pkg_id=pkg_id,
            dp=dp,
            status=status,
            version=version,
            now=product_time(self.clock.wall()),
        )

    # -- helpers -------------------------------------------------------------------------

    async def _report(
        self,
        message_id: int,
        strings: tuple[str, ...],
        pkg_id: str,
        nal_path: str | None = None,
        *,
        op: WriteOp[Any] | None = None,
        log: bool = True,
    ) -> StatusMessage:
        attributes = _attributes(pkg_id, nal_path)
        return await self.reporter.report(message_id, strings, attributes, op=op, log=log)

    def _message(
        self, message_id: int, strings: tuple[str, ...], pkg_id: str, nal_path: str | None
    ) -> StatusMessage:
        """A message about the package (on the DP), built to store with others."""
        return self.reporter.message(message_id, strings, _attributes(pkg_id, nal_path))


class _PackageGone(Exception):
    """Raised inside a write to roll it back: the package no longer exists."""


class _Repeated(Exception):
    """Raised inside a write to roll it back: the DP's row already holds this status."""


def _attributes(pkg_id: str, nal_path: str | None) -> dict[int, str]:
    attributes = {ATTR_PACKAGE_ID: pkg_id}
    if nal_path is not None:
        attributes[ATTR_DP_NAL_PATH] = nal_path
    return attributes


def _start_line(pkg_id: str, server: PkgServerRow, nal_path: str) -> str:
    """The DP thread's first line, in the reference's words for each action."""
    if server.action == ServerAction.REMOVE:
        return f"Start removing package {pkg_id} from server {nal_path}..."
    if server.action == ServerAction.UPDATE:
        return f"Start updating package {pkg_id} on server {nal_path}..."
    return f"Start adding package {pkg_id} to server {nal_path}..."


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line: the message of the one error inside a group."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return (
        text if isinstance(exc, CmdistError | ContentLibError) else f"{type(exc).__name__}: {text}"
    )


def _version(content_id: str) -> int:
    return parse_content_id(content_id)[1]
