"""The public facade: a running hierarchy of sites and DPs, and the admin operations on it.

    async with Hierarchy.open(root=data_dir) as h:        # the default hierarchy
        pkg = await h.create_package("Dummy1", source=src_dir, site="PS1")
        await h.distribute(pkg, ["PS1DP1.CONTOSO.COM"])
        results = await h.wait(pkg, timeout=60)

    h = await Hierarchy.start(root=data_dir)               # a service's startup hook ...
    await h.aclose()                                       # ... and its shutdown hook

The hierarchy runs in a task of its own: start and close may come from different tasks,
and exceptions raised in the caller's code come out as raised. It runs on asyncio (uvloop
included) and refuses any other backend.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import msgspec

from actors import addresses
from actors._runtime._content_status import ContentStatus, dp_content_status
from actors._runtime._rootlock import RootLock
from actors._runtime._runner import Runner, unwrap
from actors._runtime._site import SiteServer
from actors._runtime._subscription import Subscription, replay_order
from actors.config import HierarchyConfig, check_hierarchy, default_hierarchy, load_hierarchy
from actors.dp import DPValidation
from actors.errors import (
    HierarchyClosed,
    InvalidArgument,
    NotSupported,
    UnknownDistributionPoint,
    UnknownPackage,
    WaitTimeout,
)
from actors.site import ValidateContent
from actors.site.messages import PACKAGE_CHANGED_TOPIC, TRANSFER_PROGRESS_TOPIC, CancelTransfer
from actors.sitedb import PackageAction, PackageRow, ServerAction, SiteDatabaseClosed
from actors.status import STATUS_TOPIC, StatusMessage, stored_messages
from bus import Bus, BusClosed, Clock, RealClock

T = TypeVar("T")

__all__ = ["DPInfo", "Hierarchy", "Package", "SiteInfo"]


class Package(msgspec.Struct, frozen=True):
    """A package (its ID names its source site: ``PS100026``); ``version`` is the version
    the site stores (0 until DistMgr has snapshotted it) when the record was read."""

    pkg_id: str
    name: str
    site: str
    source: str = ""
    version: int = 0


class SiteInfo(msgspec.Struct, frozen=True):
    code: str
    type: Literal["cas", "primary", "secondary"]
    server: str
    parent: str | None
    name: str


class DPInfo(msgspec.Struct, frozen=True):
    name: str  # the DP's server name, PS1DP1.CONTOSO.COM
    site: str
    nal_path: str
    pull: bool
    sources: tuple[str, ...]  # a pull DP's source DPs, best rank first


class Hierarchy:
    """A running hierarchy: :meth:`open` it as a context manager, or :meth:`start` it and
    :meth:`aclose` it (from any task)."""

    def __init__(self, config: HierarchyConfig, bus: Bus) -> None:
        self.config = config
        self.bus = bus
        self.servers: dict[str, SiteServer] = {}
        """The running site servers by site code: their databases, libraries and links,
        for tests and probes (the public inventory is :meth:`sites`)."""
        self._changed = anyio.Event()
        self._closed = False
        self._runner: Runner | None = None
        self._lock: RootLock | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: str | Path | HierarchyConfig | None = None,
        *,
        root: str | Path | None = None,
        clock: Clock | None = None,
        time_scale: float | None = None,
        shutdown_timeout: float = 10.0,
    ) -> AsyncIterator[Hierarchy]:
        """:meth:`start`, then :meth:`aclose` on exit. An exception from the body comes out
        as raised, and the hierarchy stops at once without finishing its work (as a kill
        would: what was committed resumes at the next open); a normal exit lets work in
        flight finish for up to ``shutdown_timeout`` seconds."""
        h = await cls.start(
            config, root=root, clock=clock, time_scale=time_scale, shutdown_timeout=shutdown_timeout
        )
        try:
            yield h
        except BaseException:
            with anyio.CancelScope(shield=True):
                await h._stop(drain=False)
            raise
        await h.aclose()

    @classmethod
    async def start(
        cls,
        config: str | Path | HierarchyConfig | None = None,
        *,
        root: str | Path | None = None,
        clock: Clock | None = None,
        time_scale: float | None = None,
        shutdown_timeout: float = 10.0,
    ) -> Hierarchy:
        """Start every site server, DP and component of the hierarchy.

        ``config``: a hierarchy file, a :class:`HierarchyConfig` (checked as a file is), or
        None for the default hierarchy. ``root`` overrides the data root (one is required:
        nothing is written to the current directory by default); ``time_scale`` the file's
        setting (ignored when a ``clock`` is given). ``DataRootLocked`` when another
        hierarchy has the root open. Stop it with :meth:`aclose`, from any task."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise NotSupported(
                "cmdist runs on asyncio (uvloop included); this task runs on another event"
                " loop (trio?)"
            ) from None
        cfg = _config(config, root)
        scale = cfg.settings.time_scale if time_scale is None else _time_scale(time_scale)
        limit = _seconds(shutdown_timeout)
        bus = Bus(
            clock=clock or RealClock(time_scale=scale),
            drain_timeout=limit if limit is not None else 1e9,
        )
        h = cls(cfg, bus)
        lock = RootLock(cfg.require_data_root())
        lock.acquire()
        h._lock = lock
        try:
            h._runner = Runner(cfg, bus, h._attach, h._watch)
            h._runner.task.add_done_callback(lambda _: h._changed.set())  # waiters see it end
            await h._runner.ready()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await h._stop(drain=False)
            error = unwrap(exc)
            if error is exc:
                raise
            raise error from None
        return h

    async def aclose(self) -> None:
        """Stop the hierarchy: work in flight gets ``shutdown_timeout`` seconds to finish,
        then it is cancelled (its jobs resume at the next open). Idempotent; callable from
        any task. Raises ``HierarchyFailed`` if the hierarchy had stopped on a failure."""
        with anyio.CancelScope(shield=True):
            await self._stop(drain=True)
        runner = self._runner
        if runner is not None and runner.failure is not None:
            failure, runner.failure = runner.failure, None
            raise failure

    async def _stop(self, *, drain: bool) -> None:
        self._closed = True
        self._changed.set()  # a wait() in another task ends with HierarchyClosed
        runner = self._runner
        try:
            if runner is not None:
                runner.stop(drain=drain)
                await runner.task
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _attach(self, sites: list[SiteServer]) -> None:
        self.servers = {site.code: site for site in sites}

    async def _watch(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self.bus.subscribe(PACKAGE_CHANGED_TOPIC, buffer=10_000) as sub:
            task_status.started()
            async for _ in sub:
                self._changed.set()
                self._changed = anyio.Event()

    # -- admin operations (the SMS Provider of the package's site) -----------------------
    #
    # Each runs to its end once called, even if the caller is cancelled meanwhile (the
    # provider's write is shielded): it either has not started or it is done, and its
    # result is returned to a caller that is being cancelled, as anyio returns it from a
    # shielded scope. Cancelling never leaves half an operation, nor one the caller cannot
    # see (a package created whose ID the caller never got).

    async def create_package(self, name: str, source: str | Path, *, site: str) -> Package:
        """Create a package from a source folder at a primary site or the CAS; DistMgr then
        snapshots it into the site's content library. Completes whole once called."""
        server = self._site(site)
        if server.site.type == "secondary":
            raise NotSupported(
                f"{site} is a secondary site: it has no SMS Provider; create packages at a"
                " primary site or the CAS"
            )
        with anyio.CancelScope(shield=True):
            pkg_id = await self._guard(server.provider.create_package(name, source))
        return Package(pkg_id, name, server.code)

    async def distribute(self, pkg: Package | str, dps: Sequence[str]) -> None:
        """AddDistributionPoints: send the package to these DPs. Completes whole once called."""
        server, pkg_id = await self._package(pkg)
        names = _names(dps)
        with anyio.CancelScope(shield=True):
            await self._guard(server.provider.add_distribution_points(pkg_id, names))

    async def update(self, pkg: Package | str) -> None:
        """RefreshPkgSource: snapshot the source again as a new version, send the changes.
        Completes whole once called."""
        server, pkg_id = await self._package(pkg)
        with anyio.CancelScope(shield=True):
            await self._guard(server.provider.refresh_pkg_source(pkg_id))

    async def redistribute(self, pkg: Package | str, dp: str) -> None:
        """Send every file of the package to ``dp`` again, overwriting (and so repairing)
        what it holds. Completes whole once called."""
        server, pkg_id = await self._package(pkg)
        if not isinstance(dp, str):
            raise InvalidArgument(f"a distribution point is named by a string, not {dp!r}")
        with anyio.CancelScope(shield=True):
            await self._guard(server.provider.redistribute(pkg_id, dp))

    async def remove(self, pkg: Package | str, dps: Sequence[str]) -> None:
        """Remove the package from these DPs (shared files stay while referenced).
        Completes whole once called."""
        server, pkg_id = await self._package(pkg)
        names = _names(dps)
        with anyio.CancelScope(shield=True):
            await self._guard(server.provider.remove_distribution_points(pkg_id, names))

    async def delete(self, pkg: Package | str, *, timeout: float = 60.0) -> None:
        """Delete the package: it leaves every DP and the site; returns when it is gone.
        The request completes whole once called; a cancelled or timed out wait leaves the
        deletion going (``WaitTimeout`` names what is left)."""
        server, pkg_id = await self._package(pkg)
        with anyio.CancelScope(shield=True):
            await self._guard(server.provider.delete_package(pkg_id))
        with anyio.move_on_after(_seconds(timeout)):
            while True:
                changed = self._changed
                self._check_open()
                if await server.db.package(pkg_id) is None:
                    return
                await changed.wait()
        status = list(await dp_content_status(server.db, pkg_id, server.code, server.held_version))
        pending: dict[str, str] = {s.dp: s.state for s in status if s.state != "Removed"}
        pending[server.code] = "deleting the package"
        raise WaitTimeout(pkg_id, timeout, pending)

    async def validate(self, pkg: Package | str, dp: str) -> DPValidation:
        """Content validation on demand: the DP rehashes every file it holds of the package.
        Damaged content makes the DP Failed for the package (2383, naming the files) until a
        redistribute repairs it; sound content raises 2384. Asked of the DP's own site,
        whose ContentValidator watches its DPs (a package of the CAS on a DP of PS1 is
        validated by PS1). A pull DP checks every file as it downloads it and holds no
        validation of its own here: ``NotSupported``."""
        _, pkg_id = await self._package(pkg)
        if not isinstance(dp, str):
            raise InvalidArgument(f"a distribution point is named by a string, not {dp!r}")
        target = self.config.dp(dp)
        if target.pull:
            raise NotSupported(
                f"{target.name} is a pull DP: content validation is for standard DPs"
            )
        result: DPValidation = await self._guard(
            self.bus.request(
                addresses.content_validator(target.site), ValidateContent(pkg_id, target.name), None
            )
        )
        return result

    # -- status --------------------------------------------------------------------------

    async def content_status(self, pkg: Package | str) -> list[ContentStatus]:
        """One record per DP the package targets (or was removed from), by DP name; a
        Retrying or Failed DP's ``detail`` says why."""
        _, pkg_id = await self._package(pkg)
        return await self._every_dp(pkg_id)

    async def _every_dp(self, pkg_id: str) -> list[ContentStatus]:
        """Each site's own DPs, as its database and libraries say (the package's row is
        at every site DRS has reached)."""
        out: list[ContentStatus] = []
        for site in self.servers.values():
            out += await dp_content_status(site.db, pkg_id, site.code, site.held_version)
        return sorted(out, key=lambda d: d.dp)

    async def wait(self, pkg: Package | str, timeout: float = 60.0) -> list[ContentStatus]:
        """Until every targeted DP is final for the package's current version: Installed
        (holding that version), Failed or Removed. ``WaitTimeout`` names the others."""
        server, pkg_id = await self._package(pkg)
        limit = _seconds(timeout)
        status, pending = await self._pending(server, pkg_id)  # final already: no waiting
        if not pending:
            return status
        with anyio.move_on_after(limit):
            while True:
                changed = self._changed
                self._check_open()
                status, pending = await self._pending(server, pkg_id, first=True)
                if not pending:  # (so every site was read: the status is whole)
                    return status
                await changed.wait()
        _, pending = await self._pending(server, pkg_id)
        raise WaitTimeout(pkg_id, timeout, pending)

    async def _pending(
        self, server: SiteServer, pkg_id: str, *, first: bool = False
    ) -> tuple[list[ContentStatus], dict[str, str]]:
        """The package's status on every DP and what is not final yet. ``first``: stop at
        the first site with something pending (the status is then partial; with nothing
        pending it is whole): a wait woken while the package is on its way reads one site,
        not all of them."""
        row = await server.db.package(pkg_id)
        if row is None:
            raise UnknownPackage(pkg_id)
        pending: dict[str, str] = {}
        if row.action != PackageAction.NONE:
            pending[server.code] = "processing the package"  # DistMgr has not yet taken it
        targets = await server.db.pkg_servers(pkg_id)
        names = {d.nal_path: d.name for d in self.config.dps}
        status: list[ContentStatus] = []
        # the package's own site first: its DPs are the likeliest to be on their way
        for site in sorted(self.servers.values(), key=lambda s: s is not server):
            if first and pending:
                break
            here = await dp_content_status(site.db, pkg_id, site.code, site.held_version)
            status += here
            pending.update(
                (s.dp, s.state)
                for s in here
                if not s.final or (s.state == "Installed" and s.version != row.stored_pkg_version)
            )
            # A DP of another site counts once its own site has the request (DRS brings it):
            # an add until the DP's site has its row, a removal until the DP is Removed, a
            # redistribute until the DP's site has done it and its reset has come back here.
            states = {s.nal_path: s.state for s in here}
            for target in targets:
                if target.site_code != site.code:
                    continue
                state = states.get(target.nal_path)
                removing = target.action == ServerAction.REMOVE
                elsewhere = target.site_code != server.code
                if (
                    (state is None and not removing)
                    or (removing and state not in (None, "Removed"))
                    or (elsewhere and target.refresh_trigger)
                ):
                    name = names.get(target.nal_path, target.nal_path)
                    pending.setdefault(
                        name, f"waiting for site {target.site_code} to receive the request"
                    )
        return sorted(status, key=lambda d: d.dp), pending

    async def extract(self, pkg: Package | str, dp: str, out_dir: str | Path) -> Path:
        """Rebuild the package folder, as it was in its source, from ``dp``'s library.

        ``out_dir`` must be absent or empty (``TargetNotEmpty``); every file is hashed as it
        is copied (``HashMismatch`` names a damaged one) and nothing partial is left."""
        _, pkg_id = await self._package(pkg)
        server = self.servers[self.config.dp(dp).site]  # (UnknownDistributionPoint)
        library = server.dp_library(dp)
        held = library.content_ids(pkg_id) if library is not None else []
        if library is None or not held:
            raise UnknownDistributionPoint(f"{dp} (it holds no content of package {pkg_id})")
        out = Path(out_dir)
        await library.extract(held[-1], out)
        return out

    # -- events ----------------------------------------------------------------------

    def subscribe(
        self,
        *,
        buffer: int = 1000,
        policy: Literal["block", "drop_oldest"] = "block",
        since: int | Mapping[str, int] | None = None,
    ) -> AbstractAsyncContextManager[Subscription]:
        """Events from now on: every :class:`StatusMessage` and :class:`TransferProgress`,
        in the order they happen, through a buffer of ``buffer`` events. ``"block"``: a
        slow reader slows the components; ``"drop_oldest"``: it loses the oldest, counted
        in ``sub.dropped``.

        ``since``: first replay the status messages stored after that ``record_id`` (one
        number for every site, or a mapping site code -> record id; 0 replays everything),
        then go live with no gap and no duplicate."""
        self._check_open()
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise InvalidArgument(f"a subscription buffer is an int >= 1, not {buffer!r}")
        if policy not in ("block", "drop_oldest"):
            raise InvalidArgument(f"policy is 'block' or 'drop_oldest', not {policy!r}")
        return self._subscription(buffer, policy, since)

    @asynccontextmanager
    async def _subscription(
        self,
        buffer: int,
        policy: Literal["block", "drop_oldest"],
        since: int | Mapping[str, int] | None,
    ) -> AsyncIterator[Subscription]:
        topics = (STATUS_TOPIC, TRANSFER_PROGRESS_TOPIC)
        # Live first, then the stored messages: nothing raised in between is missed, and
        # what both give is dropped by its record id.
        async with self.bus.subscribe(topics, buffer=buffer, policy=policy) as live:
            replay: list[StatusMessage] = []
            if since is not None:
                stored = {
                    code: await stored_messages(site.db, since_record=_since(since, code))
                    for code, site in self.servers.items()
                }
                replay = replay_order(stored)
            yield Subscription(live, replay)

    async def status_messages(self, *, buffer: int = 10_000) -> AsyncGenerator[StatusMessage]:
        """Every status message raised from now on, in order; a slow reader loses the
        oldest beyond ``buffer`` (see :meth:`subscribe` for the counts and a replay)."""
        async with self.subscribe(buffer=buffer, policy="drop_oldest") as sub:
            async for event in sub:
                if isinstance(event, StatusMessage):
                    yield event

    # -- control -----------------------------------------------------------------------

    async def cancel(self, pkg: Package | str, dp: str) -> bool:
        """Stop the package's transfer to ``dp`` (within one chunk) and its pending jobs
        there: the DP keeps what it had before the job. True if there was one to stop.
        Asked of the DP's own site, where its jobs run (a package of the CAS on a DP of
        P01 is sent by P01)."""
        _, pkg_id = await self._package(pkg)
        if not isinstance(dp, str):
            raise InvalidArgument(f"a distribution point is named by a string, not {dp!r}")
        target = self.config.dp(dp)
        cancelled: bool = await self._guard(
            self.bus.request(
                addresses.pkgxfermgr(target.site), CancelTransfer(pkg_id, target.name), None
            )
        )
        return cancelled

    # -- inventory ---------------------------------------------------------------------

    async def packages(self, site: str | None = None) -> list[Package]:
        """Every package of the hierarchy (or of one site), by ID."""
        servers = [self._site(site)] if site is not None else list(self.servers.values())
        out: list[Package] = []
        for server in servers:
            rows = await self._guard(server.db.packages())
            out.extend(_package_record(row) for row in rows if row.source_site == server.code)
        return sorted(out, key=lambda p: p.pkg_id)

    async def package(self, pkg: Package | str) -> Package:
        """One package as its site stores it now (``UnknownPackage`` if there is none)."""
        server, pkg_id = await self._package(pkg)
        row = await self._guard(server.db.package(pkg_id))
        if row is None:
            raise UnknownPackage(pkg_id)
        return _package_record(row)

    async def sites(self) -> list[SiteInfo]:
        """The sites of the hierarchy, as its file describes them."""
        self._check_open()
        return [
            SiteInfo(code=s.code, type=s.type, server=s.server, parent=s.parent, name=s.name)
            for s in self.config.sites
        ]

    async def dps(self, site: str | None = None) -> list[DPInfo]:
        """The distribution points of the hierarchy (or of one site)."""
        self._check_open()
        if site is not None:
            self._site(site)
        return [
            DPInfo(name=d.name, site=d.site, nal_path=d.nal_path, pull=d.pull, sources=d.sources)
            for d in self.config.dps
            if site is None or d.site == site
        ]

    # -- helpers -------------------------------------------------------------------------

    def _check_open(self) -> None:
        runner = self._runner
        if runner is not None and runner.failure is not None:
            raise runner.failure
        if self._closed or runner is None or runner.task.done():
            raise HierarchyClosed()

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await a call into the hierarchy; if it stops meanwhile, whatever its closing
        database or bus raised becomes one ``HierarchyClosed`` (or ``HierarchyFailed``)."""
        try:
            self._check_open()
        except BaseException:
            if isinstance(call, Coroutine):
                call.close()  # never started: no "was never awaited" warning for the caller
            raise
        try:
            return await call
        except (BusClosed, SiteDatabaseClosed) as exc:
            if self._closed or not self.bus.running:
                runner = self._runner
                if runner is not None and not self._closed:
                    # Stopping on its own: a failure is known once the runner has ended.
                    with anyio.CancelScope(shield=True):
                        await asyncio.wait([runner.task])
                self._check_open()
                raise HierarchyClosed(str(exc)) from exc
            raise

    def _site(self, code: str) -> SiteServer:
        self._check_open()
        if not isinstance(code, str):
            raise InvalidArgument(f"a site is named by its code (a string), not {code!r}")
        self.config.site(code)  # UnknownSite
        return self.servers[code]

    async def _package(self, pkg: Package | str) -> tuple[SiteServer, str]:
        self._check_open()
        if isinstance(pkg, Package):
            pkg_id = pkg.pkg_id
        elif isinstance(pkg, str):
            pkg_id = pkg
        else:
            raise InvalidArgument(f"a package is a Package or a package ID string, not {pkg!r}")
        server = self.servers.get(addresses.package_site(pkg_id))
        if server is None or await self._guard(server.db.package(pkg_id)) is None:
            raise UnknownPackage(pkg_id)
        return server, pkg_id


def _config(
    config: str | Path | HierarchyConfig | None, root: str | Path | None
) -> HierarchyConfig:
    """The hierarchy to run: a file, the packaged default, or one built in code (checked
    as a file is, so its errors read the same), with ``root`` as its data root."""
    if isinstance(config, HierarchyConfig):
        if root is not None:
            settings = msgspec.structs.replace(config.settings, data_root=str(root))
            config = msgspec.structs.replace(config, settings=settings)
        return check_hierarchy(config)
    if config is None:
        return default_hierarchy(root=root)
    if not isinstance(config, str | Path):
        raise InvalidArgument(f"a hierarchy is a file path or a HierarchyConfig, not {config!r}")
    return load_hierarchy(config, root=root)


def _time_scale(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"time_scale must be a finite number > 0, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"time_scale must be a finite number > 0, not {value!r}")
    return float(value)


def _since(since: int | Mapping[str, int], site: str) -> int:
    value = since if isinstance(since, int) else since.get(site, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"since is a record id >= 0 (or one per site), not {value!r}")
    return value


def _package_record(row: PackageRow) -> Package:
    return Package(row.pkg_id, row.name, row.source_site, row.source, row.stored_pkg_version)


def _names(dps: Sequence[str] | str) -> list[str]:
    """DP names as a list (one name may be given alone)."""
    if isinstance(dps, str):
        return [dps]
    if not isinstance(dps, Sequence):
        raise InvalidArgument(f"give a list of distribution point names, not {dps!r}")
    for name in dps:
        if not isinstance(name, str):
            raise InvalidArgument(f"a distribution point is named by a string, not {name!r}")
    return list(dps)


def _seconds(timeout: float) -> float | None:
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
        raise InvalidArgument(f"a timeout is a number of seconds >= 0, not {timeout!r}")
    return timeout if math.isfinite(timeout) else None
