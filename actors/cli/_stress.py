"""The stress run behind ``cmdist stress`` and ``python -m bench stress``.

N small packages of mixed sizes (most a few KiB, some hundreds of KiB, a few MiB, a quarter
sharing a file) are created at the CAS and at every primary (:func:`plan`) and distributed
across the whole hierarchy: the standard DPs of every site, the secondary's, the pull DP
and its source. A tenth are then updated and a twentieth redistributed to one of their
DPs, at most ``concurrency`` packages at a time, while faults are injected (cuts at random
byte offsets on links to DPs and between sites, a link down for a while, PkgXferMgr
crashed and restarted by its supervisor). At the end it checks what must hold (with every
kind of work left: jobs, send requests, pull DP responses, requests, package files,
replication) and measures what it cost, then does it all again for N/2 (first, in a folder
of its own) so growth is visible.

It lives here, beside the command line, because the command line may import only the
facade and ``actors.testing`` (tests/test_layout.py) and the benchmarks may import
anything: ``bench/stress.py`` calls :func:`stress` and the CLI does, one implementation.
"""

from __future__ import annotations

import random
import resource
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from actors import (
    CheckReport,
    DPInfo,
    Hierarchy,
    Package,
    SiteInfo,
    StatusMessage,
    check_root,
    default_hierarchy,
)
from actors.testing import (
    PendingWork,
    crash_component,
    cut_link,
    disk_usage,
    dp_links,
    link_cuts,
    link_down_for,
    pending_work,
    restarts,
    site_links,
    write_tree,
)

__all__ = [
    "WORK_CHECK",
    "Check",
    "Fault",
    "StressOptions",
    "StressResult",
    "StressRun",
    "StressView",
    "plan",
    "root_checks",
    "stress",
]

T = TypeVar("T")
KiB = 1 << 10
MiB = 1 << 20
# A DP's job ended Installed: 8210 (a pull DP's status is stored in the same commit; a
# standard DP's STA follows), then 2330 when DistMgr stores a standard DP's status.
DP_DONE_MESSAGES = frozenset({8210, 2330})
WORK_CHECK = "no job, send request, pull DP response, request, package file or replication left"


def plan(sites: Sequence[SiteInfo], dps: Sequence[DPInfo]) -> dict[str, tuple[str, ...]]:
    """Where packages are created (the keys) and the DPs each site's packages go to: the
    CAS and every primary, each to every DP of the hierarchy (the standard DPs of every
    site, the secondary's, and each pull DP with its source DPs, which are DPs of the
    hierarchy too)."""
    creators = [s.code for s in sites if s.type in ("cas", "primary")]
    return {code: tuple(d.name for d in dps) for code in creators}


# -- the result --------------------------------------------------------------------------


class Check(msgspec.Struct, frozen=True):
    """One check at the end: how many things it looked at and how many were wrong."""

    name: str
    ok: bool
    checked: int
    failed: int
    detail: str = ""


class Fault(msgspec.Struct, frozen=True):
    """One kind of fault injected while the run went: how many took effect, and whether
    everything they hit came back (the DP Installed, the component running again)."""

    kind: Literal["link cut", "site link cut", "link down", "crash"]
    where: str
    injected: int
    fired: int
    recovered: bool
    detail: str = ""


class StressRun(msgspec.Struct, frozen=True):
    ok: bool  # every check passed
    packages: int
    seconds: float  # the first create to the last redistribute Installed
    packages_per_s: float
    latency_p50_ms: float  # distribute to Installed on every DP it targets
    latency_p99_ms: float
    peak_rss_mb: float
    database_mb: float
    library_mb: float
    source_mb: float
    distribute_seconds: float
    update_seconds: float
    redistribute_seconds: float
    updates: int
    redistributes: int
    dps: int  # DPs targeted (by some package)
    deliveries: int  # (package, DP) pairs Installed
    checks: list[Check]
    faults: list[Fault]
    seed: int
    root: str


class StressResult(StressRun, frozen=True):
    half: StressRun | None = None  # the same run at N/2, in the same invocation


class StressOptions(NamedTuple):
    root: Path  # an empty folder: each run gets a subfolder
    packages: int
    seed: int = 1
    time_scale: float = 0.001  # retry delays of 1800 s take 1.8 s
    concurrency: int = 64  # packages in flight at once
    faults: bool = True
    timeout: float = 600.0  # real seconds one operation may take to be Installed
    half: bool = True  # also run N/2 first


