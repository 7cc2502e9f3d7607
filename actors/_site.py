"""One site server of a running hierarchy: its database, library, logs and actors."""

from __future__ import annotations

from contextlib import AsyncExitStack, suppress
from pathlib import Path

from actors.config import HierarchyConfig, Site
from actors.distmgr import DistMgr
from actors.dpprovider import DPProvider
from actors.network import NetworkLink
from actors.pkgxfermgr import PkgXferMgr
from actors.provider import SmsProvider
from actors.sitedb import DistributionPointRow, SiteDatabase
from actors.smsdbmon import SmsDbMon
from actors.status import (
    DISTMGR,
    DP_PROVIDER,
    PKGXFERMGR,
    PROVIDER,
    SMSDBMON,
    ComponentLogs,
    StatusReporter,
)
from bus import Bus, BusClosed
from contentlib import ContentLibrary

__all__ = ["SiteServer", "dp_root"]


def dp_root(hierarchy: HierarchyConfig, server: str, is_site_server: bool) -> Path:
    """A DP's folder. A site server's own DP role keeps a library of its own beside the
    site's, so removing a package from that DP never touches the site's copy."""
    root = hierarchy.server_root(server)
    return root / "DP" if is_site_server else root


class SiteServer:
    """The components of one site, started on ``bus`` by :meth:`start`."""

    def __init__(self, hierarchy: HierarchyConfig, site: Site, db: SiteDatabase, bus: Bus) -> None:
        self.hierarchy = hierarchy
        self.site = site
        self.code = site.code
        self.db = db
        self.bus = bus
        self.root = hierarchy.server_root(site.server)
        self.logs = ComponentLogs(self.root / "logs")
        self.library = ContentLibrary(self.root / "SCCMContentLib")
        self.reporter = StatusReporter(
            db,
            self.logs,
            site=site.code,
            system=site.server,
            publish=self._publish,
            now=bus.clock.wall,
        )
        self.provider = SmsProvider(db, hierarchy, site.code, log=self.logs[PROVIDER])
        self.dps: dict[str, DPProvider] = {}
        self._dp_logs: list[ComponentLogs] = []
        self.links: dict[str, NetworkLink] = {}

    @classmethod
    async def open(
        cls, stack: AsyncExitStack, hierarchy: HierarchyConfig, site: Site, bus: Bus
    ) -> SiteServer:
        root = hierarchy.server_root(site.server)
        db = await stack.enter_async_context(
            SiteDatabase.open(root / "site.db", hierarchy=hierarchy)
        )
        server = cls(hierarchy, site, db, bus)
        stack.callback(server.close_logs)
        return server

    async def start(self) -> None:
        """Spawn the site's actors. Files a crash left outside every manifest go first:
        nothing is in flight yet, so nothing received but not yet committed is lost."""
        h, code, bus = self.hierarchy, self.code, self.bus
        await self.library.collect_garbage()
        settings = h.settings
        for dp in h.dps_of(code):
            if dp.pull:
                continue  # pull DPs arrive with their own component
            is_server = dp.name.upper() == self.site.server.upper()
            root = dp_root(h, dp.name, is_server)
            logs = self.logs
            if not is_server:
                logs = ComponentLogs(root / "logs")
                self._dp_logs.append(logs)
            provider = DPProvider(dp.name, root, log=logs[DP_PROVIDER])
            await provider.library.collect_garbage()
            self.dps[dp.name.upper()] = bus.spawn(provider, f"{dp.name}/DPProvider")
            self.links[dp.name] = NetworkLink(
                f"{code}->{dp.name}", bus.clock, h.link(code, dp.name)
            )
        bus.spawn(
            DistMgr(
                site=code,
                hierarchy=h,
                db=self.db,
                library=self.library,
                reporter=self.reporter,
                log=self.logs[DISTMGR],
            ),
            f"{code}/DistMgr",
        )
        bus.spawn(
            PkgXferMgr(
                site=code,
                db=self.db,
                library=self.library,
                reporter=self.reporter,
                settings=settings,
                links=self.links,
                dp_root=self._dp_root,
                log=self.logs[PKGXFERMGR],
            ),
            f"{code}/PkgXferMgr",
        )
        bus.spawn(
            SmsDbMon(
                self.db,
                site=code,
                server_root=self.root,
                poll_interval=settings.smsdbmon_poll_interval,
                log=self.logs[SMSDBMON],
            ),
            f"{code}/SMSDBMON",
        )

    async def _publish(self, topic: str, msg: object) -> None:
        # A status message is stored before it is published: while the bus drains at
        # shutdown, subscribers are going away and the message is kept in the database.
        with suppress(BusClosed):
            await self.bus.publish(topic, msg)

    def close_logs(self) -> None:
        for logs in (self.logs, *self._dp_logs):
            logs.close()

    def _dp_root(self, dp: DistributionPointRow) -> Path:
        return dp_root(self.hierarchy, dp.server_name, dp.is_site_server)

    def held_version(self, dp: DistributionPointRow, pkg_id: str) -> int:
        """The latest version of the package the DP's library holds (0: none)."""
        library = self.dp_library(dp.server_name)
        held = library.content_ids(pkg_id) if library is not None else []
        return int(held[-1].rsplit(".", 1)[1]) if held else 0

    def dp_library(self, name: str) -> ContentLibrary | None:
        provider = self.dps.get(name.upper())
        return provider.library if provider is not None else None
