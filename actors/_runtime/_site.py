"""One site server of a running hierarchy: its database, library, logs and actors."""

from __future__ import annotations

from contextlib import AsyncExitStack, suppress
from pathlib import Path

import anyio

from actors import addresses
from actors.config import DistributionPoint, HierarchyConfig, Site
from actors.dp import ContentServer, DPProvider, content_library, dp_root
from actors.drs import Drs
from actors.errors import SiteDatabaseLost
from actors.network import NetworkLink
from actors.pulldp import PullDPAgent
from actors.site import (
    ContentValidator,
    Despooler,
    DistMgr,
    MpRelay,
    PkgXferMgr,
    Scheduler,
    Sender,
    ShareWatch,
    SiteKey,
    SmsDbMon,
    SmsProvider,
    StateSystem,
    StatusInbox,
)
from actors.site.messages import TRANSFER_PROGRESS_TOPIC, TransferProgress
from actors.sitedb import DistributionPointRow, SiteDatabase, ops
from actors.status import (
    DATA_TRANSFER_SERVICE,
    DESPOOLER,
    DISTMGR,
    DP_PROVIDER,
    MP_RELAY,
    PKGXFERMGR,
    PROVIDER,
    PULLDP,
    REPLICATION,
    SCHEDULER,
    SENDER,
    SMSDBMON,
    STATE_SYSTEM,
    ComponentLogs,
    StatusReporter,
)
from bus import Bus, BusClosed
from contentlib import ContentLibrary, parse_content_id

__all__ = ["SiteServer"]


