"""What tests and embedders need to drive a hierarchy: source trees, link settings, faults
(link cuts, a link down, a component crashed for its supervisor to restart), probes
(every kind of pending work, disk usage).

Nothing here is used by the product itself; ``cmdist stress`` uses it to inject its faults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from actors import addresses
from actors._runtime import Hierarchy
from actors.config import HierarchyConfig
from actors.dp import CONTENT_LIBRARY
from actors.errors import UnknownDistributionPoint
from actors.network import NetworkLink
from actors.site._paths import receive_box, smspkg, tosend_box

__all__ = [
    "DiskUsage",
    "PendingWork",
    "crash_component",
    "cut_link",
    "disk_usage",
    "dp_links",
    "instant_links",
    "link_cuts",
    "link_down_for",
    "pending_jobs",
    "pending_work",
    "read_tree",
    "restarts",
    "set_link_down",
    "site_links",
    "write_tree",
]


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (posix relative path -> bytes) under ``root``; returns ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by posix relative path (what ``extract`` is compared to)."""
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def instant_links(h: Hierarchy, site: str, *, except_dp: str | None = None) -> None:
    """Make a site's links to its DPs instant (no latency, no bandwidth limit): under a
    ``ManualClock`` only the waits a test means (retry delays, one slow link) then wait for
    the clock."""
    for name, link in h.servers[site].links.items():
        if name != except_dp:
            link.latency, link.bandwidth = 0.0, None


# -- faults, injected into a running hierarchy ---------------------------------------------


def _link(h: Hierarchy, site: str, dp: str) -> NetworkLink:
    """The link from ``site`` to a DP, or to a child site (``dp`` is its code then)."""
    server = h.servers[site]
    link = server.links.get(dp)
    if link is None and dp in {c.code for c in h.config.children(site)}:
        link = server.site_link(dp)  # the sender's link down to that site
    if link is None:
        raise UnknownDistributionPoint(f"{dp} (no link from site {site} to it)")
    return link


def dp_links(h: Hierarchy) -> list[tuple[str, str]]:
    """Every (site, DP) link a site server sends content over, as the faults here name it."""
    return [(code, dp) for code, site in h.servers.items() for dp in site.links]


def site_links(h: Hierarchy) -> list[tuple[str, str]]:
    """Every (site, child site) link a sender sends package files over; the faults here
    take the child's code where they take a DP's name."""
    return [(s.parent, s.code) for s in h.config.sites if s.parent is not None]


async def link_down_for(h: Hierarchy, site: str, dp: str, seconds: float) -> int:
    """Take the link from ``site`` to ``dp`` down for ``seconds`` of simulated time (the
    bus clock: ``time_scale`` applies), then up again, even if cancelled meanwhile.
    Returns how many transfers it refused meanwhile."""
    link = _link(h, site, dp)
    before = link.transfers
    link.down = True
    try:
        await h.bus.clock.sleep(seconds)
    finally:
        link.down = False
    return link.transfers - before


def cut_link(h: Hierarchy, site: str, dp: str, after_bytes: int) -> None:
    """Cut the next transfer from ``site`` to ``dp`` once ``after_bytes`` more bytes have
    crossed its link, as a dropped connection would."""
    _link(h, site, dp).inject_cut(after_bytes)


def link_cuts(h: Hierarchy, site: str, dp: str) -> int:
    """How many cuts have fired on the link from ``site`` to ``dp``."""
    return _link(h, site, dp).cuts


def set_link_down(h: Hierarchy, site: str, dp: str, down: bool) -> None:
    """Take the link from ``site`` to ``dp`` down (every transfer refused) or up again."""
    _link(h, site, dp).down = down


