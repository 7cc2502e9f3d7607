"""The public facade: a running hierarchy of sites and DPs, and the admin operations on it.

async with Hierarchy.open("hierarchy.toml", root=data_dir) as h:
    pkg = await h.create_package("Dummy1", source=src_dir, site="PS1")
    await h.distribute(pkg, ["PS1DP1.CONTOSO.COM"])
    await h.wait(pkg, timeout=60)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec

from actors._content_status import ContentStatus, dp_content_status
from actors._site import SiteServer
from actors.config import HierarchyConfig, check_hierarchy, load_hierarchy
from actors.contentvalidator import ValidateContent
from actors.dpprovider import DPValidation
from actors.errors import (
    HierarchyClosed,
    InvalidArgument,
    NotSupported,
    UnknownDistributionPoint,
    UnknownPackage,
    WaitTimeout,
)
from actors.messages import PACKAGE_CHANGED_TOPIC
from actors.sitedb import PackageAction, SiteDatabaseClosed
from actors.status import STATUS_TOPIC, StatusMessage
from bus import Bus, BusClosed, Clock, RealClock

T = TypeVar("T")

__all__ = ["ContentStatus", "Hierarchy", "Package"]


class Package(msgspec.Struct, frozen=True):
    """A package created through the facade (its ID names its source site: ``PS100026``)."""

    pkg_id: str
    name: str
    site: str


class Hierarchy:
    """A running hierarchy; open it with :meth:`open`."""

    def __init__(self, config: HierarchyConfig, bus: Bus) -> None:
        self.config = config
        self.bus = bus
        self.sites: dict[str, SiteServer] = {}
        self._changed = anyio.Event()
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: str | Path | HierarchyConfig,
        *,
        root: str | Path | None = None,
        clock: Clock | None = None,
        time_scale: float | None = None,
    ) -> AsyncIterator[Hierarchy]:
        """Start every site server, DP and component of the hierarchy; stop them on exit.

        ``root`` overrides the file's data root; ``time_scale`` its setting (ignored when a
        ``clock`` is given)."""
        if isinstance(config, HierarchyConfig):
            cfg = (
                config
                if root is None
                else msgspec.structs.replace(
                    config,
                    settings=msgspec.structs.replace(config.settings, data_root=str(root)),
                )
            )
            # A config built in code gets the checks (and the messages) a file gets.
            cfg = check_hierarchy(cfg)
        else:
            cfg = load_hierarchy(config, root=root)
        if time_scale is not None and (
            not isinstance(time_scale, int | float)
            or not math.isfinite(time_scale)
            or time_scale <= 0
        ):
            raise InvalidArgument(f"time_scale must be a finite number > 0, not {time_scale!r}")
        scale = cfg.settings.time_scale if time_scale is None else time_scale
        bus = Bus(clock=clock or RealClock(time_scale=scale))
        async with AsyncExitStack() as stack:
            sites = [await SiteServer.open(stack, cfg, s, bus) for s in cfg.sites]
            async with bus, anyio.create_task_group() as tg:
                h = cls(cfg, bus)
                for site in sites:
                    h.sites[site.code] = site
                    await site.start()
                await tg.start(h._watch)
                try:
                    yield h
                finally:
                    h._closed = True
                    h._changed.set()  # a wait() in another task ends with HierarchyClosed
                    tg.cancel_scope.cancel()

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
        for name in names:
            dp = self.config.dp(name)
            if dp.pull:
                raise NotSupported(
                    f"{dp.name} is a pull DP: pull distribution points are not supported"
                    " yet (issue #7)"
                )
            if dp.site != server.code:
                raise NotSupported(
                    f"{dp.name} is a DP of site {dp.site}, package {pkg_id} belongs to site"
                    f" {server.code}: distribution across sites is not supported yet (issue #6)"
                )
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
        status = await self.content_status(pkg_id)
        pending = {s.dp: s.state for s in status if s.state != "Removed"}
        pending[server.code] = "deleting the package"
        raise WaitTimeout(pkg_id, timeout, pending)

    async def validate(self, pkg: Package | str, dp: str) -> DPValidation:
        """Content validation on demand: the DP rehashes every file it holds of the package.
        Damaged content makes the DP Failed for the package (2383, naming the files) until a
        redistribute repairs it; sound content raises 2384."""
        server, pkg_id = await self._package(pkg)
        if not isinstance(dp, str):
            raise InvalidArgument(f"a distribution point is named by a string, not {dp!r}")
        target = self.config.dp(dp)
        if target.site != server.code or target.pull:
            raise NotSupported(f"{target.name} is not a standard DP of site {server.code}")
        result: DPValidation = await self._guard(
            self.bus.request(
                f"{server.code}/ContentValidator", ValidateContent(pkg_id, target.name), None
            )
        )
        return result

    # -- status --------------------------------------------------------------------------

    async def content_status(self, pkg: Package | str) -> list[ContentStatus]:
        """One record per DP the package targets (or was removed from), by DP name; a
        Retrying or Failed DP's ``detail`` says why."""
        server, pkg_id = await self._package(pkg)
        return list(await dp_content_status(server.db, pkg_id, server.code, server.held_version))

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
                status, pending = await self._pending(server, pkg_id)
                if not pending:
                    return status
                await changed.wait()
        _, pending = await self._pending(server, pkg_id)
        raise WaitTimeout(pkg_id, timeout, pending)

    async def _pending(
        self, server: SiteServer, pkg_id: str
    ) -> tuple[list[ContentStatus], dict[str, str]]:
        row = await server.db.package(pkg_id)
        if row is None:
            raise UnknownPackage(pkg_id)
        status = await self.content_status(pkg_id)
        pending = {
            s.dp: s.state
            for s in status
            if not s.final or (s.state == "Installed" and s.version != row.stored_pkg_version)
        }
        if row.action != PackageAction.NONE:
            pending[server.code] = "processing the package"  # DistMgr has not yet taken it
        return status, pending

    async def extract(self, pkg: Package | str, dp: str, out_dir: str | Path) -> Path:
        """Rebuild the package folder, as it was in its source, from ``dp``'s library.

        ``out_dir`` must be absent or empty (``TargetNotEmpty``); every file is hashed as it
        is copied (``HashMismatch`` names a damaged one) and nothing partial is left."""
        server, pkg_id = await self._package(pkg)
        self.config.dp(dp)  # UnknownDistributionPoint
        library = server.dp_library(dp)
        held = library.content_ids(pkg_id) if library is not None else []
        if library is None or not held:
            raise UnknownDistributionPoint(f"{dp} (it holds no content of package {pkg_id})")
        out = Path(out_dir)
        await library.extract(held[-1], out)
        return out

    async def status_messages(self, *, buffer: int = 10_000) -> AsyncIterator[StatusMessage]:
        """Every status message raised from now on, in order (a slow reader loses the
        oldest beyond ``buffer``, counted on the subscription)."""
        async with self.bus.subscribe(STATUS_TOPIC, buffer=buffer, policy="drop_oldest") as sub:
            async for msg in sub:
                if isinstance(msg, StatusMessage):
                    yield msg

    # -- helpers -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HierarchyClosed()

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await a call into the hierarchy; if it closes meanwhile, whatever the closing
        database or bus raised becomes one ``HierarchyClosed``."""
        self._check_open()
        try:
            return await call
        except (BusClosed, SiteDatabaseClosed, ValueError) as exc:
            if self._closed or isinstance(exc, BusClosed):
                raise HierarchyClosed(str(exc)) from exc
            raise

    def _site(self, code: str) -> SiteServer:
        self._check_open()
        if not isinstance(code, str):
            raise InvalidArgument(f"a site is named by its code (a string), not {code!r}")
        self.config.site(code)  # UnknownSite
        return self.sites[code]

    async def _package(self, pkg: Package | str) -> tuple[SiteServer, str]:
        self._check_open()
        if isinstance(pkg, Package):
            pkg_id = pkg.pkg_id
        elif isinstance(pkg, str):
            pkg_id = pkg
        else:
            raise InvalidArgument(f"a package is a Package or a package ID string, not {pkg!r}")
        server = self.sites.get(pkg_id[:3])
        if server is None or await self._guard(server.db.package(pkg_id)) is None:
            raise UnknownPackage(pkg_id)
        return server, pkg_id


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