class StressView(Protocol):
    """Where progress goes (rich on a terminal, lines, or nothing)."""

    def phase(self, name: str, total: int) -> None: ...
    def advance(self, name: str) -> None: ...
    def say(self, text: str) -> None: ...


# -- generated sources -------------------------------------------------------------------


class _Source(NamedTuple):
    name: str
    path: Path
    size: int


def _write_sources(folder: Path, count: int, seed: int) -> list[_Source]:
    """Most packages a few small files, one in twenty hundreds of KiB, one in two hundred a
    few MiB; a quarter hold one of eight shared files (one copy in each library). Blocking."""
    rng = random.Random(seed)
    shared = [rng.randbytes(rng.randrange(4 * KiB, 64 * KiB)) for _ in range(8)]
    out = []
    for i in range(count):
        name = f"Stress{i:05d}"
        files = {"version.txt": f"{name} version 1\n".encode()}
        kind = rng.random()
        if kind < 0.005:
            files["setup.bin"] = rng.randbytes(rng.randrange(1 * MiB, 4 * MiB))
        elif kind < 0.05:
            files["data.bin"] = rng.randbytes(rng.randrange(100 * KiB, 600 * KiB))
        else:
            for j in range(rng.randrange(1, 4)):
                files[f"bin/file{j}.dat"] = rng.randbytes(rng.randrange(512, 8 * KiB))
        if rng.random() < 0.25:
            files["common/shared.cab"] = shared[rng.randrange(len(shared))]
        write_tree(folder / name, files)
        out.append(_Source(name, folder / name, sum(len(d) for d in files.values())))
    return out


def _edit(src: Path, version: int) -> None:
    """An update: one file rewritten, one added."""
    (src / "version.txt").write_text(f"{src.name} version {version}\n")
    (src / f"changes{version}.txt").write_text(f"what changed in version {version}\n" * 20)


# -- waiting for Installed, fed by the status messages ----------------------------------