def crash_component(h: Hierarchy, site: str, component: str) -> str:
    """Fail a site component (``"PkgXferMgr"``, ``"DistMgr"``, ``"SMSDBMON"``) as an
    unexpected error would: its supervisor restarts it (work in its tasks is cancelled,
    its mailbox kept). Returns its bus address."""
    address = _component_address(site, component)
    h.bus.inject_failure(address, RuntimeError(f"{address}: crash injected by a test"))
    return address


def restarts(h: Hierarchy, site: str, component: str) -> int:
    """How many times the supervisor has restarted the component."""
    return h.bus.counters(_component_address(site, component)).restarts


def _component_address(site: str, component: str) -> str:
    by_name = {
        "DistMgr": addresses.distmgr,
        "PkgXferMgr": addresses.pkgxfermgr,
        "SMSDBMON": addresses.smsdbmon,
    }
    if component not in by_name:
        raise ValueError(f"no component {component!r}: one of {', '.join(by_name)}")
    return by_name[component](site)


# -- probes ------------------------------------------------------------------------------


async def pending_jobs(h: Hierarchy) -> dict[str, int]:
    """DistributionJobs rows left, by site code (a settled hierarchy has none)."""
    return {code: len(await site.db.distribution_jobs()) for code, site in h.servers.items()}


class PendingWork(NamedTuple):
    """What one site still has to do; a settled hierarchy has 0 everywhere."""

    jobs: int  # DistributionJobs rows (standard and pull DP jobs)
    send_requests: int  # mini-jobs not complete: a package file still to send to a site
    pull_dp_responses: int  # pull DP state messages DistMgr has not processed
    requests: int  # admin requests DistMgr has not taken (package or DP actions)
    package_files: int  # PCK / DLT files in SMSPKG, and references still counted to them
    instructions: int  # instructions in schedule.box/tosend or in despoolr.box/receive
    replication: int  # replication records a neighbouring site has not acknowledged

    @property
    def total(self) -> int:
        return sum(self)

    def describe(self) -> str:
        """The non-zero counts, named: ``jobs 2, replication 5``."""
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self._asdict().items() if v)


async def pending_work(h: Hierarchy) -> dict[str, PendingWork]:
    """Every kind of pending work, by site code: the site database's jobs, send requests,
    pull DP responses, requests and referenced package files, the files in its SMSPKG and
    inboxes between sites, and its replication log not yet acknowledged by a neighbour."""
    out: dict[str, PendingWork] = {}
    for code, site in h.servers.items():
        left = await site.db.work_left(code)
        config = h.config.site(code)
        peers = [*([config.parent] if config.parent else [])]
        peers += [c.code for c in h.config.children(code)]
        unacked = 0
        for peer in peers:
            unacked += max(0, left.drs_log_end - await site.db.replication_position(peer, "sent"))
        out[code] = PendingWork(
            jobs=left.jobs,
            send_requests=left.minijobs,
            pull_dp_responses=left.pull_dp_responses,
            requests=left.requests,
            package_files=left.package_files + _files(smspkg(site.root)),
            instructions=_files(tosend_box(site.root)) + _files(receive_box(site.root)),
            replication=unacked,
        )
    return out


def _files(folder: Path) -> int:
    """Files directly in ``folder`` (0 if it does not exist; sub-folders not counted)."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.is_file())
    except FileNotFoundError:
        return 0


class DiskUsage(NamedTuple):
    databases: int  # bytes of the site databases (with their WAL and shared-memory files)
    libraries: int  # bytes of every content library (site servers' and DPs')


def disk_usage(config: HierarchyConfig) -> DiskUsage:
    """What a data root holds on disk, walked as files (blocking: call it in a thread)."""
    databases = libraries = 0
    for dirpath, _, names in os.walk(config.require_data_root()):
        in_library = CONTENT_LIBRARY in Path(dirpath).parts
        for name in names:
            try:
                size = (Path(dirpath) / name).stat().st_size
            except FileNotFoundError:
                continue
            if in_library:
                libraries += size
            elif name.startswith("site.db"):
                databases += size
    return DiskUsage(databases, libraries)