class _Libraries:
    """The content libraries of a site: its own and those of its DPs, opened before
    its database so that a lost database can be told from a new site."""

    def __init__(self, site: ContentLibrary, dps: dict[str, ContentLibrary]) -> None:
        self.site = site
        self.dps = dps

    @classmethod
    async def open(cls, hierarchy: HierarchyConfig, site: Site) -> _Libraries:
        """Each library is opened in a worker thread (its manifests read and checked, or
        taken from the index of its last clean close), two at a time: this machine's
        cores; more would only make the event loop wait longer for the GIL."""
        roots = {
            dp.name.upper(): content_library(
                dp_root(hierarchy, dp.name, dp.name.upper() == site.server.upper())
            )
            for dp in hierarchy.dps_of(site.code)
        }
        own_root = content_library(hierarchy.server_root(site.server))
        opened: dict[str, ContentLibrary] = {}
        limiter = anyio.CapacityLimiter(_PARALLEL_OPENS)

        async def open_one(key: str, root: Path) -> None:
            async with limiter:
                opened[key] = await ContentLibrary.open(root)

        async with anyio.create_task_group() as tg:
            tg.start_soon(open_one, "", own_root)
            for name, root in roots.items():
                tg.start_soon(open_one, name, root)
        return cls(opened[""], {name: opened[name] for name in roots})

    async def aclose(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Close every library (each writes its open index), two at a time, when the site
        stopped cleanly; after a failure or an abort (as a kill would) they are left as
        they are, and the next open checks everything."""
        if exc_type is not None:
            return
        limiter = anyio.CapacityLimiter(_PARALLEL_OPENS)

        async def close_one(lib: ContentLibrary) -> None:
            async with limiter:
                # The index only saves the next open its reads: without it (a full disk),
                # that open checks every manifest, as after a crash.
                with suppress(OSError):
                    await lib.aclose()

        async with anyio.create_task_group() as tg:
            for lib in (self.site, *self.dps.values()):
                tg.start_soon(close_one, lib)

    def package_ids(self) -> set[str]:
        """Every package any of the libraries holds content of."""
        return {p for lib in (self.site, *self.dps.values()) for p in lib.package_ids()}

    def highest_package_number(self, site_code: str) -> int:
        """The highest number of a ``<site_code>NNNNN`` package the libraries hold (0: none)."""
        numbers = [
            int(pkg_id[len(site_code) :], 16)
            for pkg_id in self.package_ids()
            if pkg_id.startswith(site_code) and _is_hex(pkg_id[len(site_code) :])
        ]
        return max(numbers, default=0)


_PARALLEL_OPENS = 2


def _is_hex(text: str) -> bool:
    return len(text) == 5 and all(c in "0123456789ABCDEFabcdef" for c in text)


class SiteServer:
    """The components of one site, started on ``bus`` by :meth:`start`."""

    def __init__(
        self,
        hierarchy: HierarchyConfig,
        site: Site,
        db: SiteDatabase,
        bus: Bus,
        libraries: _Libraries,
        content: ContentServer,
        id_floor: int,
        shares: ShareWatch,
    ) -> None:
        self.content = content
        self.shares = shares
        self.hierarchy = hierarchy
        self.site = site
        self.code = site.code
        self.db = db
        self.bus = bus
        self.root = hierarchy.server_root(site.server)
        self.logs = ComponentLogs(self.root / "logs")
        self.library = libraries.site
        self.inbox = StatusInbox(self.root)
        self.reporter = StatusReporter(
            db,
            self.logs,
            site=site.code,
            system=site.server,
            publish=self._publish,
            now=bus.clock.wall,
        )
        self.provider = SmsProvider(
            db, hierarchy, site.code, log=self.logs[PROVIDER], now=bus.clock.wall
        )
        self.provider.id_floor = id_floor
        self._dp_libraries = libraries.dps
        self.dps: dict[str, DPProvider] = {}
        self.pull_dps: dict[str, PullDPAgent] = {}
        self._dp_logs: list[ComponentLogs] = []
        self.links: dict[str, NetworkLink] = {}
        self.site_links: dict[str, NetworkLink] = {}
        self.sender: Sender | None = None  # (for probes: its counters)
        self.scheduler: Scheduler | None = None
        self.key = SiteKey.load_or_create(self.root / "keys" / "site.key")

    @classmethod
    async def open(
        cls,
        stack: AsyncExitStack,
        hierarchy: HierarchyConfig,
        site: Site,
        bus: Bus,
        content: ContentServer,
        shares: ShareWatch,
    ) -> SiteServer:
        root = hierarchy.server_root(site.server)
        libraries = await _Libraries.open(hierarchy, site)
        stack.push_async_exit(libraries.aclose)
        path = root / "site.db"
        # Off the event loop: a site's libraries can hold hundreds of thousands of ids.
        held = await anyio.to_thread.run_sync(libraries.package_ids)
        if held and (not path.exists() or path.stat().st_size == 0):
            # Opening it as a new site would hand out again the IDs whose content is there.
            raise SiteDatabaseLost(
                str(path),
                f"{'missing' if not path.exists() else 'empty'}, but the content libraries of"
                f" site {site.code} hold {len(held)} package(s) ({', '.join(sorted(held)[:5])}"
                f"{', ...' if len(held) > 5 else ''}); restore the database from a backup"
                " instead of starting the site as a new one",
            )
        db = await stack.enter_async_context(
            SiteDatabase.open(path, hierarchy=hierarchy, clock=bus.clock.wall)
        )
        floor = await anyio.to_thread.run_sync(libraries.highest_package_number, site.code)
        server = cls(hierarchy, site, db, bus, libraries, content, floor, shares)
        stack.callback(server.close_logs)
        return server

    async def start(self) -> None:
        """Spawn the site's actors: its DPs' first, then the site server's components.
        Files a crash left outside every manifest go first: nothing is in flight yet, so
        nothing received but not yet committed is lost."""
        await self.library.collect_garbage(if_needed=True)
        # Our public key, for the other sites' despoolers (DRS carries it to them).
        code, public = self.code, self.key.public_hex
        await self.db.write(lambda conn: ops.save_site_key(conn, code, public))
        for dp in self.hierarchy.dps_of(self.code):
            if not dp.pull:
                await self._start_dp(dp.name)
        self._start_components()
        for dp in self.hierarchy.dps_of(self.code):
            if dp.pull:  # last: a job it resumes reports to the State System
                await self._start_pull_dp(dp)

    async def _start_pull_dp(self, dp: DistributionPoint) -> None:
        """A pull DP: its PullDP component on its own library and logs; the links from
        its sources on the way of its downloads."""
        h, bus = self.hierarchy, self.bus
        root = dp_root(h, dp.name, False)
        logs = ComponentLogs(root / "logs")
        self._dp_logs.append(logs)
        library = self._dp_libraries[dp.name.upper()]
        await library.collect_garbage(if_needed=True)
        links = {
            src: NetworkLink(f"{src}->{dp.name}", bus.clock, h.link(src, dp.name))
            for src in dp.sources
        }
        name = dp.name

        async def progress(pkg_id: str, version: int, done: int, total: int) -> None:
            event = TransferProgress(pkg_id, version, name, done, total, False)
            with suppress(BusClosed):
                await bus.publish(TRANSFER_PROGRESS_TOPIC, event)

        agent = PullDPAgent(
            name=dp.name,
            nal_path=dp.nal_path,
            root=root,
            library=library,
            links=links,
            clock=bus.clock,
            mp_url=self.content.mp_url(self.site.server),
            locate=self.content.locate,
            max_active_jobs=dp.max_active_jobs or h.settings.pulldp_max_active_jobs,
            retry_delay=h.settings.pulldp_retry_delay,
            log=logs[PULLDP],
            dts_log=logs[DATA_TRANSFER_SERVICE],
            provider_log=logs[DP_PROVIDER],
            progress=progress,
        )
        self.pull_dps[dp.name.upper()] = bus.spawn(agent, addresses.pulldp(dp.name))
        self.content.serve(dp.name, library)  # a pull DP can be another's source

    async def _start_dp(self, name: str) -> None:
        """A standard DP: its provider (on its own library and logs) and the site's link."""
        h, code, bus = self.hierarchy, self.code, self.bus
        is_server = name.upper() == self.site.server.upper()
        root = dp_root(h, name, is_server)
        logs = self.logs
        if not is_server:
            logs = ComponentLogs(root / "logs")
            self._dp_logs.append(logs)
        provider = DPProvider(name, root, self._dp_libraries[name.upper()], log=logs[DP_PROVIDER])
        await provider.library.collect_garbage(if_needed=True)
        self.dps[name.upper()] = bus.spawn(provider, addresses.dp_provider(name))
        self.content.serve(name, provider.library)  # its SMS_DP_SMSPKG$ / SMS_DP_SMSSIG$
        self.links[name] = NetworkLink(f"{code}->{name}", bus.clock, h.link(code, name))

    def _start_components(self) -> None:
        """DistMgr, PkgXferMgr, content validation, DRS and SMSDBMON (last: it delivers
        what the others take)."""
        h, code, bus = self.hierarchy, self.code, self.bus
        settings = h.settings
        parent = self.site.parent
        neighbours = (*((parent,) if parent else ()), *(c.code for c in h.children(code)))
        sites = {s.code for s in h.sites}

        def toward(target: str) -> str | None:
            """The neighbour on the way to ``target`` (None: this site or no site)."""
            return h.tree_path(code, target)[1] if target in sites and target != code else None

        bus.spawn(
            Drs(
                site=code,
                db=self.db,
                neighbours=neighbours,
                parent=parent,
                toward=toward,
                delay=settings.replication_delay,
                retry_interval=settings.smsdbmon_poll_interval,
                log=self.logs[REPLICATION],
            ),
            addresses.drs(code),
        )
        bus.spawn(
            DistMgr(
                site=code,
                hierarchy=h,
                db=self.db,
                library=self.library,
                reporter=self.reporter,
                inbox=self.inbox,
                log=self.logs[DISTMGR],
            ),
            addresses.distmgr(code),
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
                inbox=self.inbox,
                log=self.logs[PKGXFERMGR],
                content_url=self.content.content_url,
            ),
            addresses.pkgxfermgr(code),
        )
        bus.spawn(
            ContentValidator(
                site=code,
                db=self.db,
                reporter=self.reporter,
                dps=[dp.name for dp in h.dps_of(code) if not dp.pull],
                interval=settings.content_validation_interval,
            ),
            addresses.content_validator(code),
        )
        self.sender = Sender(
            site=code,
            settings=settings,
            links=self.site_link,
            server_root=self._site_root,
            watch=self.shares,
            log=self.logs[SENDER],
        )
        bus.spawn(self.sender, addresses.sender(code))
        self.scheduler = Scheduler(
            site=code,
            db=self.db,
            key=self.key,
            server_root=self.root,
            requests=self.sender.requests,
            poll_interval=settings.scheduler_poll_interval,
            log=self.logs[SCHEDULER],
        )
        bus.spawn(self.scheduler, addresses.scheduler(code))
        bus.spawn(
            Despooler(
                site=code,
                server=self.site.server,
                db=self.db,
                library=self.library,
                reporter=self.reporter,
                server_root=self.root,
                threads=settings.despooling_threads,
                poll_interval=settings.despooler_poll_interval,
                retry_delay=settings.despooler_retry_delay,
                next_hop=lambda final: h.tree_path(code, final)[1],
                watch=self.shares,
                log=self.logs[DESPOOLER],
            ),
            addresses.despooler(code),
        )
        bus.spawn(
            StateSystem(self.db, self.root, self.logs[STATE_SYSTEM]),
            addresses.statesys(code),
        )
        relay = MpRelay(code, self.root, bus, bus.clock, self.logs[MP_RELAY])
        self.content.endpoint(self.site.server, relay.receive)
        bus.spawn(
            SmsDbMon(
                self.db,
                site=code,
                server_root=self.root,
                poll_interval=settings.smsdbmon_poll_interval,
                log=self.logs[SMSDBMON],
            ),
            addresses.smsdbmon(code),
        )

    async def _publish(self, topic: str, msg: object) -> None:
        # A status message is stored before it is published: while the bus drains at
        # shutdown, subscribers are going away and the message is kept in the database.
        with suppress(BusClosed):
            await self.bus.publish(topic, msg)

    def close_logs(self) -> None:
        for logs in (self.logs, *self._dp_logs):
            logs.close()

    def site_link(self, dest: str) -> NetworkLink:
        """The link to a neighbouring site (one per destination, shared by its sends)."""
        link = self.site_links.get(dest)
        if link is None:
            spec = self.hierarchy.link(self.code, dest)
            link = NetworkLink(f"{self.code}->{dest}", self.bus.clock, spec)
            self.site_links[dest] = link
        return link

    def _site_root(self, code: str) -> Path:
        """Another site server's folder: the sender writes only into its receive share."""
        return self.hierarchy.server_root(self.hierarchy.site(code).server)

    def _dp_root(self, dp: DistributionPointRow) -> Path:
        return dp_root(self.hierarchy, dp.server_name, dp.is_site_server)

    def held_version(self, dp: DistributionPointRow, pkg_id: str) -> int:
        """The latest version of the package the DP's library holds (0: none)."""
        library = self.dp_library(dp.server_name)
        held = library.content_ids(pkg_id) if library is not None else []
        return parse_content_id(held[-1])[1] if held else 0

    def dp_library(self, name: str) -> ContentLibrary | None:
        provider = self.dps.get(name.upper())
        if provider is not None:
            return provider.library
        agent = self.pull_dps.get(name.upper())
        return agent.library if agent is not None else None