class _Watcher:
    """Wakes an operation's waiter when a DP's job for its package ends Installed, so
    that each waiter reads the package's status once per change that concerns it (polling
    every package at every change of any would cost N reads per change)."""

    def __init__(self) -> None:
        self._events: dict[str, anyio.Event] = {}
        self._stored: dict[str, set[str]] = {}

    async def follow(self, h: Hierarchy, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with h.subscribe(buffer=10_000) as sub:
            task_status.started()
            async for event in sub:
                if isinstance(event, StatusMessage) and event.message_id in DP_DONE_MESSAGES:
                    self._on_stored(event)

    def _on_stored(self, msg: StatusMessage) -> None:
        pkg_id = msg.pkg_id or ""
        stored = self._stored.get(pkg_id)
        if stored is not None and msg.dp is not None:
            stored.add(msg.dp.upper())
        event = self._events.get(pkg_id)
        if event is not None:
            event.set()

    def expect(self, pkg_id: str) -> None:
        """Before an operation: forget the DPs that reported for the package so far."""
        self._stored[pkg_id] = set()

    def stored(self, pkg_id: str) -> set[str]:
        return self._stored.get(pkg_id, set())

    def arm(self, pkg_id: str) -> anyio.Event:
        event = self._events.get(pkg_id)
        if event is None or event.is_set():
            event = self._events[pkg_id] = anyio.Event()
        return event

    def done(self, pkg_id: str) -> None:
        self._events.pop(pkg_id, None)
        self._stored.pop(pkg_id, None)


_RECHECK = 2.0  # real seconds: a waiter reads the status again even without a message


async def _installed(h: Hierarchy, pkg: Package, dps: Iterable[str], min_version: int) -> bool:
    """Every DP Installed at the package's current version, that version >= min_version."""
    current = await h.package(pkg)
    if current.version < min_version:
        return False
    status = {s.dp.upper(): s for s in await h.content_status(pkg)}
    for dp in dps:
        s = status.get(dp.upper())
        if s is None or s.state != "Installed" or s.version != current.version:
            return False
    return True


async def _settle(
    h: Hierarchy,
    watcher: _Watcher,
    pkg: Package,
    dps: Sequence[str],
    *,
    min_version: int = 1,
    reported_by: str | None = None,
    timeout: float,
) -> bool:
    """Until every DP is Installed at the current version (and ``reported_by`` has stored
    a status since :meth:`_Watcher.expect`); False after ``timeout`` real seconds.

    The status is read (every site's rows) once every DP has reported since ``expect``,
    or after ``_RECHECK`` seconds without a message: not at each DP's message (reading
    every site for each of a package's 16 messages cost more than a tenth of the run)."""
    deadline = time.perf_counter() + timeout
    every = {dp.upper() for dp in dps}
    needed = {reported_by.upper()} if reported_by is not None else set()
    look = False  # the first look waits for a message: the request was just made
    try:
        while True:
            event = watcher.arm(pkg.pkg_id)
            stored = watcher.stored(pkg.pkg_id)
            if (
                needed <= stored
                and (look or every <= stored)
                and await _installed(h, pkg, dps, min_version)
            ):
                return True
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            with anyio.move_on_after(min(_RECHECK, left)) as wait:
                await event.wait()
            look = wait.cancelled_caught  # no message for a while: look anyway
    finally:
        watcher.done(pkg.pkg_id)


async def _each(items: Iterable[T], limit: int, fn: Callable[[T], Awaitable[None]]) -> None:
    """``fn`` over ``items``, at most ``limit`` at a time (``limit`` tasks, not one per item)."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    async with anyio.create_task_group() as tg:
        for _ in range(limit):
            tg.start_soon(worker)


# -- faults ------------------------------------------------------------------------------


class _Faults:
    """Faults fired as the distribute phase passes milestones, so they land while content
    is moving: a cut at a random offset every tenth, on a link to a DP (odd tenths) or on
    a link between sites that package files cross (even tenths), a link to a DP down for
    ten simulated minutes at 30 %, PkgXferMgr of the site with the most DPs crashed at 50 %."""

    DOWN_FOR = 600.0  # simulated seconds

    def __init__(
        self,
        h: Hierarchy,
        dps: Sequence[DPInfo],
        targets: dict[str, tuple[str, ...]],
        rng: random.Random,
        tg: anyio.abc.TaskGroup,
        *,
        enabled: bool,
    ) -> None:
        self.h = h
        self.rng = rng
        self.tg = tg
        self.enabled = enabled
        wanted = {dp.upper() for names in targets.values() for dp in names}
        self.links = [(site, dp) for site, dp in dp_links(h) if dp.upper() in wanted]
        self.site_links = site_links(h)
        per_site = Counter(d.site for d in dps if d.name.upper() in wanted)
        self.busiest = per_site.most_common(1)[0][0] if per_site else min(targets)
        self.cuts = 0
        self.site_cuts = 0
        self.downs: list[str] = []
        self.crashes: list[str] = []
        self.refused = 0  # transfers the down link refused
        self.ups = 0  # links up again
        self._next = 1

    def progress(self, done: int, total: int) -> None:
        if not self.enabled or not self.links:
            return
        while self._next <= 9 and done * 10 >= total * self._next:
            step = self._next
            self._next += 1
            offset = self.rng.randrange(1, 16 * KiB)
            if step % 2 == 0 and self.site_links:
                site, child = self.rng.choice(self.site_links)
                cut_link(self.h, site, child, after_bytes=offset)
                self.site_cuts += 1
            else:
                site, dp = self.rng.choice(self.links)
                cut_link(self.h, site, dp, after_bytes=offset)
                self.cuts += 1
            if step == 3:
                site, dp = self.rng.choice(self.links)
                self.downs.append(f"{site}->{dp}")
                self.tg.start_soon(self._down, site, dp)
            if step == 5:
                self.crashes.append(crash_component(self.h, self.busiest, "PkgXferMgr"))

    async def _down(self, site: str, dp: str) -> None:
        self.refused += await link_down_for(self.h, site, dp, self.DOWN_FOR)
        self.ups += 1

    def report(self, all_installed: bool) -> list[Fault]:
        if not self.enabled:
            return []
        fired = sum(link_cuts(self.h, site, dp) for site, dp in self.links)
        site_fired = sum(link_cuts(self.h, site, child) for site, child in self.site_links)
        restarted = restarts(self.h, self.busiest, "PkgXferMgr")
        return [
            Fault(
                "link cut",
                f"{len(self.links)} links to DPs",
                self.cuts,
                fired,
                all_installed,
                "a cut fires once its offset has crossed the link; one not reached stays armed",
            ),
            Fault(
                "site link cut",
                f"{len(self.site_links)} links between sites",
                self.site_cuts,
                site_fired,
                all_installed,
                "the sender resumes the package file from the bytes already at the other site",
            ),
            Fault(
                "link down",
                ", ".join(self.downs),
                len(self.downs),
                self.refused,
                all_installed and self.ups == len(self.downs),
                f"{self.DOWN_FOR:g} simulated seconds; fired counts the transfers it refused",
            ),
            Fault(
                "crash",
                ", ".join(self.crashes),
                len(self.crashes),
                restarted,
                all_installed and restarted >= len(self.crashes),
                f"restarted {restarted} times by its supervisor",
            ),
        ]


# -- one run -----------------------------------------------------------------------------


class _Work(NamedTuple):
    pkg: Package
    dps: tuple[str, ...]
    src: Path


async def _run(opts: StressOptions, count: int, root: Path, view: StressView) -> StressRun:
    rng = random.Random(opts.seed)
    config = default_hierarchy(root=root / "data")
    view.say(f"{count} packages: writing sources under {root / 'sources'}")
    sources = await anyio.to_thread.run_sync(_write_sources, root / "sources", count, opts.seed)
    latencies: list[float] = []
    failed: list[str] = []
    work: list[_Work] = []
    async with Hierarchy.open(config, time_scale=opts.time_scale) as h:
        dps = await h.dps()
        targets = plan(await h.sites(), dps)
        creators = sorted(targets)
        watcher = _Watcher()
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.follow, h)
            faults = _Faults(h, dps, targets, rng, tg, enabled=opts.faults)
            started = time.perf_counter()

            view.phase("distribute", count)

            async def distribute(i: int) -> None:
                src = sources[i]
                site = creators[i % len(creators)]
                pkg = await h.create_package(src.name, src.path, site=site)
                t0 = time.perf_counter()
                watcher.expect(pkg.pkg_id)
                await h.distribute(pkg, targets[site])
                if await _settle(h, watcher, pkg, targets[site], timeout=opts.timeout):
                    latencies.append(time.perf_counter() - t0)
                else:
                    failed.append(f"{pkg.pkg_id} distribute")
                work.append(_Work(pkg, targets[site], src.path))
                view.advance("distribute")
                faults.progress(len(work), count)

            await _each(range(count), opts.concurrency, distribute)
            distributed = time.perf_counter()

            updated = rng.sample(work, max(1, count // 10))
            view.phase("update", len(updated))

            async def update(w: _Work) -> None:
                before = await h.package(w.pkg)
                await anyio.to_thread.run_sync(_edit, w.src, before.version + 1)
                watcher.expect(w.pkg.pkg_id)
                await h.update(w.pkg)
                if not await _settle(
                    h, watcher, w.pkg, w.dps, min_version=before.version + 1, timeout=opts.timeout
                ):
                    failed.append(f"{w.pkg.pkg_id} update")
                view.advance("update")

            await _each(updated, opts.concurrency, update)
            update_done = time.perf_counter()

            redistributed = rng.sample(work, max(1, count // 20))
            view.phase("redistribute", len(redistributed))

            async def redistribute(w: _Work) -> None:
                dp = rng.choice(w.dps)
                watcher.expect(w.pkg.pkg_id)
                await h.redistribute(w.pkg, dp)
                if not await _settle(
                    h, watcher, w.pkg, w.dps, reported_by=dp, timeout=opts.timeout
                ):
                    failed.append(f"{w.pkg.pkg_id} redistribute to {dp}")
                view.advance("redistribute")

            await _each(redistributed, opts.concurrency, redistribute)
            finished = time.perf_counter()
            tg.cancel_scope.cancel()

        view.say("checking: every package Installed at its current version, no work left")
        checks = [
            await _installed_check(h, work, failed),
            await _work_check(h, opts.timeout),
        ]
        fault_list = faults.report(checks[0].ok)
        checks.append(_faults_check(fault_list))
    view.say("checking: every file's hash on every DP, orphans, databases (read-only)")
    checks += root_checks(await check_root(config))
    usage = await anyio.to_thread.run_sync(disk_usage, config)
    seconds = finished - started
    lat = sorted(latencies)
    return StressRun(
        ok=all(c.ok for c in checks),
        packages=count,
        seconds=round(seconds, 3),
        packages_per_s=round(count / seconds, 1) if seconds else 0.0,
        latency_p50_ms=round(_quantile(lat, 0.50) * 1000, 1),
        latency_p99_ms=round(_quantile(lat, 0.99) * 1000, 1),
        peak_rss_mb=round(_peak_rss() / MiB, 1),
        database_mb=round(usage.databases / MiB, 1),
        library_mb=round(usage.libraries / MiB, 1),
        source_mb=round(sum(s.size for s in sources) / MiB, 1),
        distribute_seconds=round(distributed - started, 3),
        update_seconds=round(update_done - distributed, 3),
        redistribute_seconds=round(finished - update_done, 3),
        updates=len(updated),
        redistributes=len(redistributed),
        dps=len({dp for dps in targets.values() for dp in dps}),
        deliveries=sum(len(w.dps) for w in work),
        checks=checks,
        faults=fault_list,
        seed=opts.seed,
        root=str(root),
    )


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _peak_rss() -> int:
    """This process's peak resident set in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KiB


# -- the checks --------------------------------------------------------------------------


async def _installed_check(h: Hierarchy, work: Sequence[_Work], failed: Sequence[str]) -> Check:
    wrong = [w.pkg.pkg_id for w in work if not await _installed(h, w.pkg, w.dps, min_version=1)]
    pairs = sum(len(w.dps) for w in work)
    detail = ", ".join([*wrong[:5], *failed[:5]])
    return Check(
        "every package Installed on every targeted DP at its current version",
        not wrong and not failed,
        pairs,
        len(wrong),
        f"not installed: {detail}" if wrong or failed else f"{len(work)} packages",
    )


_LOOK_AGAIN = 0.05  # real seconds between two looks at the work left


async def _work_check(h: Hierarchy, timeout: float) -> Check:
    """Once every package is Installed, what follows it drains (the DPs' status rows
    replicated back to the source site and the CAS, send requests deleted, the package
    files' counts going to 0): up to ``timeout`` real seconds, then what is left is
    reported by site and kind."""
    with anyio.move_on_after(timeout):
        while any(w.total for w in (await pending_work(h)).values()):
            await anyio.sleep(_LOOK_AGAIN)
    work = await pending_work(h)
    left = {code: w for code, w in sorted(work.items()) if w.total}
    return Check(
        WORK_CHECK,
        not left,
        len(work) * len(PendingWork._fields),
        sum(w.total for w in left.values()),
        "; ".join(f"{code}: {w.describe()}" for code, w in left.items())
        or "nothing left at any site",
    )


def _faults_check(faults: Sequence[Fault]) -> Check:
    bad = [f"{f.kind} at {f.where}" for f in faults if not f.recovered]
    return Check(
        "every fault recovered",
        not bad,
        sum(f.fired for f in faults),
        len(bad),
        ", ".join(bad) if bad else ", ".join(f"{f.kind} x{f.fired}" for f in faults),
    )


_HASH_KINDS = {"missing file", "corrupt file"}
_ORPHAN_KINDS = {"orphan file", "orphan content", "orphan row"}


def root_checks(report: CheckReport) -> list[Check]:
    """``check_root``'s report as three checks: every file's hash on every library, nothing
    unreferenced, and the rest (databases, manifests, Installed rows against libraries)."""
    c = report.checked

    def check(name: str, kinds: Callable[[str], bool], checked: int) -> Check:
        found = [p for p in report.problems if kinds(p.what)]
        return Check(
            name,
            not found,
            checked,
            len(found),
            "; ".join(p.line() for p in found[:3]),
        )

    return [
        check("every file's hash verified on every DP", _HASH_KINDS.__contains__, c.files),
        check(
            "no file in any library that no manifest references",
            _ORPHAN_KINDS.__contains__,
            c.files,
        ),
        check(
            "databases, manifests and Installed rows sound",
            lambda k: k not in _HASH_KINDS | _ORPHAN_KINDS,
            c.databases + c.manifests + c.installed,
        ),
    ]


# -- the whole invocation ----------------------------------------------------------------


async def stress(opts: StressOptions, view: StressView) -> StressResult:
    """The run at N/2 (with ``opts.half``), then at N; each in its own folder under
    ``opts.root``; a run's generated sources are removed once it passed, its data root kept
    (``cmdist status`` / ``cmdist check`` read it)."""
    half: StressRun | None = None
    if opts.half and opts.packages >= 2:
        half = await _measured(opts, opts.packages // 2, opts.root / "half", view)
    full = await _measured(opts, opts.packages, opts.root / "full", view)
    fields = {f: getattr(full, f) for f in full.__struct_fields__}
    fields["ok"] = full.ok and (half is None or half.ok)
    return StressResult(**fields, half=half)


async def _measured(opts: StressOptions, count: int, root: Path, view: StressView) -> StressRun:
    result = await _run(opts, count, root, view)
    view.say(
        f"{count} packages: {'all checks passed' if result.ok else 'CHECKS FAILED'} in"
        f" {result.seconds:.1f} s ({result.packages_per_s:,.1f} packages/s)"
    )
    if result.ok:
        await anyio.to_thread.run_sync(shutil.rmtree, root / "sources")
    return result
