"""The ``cmdist`` command line.

``cmdist demo``: the default hierarchy in a fresh data root; generated packages of mixed
sizes are created at the CAS (CS1) and distributed to a standard DP of each other site (PS1,
PS2, SS1 through PS1, P01), one is updated and one redistributed, and one package of site
P01 goes to its source DP and then to the pull DP P01PDP1, with live progress fed by the
status messages, then the content status and measured figures.
``cmdist status --root DIR``: the content status a run left in DIR, read from the site
databases without starting anything.
``cmdist check --root DIR``: the site databases against the content libraries, read-only;
every problem named, exit 1 when there is any.
``cmdist stress --packages N``: N small packages across the hierarchy with faults injected,
then every check that must hold and the figures, at N/2 and N (exit 1 if a check failed).

Exit codes: 0 done (check: clean), 1 failed (check: problems), 2 bad arguments or data root,
130 interrupted (Ctrl-C), 141 stdout closed early (``| head``).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import anyio
import anyio.lowlevel
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Column, Table

from actors import (
    DistributionPoint,
    Hierarchy,
    HierarchyConfig,
    Package,
    PackageStatus,
    StatusMessage,
    check_root,
    default_hierarchy,
    describe,
    load_hierarchy,
    read_status,
    report_lines,
)
from actors.cli._stress import StressOptions, stress
from actors.cli._stress_view import StressProgress, print_stress
from actors.cli._table import status_table
from actors.errors import CmdistError, DataRootError, HierarchyConfigError
from bus import run

__all__ = ["main"]

DEMO_SITE = "CS1"  # the packages' site: the CAS, as the reference's walk-through has it
PULL_SITE = "P01"  # the site whose pull DP the demo serves too
INSTALLED_MESSAGE = 8210  # PkgXferMgr: package sent to the DP and installed there
MiB = 1 << 20
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `... | head`

# -- generated packages ------------------------------------------------------------------


class _Source(NamedTuple):
    name: str
    path: Path
    files: int
    size: int


def _text(name: str, n: int, size: int) -> bytes:
    line = f"{name}: line %d of a generated text file for the cmdist demo ({n})\n"
    out = bytearray()
    i = 0
    while len(out) < size:
        out += (line % i).encode()
        i += 1
    return bytes(out[:size])


def _make_package(folder: Path, index: int, scale: float) -> _Source:
    """Package ``index`` of the demo: the kinds cycle through small text files, a 5 MiB
    binary, a 20 MiB binary, a tree of 200 small files and a mix (sizes times ``scale``)."""
    rng = random.Random(index)
    kind = ("Docs", "Tool", "Image", "Tree", "Mixed")[index % 5]
    name = f"{kind}{index + 1:02d}"
    src = folder / name
    files: dict[str, bytes] = {
        "readme.txt": _text(name, 0, 2_000),
        "notes.txt": _text(name, 1, 1_500),
    }
    if kind == "Docs":
        files |= {f"doc{i}.txt": _text(name, i + 2, rng.randrange(2_000, 20_000)) for i in range(6)}
    elif kind == "Tool":
        files["setup.exe"] = rng.randbytes(max(1, int(5 * MiB * scale)))
    elif kind == "Image":
        files["image.wim"] = rng.randbytes(max(1, int(20 * MiB * scale)))
    elif kind == "Tree":
        for i in range(max(10, int(200 * scale))):
            files[f"dir{i % 10}/sub{i % 3}/file{i:03d}.dat"] = rng.randbytes(
                rng.randrange(1_000, 8_000)
            )
    else:
        files |= {f"config{i}.xml": _text(name, i + 2, 4_000) for i in range(3)}
        files["lib.dll"] = rng.randbytes(max(1, int(MiB * scale)))
    for rel, data in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return _Source(name, src, len(files), sum(len(d) for d in files.values()))


def _edit(src: Path) -> None:
    """An update: patch the middle of the largest file, rewrite one file, add one, drop one."""
    biggest = max((p for p in src.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    span = max(1, min(64 * 1024, len(data) // 4))
    mid = len(data) // 2
    data[mid : mid + span] = random.Random(-1).randbytes(span)
    biggest.write_bytes(bytes(data))
    (src / "readme.txt").write_text("readme, version 2\n" * 100)
    (src / "CHANGES.txt").write_text("version 2: patched, readme rewritten, notes dropped\n")
    (src / "notes.txt").unlink()


# -- live progress, fed by the status messages --------------------------------------------


class _Phase:
    """One operation on one package: done when every DP in ``nals`` has reported 8210."""

    def __init__(self, pkg: Package, label: str, nals: Sequence[str]) -> None:
        self.pkg = pkg
        self.label = label
        self.nals = frozenset(nals)
        self.installed: set[str] = set()
        self.started = time.perf_counter()
        self.finished: float | None = None
        self.done = anyio.Event()
        self.task: TaskID | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started


class _Progress:
    """Routes status messages to the current phase of their package and shows it: a live
    rich progress table on a terminal, one line per finished phase otherwise (CI, pipes),
    nothing with ``quiet`` (``--json``)."""

    def __init__(self, console: Console, dp_names: dict[str, str], *, quiet: bool) -> None:
        self.console = console
        self.dp_names = dp_names
        self.quiet = quiet
        self.current: dict[str, _Phase] = {}
        self.progress: Progress | None = None
        if console.is_terminal and not quiet:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("DPs"),
                TextColumn(
                    "{task.fields[last]}",
                    table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
                ),
                console=console,
                expand=True,
            )

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True)  # long paths stay whole

    def watch(self, pkg: Package, label: str, nals: Sequence[str]) -> _Phase:
        """Start a phase; call it before the operation so no message is missed."""
        phase = _Phase(pkg, label, nals)
        self.current[pkg.pkg_id] = phase
        if self.progress is not None:
            phase.task = self.progress.add_task(
                f"{pkg.pkg_id} {pkg.name:<8} {label:<12}", total=len(nals), last=""
            )
        return phase

    async def follow(self, h: Hierarchy) -> None:
        async for msg in h.status_messages():
            self._on(msg)

    def _on(self, msg: StatusMessage) -> None:
        phase = self.current.get(msg.pkg_id or "")
        if phase is None or phase.done.is_set():
            return
        nal = msg.nal_path or ""
        if msg.message_id == INSTALLED_MESSAGE and nal in phase.nals:
            phase.installed.add(nal)
        if self.progress is not None and phase.task is not None:
            where = self.dp_names.get(nal, "")
            self.progress.update(
                phase.task,
                completed=len(phase.installed),
                last=" ".join(filter(None, (str(msg.message_id), where, describe(msg)))),
            )
        if phase.installed >= phase.nals:
            phase.finished = time.perf_counter()
            phase.done.set()
            if self.progress is None:
                self.say(
                    f"  {phase.pkg.pkg_id} {phase.pkg.name:<8} {phase.label:<12} installed on"
                    f" {len(phase.installed)}/{len(phase.nals)} DPs in"
                    f" {phase.seconds * 1000:,.0f} ms"
                )


# -- the demo ------------------------------------------------------------------------------


class PackageFigures(msgspec.Struct, frozen=True):
    pkg_id: str
    name: str
    files: int
    bytes: int
    latency_ms: float  # distribute to Installed on every DP


class DemoResult(msgspec.Struct, frozen=True):
    root: str
    logs: list[str]
    site: str
    dps: list[str]
    time_scale: float
    packages: int
    bytes: int  # source bytes of every package
    bytes_delivered: int  # to every DP
    seconds: float  # create + distribute, until every package is Installed everywhere
    mb_s: float
    lat_p50_ms: float
    lat_max_ms: float
    update_ms: float
    redistribute_ms: float
    per_package: list[PackageFigures]
    pull_dp_ms: float  # P01's package: distributed to the pull DP until Installed there
    status: list[PackageStatus]
    ok: bool  # every package Installed at its current version on every DP


class _DemoOptions(NamedTuple):
    config: HierarchyConfig
    root: Path
    packages: int
    scale: float
    time_scale: float
    timeout: float


class _Run(NamedTuple):
    """What the demo did: its packages and the phases it timed."""

    pkgs: list[Package]
    phases: list[_Phase]  # one distribute per package
    update: _Phase
    redistribute: _Phase
    seconds: float  # the distributes, from the first create to the last install
    pull: _Phase  # P01's package to the pull DP P01PDP1


async def _demo(opts: _DemoOptions, view: _Progress) -> DemoResult:
    cfg = opts.config
    dps = _demo_dps(cfg)
    sources = [_make_package(opts.root / "sources", i, opts.scale) for i in range(opts.packages)]
    total = sum(s.size for s in sources)
    view.say(
        f"cmdist demo: {len(sources)} packages ({total / MiB:,.1f} MiB) created at {DEMO_SITE}"
        f" to {len(dps)} DPs ({', '.join(d.name for d in dps)}), time scale"
        f" {opts.time_scale:g}, data root {opts.root}"
    )
    async with (
        Hierarchy.open(cfg, time_scale=opts.time_scale) as h,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(view.follow, h)
        # one checkpoint: the follower runs up to its subscription before any work starts
        await anyio.lowlevel.checkpoint()
        with view:
            run = await _run_phases(h, view, opts, sources, dps)
        status = [await _package_status(h, pkg) for pkg in (*run.pkgs, run.pull.pkg)]
        tg.cancel_scope.cancel()
    return _result(opts, dps, sources, run, status)


def _demo_dps(cfg: HierarchyConfig) -> list[DistributionPoint]:
    """One standard DP at each site below the CAS (not a site server's own): the package
    travels to every site of the hierarchy."""
    servers = {s.server.upper() for s in cfg.sites}
    out: list[DistributionPoint] = []
    for site in cfg.sites:
        if site.code == DEMO_SITE:
            continue
        own = [d for d in cfg.dps_of(site.code) if not d.pull and d.name.upper() not in servers]
        if own:
            out.append(own[0])
    return out


async def _run_phases(
    h: Hierarchy,
    view: _Progress,
    opts: _DemoOptions,
    sources: list[_Source],
    dps: list[DistributionPoint],
) -> _Run:
    """Distribute every package, update the largest, redistribute the first."""
    nals = [d.nal_path for d in dps]
    t0 = time.perf_counter()
    pkgs = [await h.create_package(s.name, s.path, site=DEMO_SITE) for s in sources]
    phases = []
    for pkg in pkgs:
        phases.append(view.watch(pkg, "distribute", nals))
        await h.distribute(pkg, [d.name for d in dps])
    await _settle(h, phases, opts.timeout)
    seconds = time.perf_counter() - t0

    target = pkgs[max(range(len(sources)), key=lambda i: sources[i].size)]
    _edit(sources[pkgs.index(target)].path)
    update = view.watch(target, "update", nals)
    await h.update(target)
    await _settle(h, [update], opts.timeout)

    # not the site server's own DP: a DP reached over the network
    again = next((d for d in dps if d.name != opts.config.site(DEMO_SITE).server), dps[0])
    redist = view.watch(pkgs[0], f"redist {again.name.split('.')[0]}", [again.nal_path])
    await h.redistribute(pkgs[0], again.name)
    await _settle(h, [redist], opts.timeout)
    return _Run(pkgs, phases, update, redist, seconds, await _pull_phase(h, view, opts, sources))


async def _pull_phase(
    h: Hierarchy, view: _Progress, opts: _DemoOptions, sources: list[_Source]
) -> _Phase:
    """The smallest package again, created at P01: its source DP first, then the pull DP,
    which downloads it over HTTP and reports back through the MP and the State System."""
    smallest = min(sources, key=lambda s: s.size)
    pkg = await h.create_package(f"{smallest.name}-pull", smallest.path, site=PULL_SITE)
    pull = next(d for d in opts.config.dps_of(PULL_SITE) if d.pull)
    sources_of = [opts.config.dp(name) for name in pull.sources]
    first = view.watch(pkg, "source DP", [d.nal_path for d in sources_of])
    await h.distribute(pkg, [d.name for d in sources_of])
    await _settle(h, [first], opts.timeout)
    phase = view.watch(pkg, "pull DP", [pull.nal_path])
    await h.distribute(pkg, [pull.name])
    await _settle(h, [phase], opts.timeout)
    return phase


async def _package_status(h: Hierarchy, pkg: Package) -> PackageStatus:
    version = (await h.package(pkg)).version  # after the update: the current one
    records = tuple(await h.content_status(pkg))
    return PackageStatus(pkg.pkg_id, pkg.name, pkg.site, version, records)


def _result(
    opts: _DemoOptions,
    dps: list[DistributionPoint],
    sources: list[_Source],
    run: _Run,
    status: list[PackageStatus],
) -> DemoResult:
    """The figures: bytes delivered, MB/s, distribute-to-Installed latency per package."""
    total = sum(s.size for s in sources)
    latencies = sorted(p.seconds * 1000 for p in run.phases)
    delivered = total * len(dps)
    return DemoResult(
        root=str(opts.root),
        logs=[str(p) for p in sorted(opts.root.glob("*/logs")) if any(p.iterdir())],
        site=DEMO_SITE,
        dps=[d.name for d in dps],
        time_scale=opts.time_scale,
        packages=len(run.pkgs),
        bytes=total,
        bytes_delivered=delivered,
        seconds=round(run.seconds, 3),
        mb_s=round(delivered / run.seconds / 1e6, 1),
        lat_p50_ms=round(latencies[len(latencies) // 2], 1),
        lat_max_ms=round(latencies[-1], 1),
        update_ms=round(run.update.seconds * 1000, 1),
        redistribute_ms=round(run.redistribute.seconds * 1000, 1),
        pull_dp_ms=round(run.pull.seconds * 1000, 1),
        per_package=[
            PackageFigures(p.pkg_id, s.name, s.files, s.size, round(ph.seconds * 1000, 1))
            for p, s, ph in zip(run.pkgs, sources, run.phases, strict=True)
        ],
        status=status,
        ok=all(s.installed for s in status),
    )


async def _settle(h: Hierarchy, phases: Sequence[_Phase], timeout: float) -> None:
    """Every phase's DPs reported Installed, and the facade agrees."""
    for phase in phases:
        try:
            with anyio.fail_after(timeout):
                await phase.done.wait()
        except TimeoutError:
            status = await h.content_status(phase.pkg)
            states = ", ".join(f"{s.dp} {s.state} v{s.version}" for s in status)
            raise CmdistError(
                f"{phase.pkg.pkg_id} ({phase.label}) is not installed on every DP after"
                f" {timeout:g} s: {states}"
            ) from None
        await h.wait(phase.pkg, timeout=timeout)


def _print_demo(console: Console, result: DemoResult) -> None:
    console.print(status_table(result.status))
    figures = Table(title="Distribute to Installed on every DP", title_justify="left")
    for header in ("package", "name", "files", "MiB", "distribute→Installed ms"):
        figures.add_column(header, justify="left" if header in ("package", "name") else "right")
    for p in result.per_package:
        figures.add_row(
            p.pkg_id, p.name, str(p.files), f"{p.bytes / MiB:,.2f}", f"{p.latency_ms:,.1f}"
        )
    console.print(figures)
    console.print(
        f"{result.packages} packages, {result.bytes / MiB:,.1f} MiB of sources,"
        f" {result.bytes_delivered / MiB:,.1f} MiB delivered to {len(result.dps)} DPs"
        f" in {result.seconds:.2f} s: {result.mb_s:,.1f} MB/s;"
        f" latency p50 {result.lat_p50_ms:,.0f} ms, max {result.lat_max_ms:,.0f} ms",
        soft_wrap=True,
    )
    console.print(
        f"update to Installed on every DP: {result.update_ms:,.0f} ms;"
        f" redistribute to Installed: {result.redistribute_ms:,.0f} ms;"
        f" {PULL_SITE}'s package to its pull DP: {result.pull_dp_ms:,.0f} ms"
    )
    verdict = "every package Installed on every DP" if result.ok else "NOT every package Installed"
    console.print(f"{verdict}.  Data root: {result.root}", soft_wrap=True)
    console.print("Logs (CMTrace):")
    for folder in result.logs:
        names = ", ".join(sorted(p.name for p in Path(folder).iterdir()))
        console.print(f"  {folder}: {names}", soft_wrap=True)
    console.print(f"Content status again: cmdist status --root {result.root}", soft_wrap=True)


# -- the command line --------------------------------------------------------------------


class UsageError(CmdistError):
    """Bad arguments the parser cannot see (a folder in use, a missing hierarchy file)."""


class Interrupted(Exception):
    """Ctrl-C during a command; the message says what was kept."""


def _load(path: str | None, root: Path) -> HierarchyConfig:
    """``--hierarchy`` over ``root``; without it, the default packaged with cmdist (so an
    installed wheel runs from any folder)."""
    if not path:
        return default_hierarchy(root=root)
    if not Path(path).is_file():
        raise UsageError(f"hierarchy file {path} not found: give one with --hierarchy PATH")
    return load_hierarchy(path, root=root)


def _new_root(given: str | None, prefix: str) -> Path:
    """``--root``, which must be new or empty; without it, a new temporary folder."""
    if not given:
        return Path(tempfile.mkdtemp(prefix=prefix))
    root = Path(given).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"--root {root} is not an empty folder: give a new or empty one")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _demo_command(args: argparse.Namespace, console: Console) -> int:
    root = _new_root(args.root, "cmdist-demo-")
    opts = _DemoOptions(
        _load(args.hierarchy, root), root, args.packages, args.scale, args.time_scale, args.timeout
    )
    short = {d.nal_path: d.name.split(".")[0] for d in opts.config.dps}
    view = _Progress(console, short, quiet=args.json)
    try:
        result = run(_demo, opts, view)
    except KeyboardInterrupt:
        raise Interrupted(f"data root kept at {root}") from None
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        _print_demo(console, result)
    return 0 if result.ok else 1


def _stress_command(args: argparse.Namespace, console: Console) -> int:
    root = _new_root(args.root, "cmdist-stress-")
    opts = StressOptions(
        root,
        args.packages,
        seed=args.seed,
        time_scale=args.time_scale,
        concurrency=args.concurrency,
        faults=not args.no_faults,
        timeout=args.timeout,
    )
    try:
        with StressProgress(console, quiet=args.json) as view:
            result = run(stress, opts, view)
    except KeyboardInterrupt:
        raise Interrupted(f"data root kept at {root}") from None
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print_stress(console, result)
    return 0 if result.ok else 1


def _left_by_a_run(args: argparse.Namespace) -> HierarchyConfig:
    """The hierarchy over ``--root``, which must exist: status and check read what a run
    left there and create nothing."""
    root = Path(args.root).resolve()
    if not root.is_dir():
        raise DataRootError(f"data root {root} does not exist (or is not a folder)")
    return _load(args.hierarchy, root)


def _status_command(args: argparse.Namespace, console: Console) -> int:
    config = _left_by_a_run(args)
    root = config.data_root
    packages = run(read_status, config)
    if args.json:
        out = {
            "root": str(root),
            "packages": packages,
            "installed": all(p.installed for p in packages),
        }
        print(msgspec.json.encode(out).decode())
        return 0
    console.print(status_table(packages))
    installed = sum(p.installed for p in packages)
    console.print(
        f"{len(packages)} packages, {installed} Installed on every DP they target;"
        f" data root {root}",
        soft_wrap=True,
    )
    return 0


def _check_command(args: argparse.Namespace, console: Console) -> int:
    report = run(check_root, _left_by_a_run(args))
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        # plain print: NAL paths hold [brackets] that rich would take for markup
        print("\n".join(report_lines(report)))
    return 0 if report.ok else 1


def _bench_command(args: argparse.Namespace, console: Console) -> int:
    # The benchmarks live in the source checkout, not in the installed package: they write
    # temporary trees and run rsync and cp beside cmdist. Run them as `python -m bench` there,
    # in a process of their own, so their figures are not those of this one.
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "bench" / "__main__.py").is_file():
        raise UsageError(
            f"the benchmarks ship with the source checkout (bench/), not found beside {checkout};"
            " run `python -m bench` from a clone"
        )
    return subprocess.run(
        [sys.executable, "-m", "bench", *args.bench_args], cwd=checkout, check=False
    ).returncode


_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "demo": _demo_command,
    "status": _status_command,
    "check": _check_command,
    "stress": _stress_command,
    "bench": _bench_command,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmdist", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="distribute generated packages from CS1 to DPs of every site, with live progress",
    )
    demo.add_argument("--root", help="data root to create (default: a new temporary folder)")
    demo.add_argument("--packages", type=int, default=5, help="packages to generate (default 5)")
    demo.add_argument(
        "--scale", type=float, default=1.0, help="multiply generated file sizes (default 1)"
    )
    demo.add_argument(
        "--time-scale", type=float, default=0.01, help="multiply every interval (default 0.01)"
    )
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds per wait")
    _hierarchy_option(demo)
    demo.add_argument("--json", action="store_true", help="one JSON object, no progress")
    status = commands.add_parser("status", help="content status of a data root left by a run")
    status.add_argument("--root", required=True, help="the data root of a run")
    _hierarchy_option(status)
    status.add_argument("--json", action="store_true", help="one JSON object")
    check = commands.add_parser(
        "check", help="check a data root's databases against its content libraries (read-only)"
    )
    check.add_argument("--root", required=True, help="the data root of a run")
    _hierarchy_option(check)
    check.add_argument("--json", action="store_true", help="one JSON object: ok, problems, checked")
    stress = commands.add_parser(
        "stress",
        help="many small packages across the hierarchy with faults injected, then checks",
    )
    stress.add_argument(
        "--packages", type=int, default=10_000, help="packages (default 10000; N/2 runs first)"
    )
    stress.add_argument("--root", help="data root to create (default: a new temporary folder)")
    stress.add_argument("--seed", type=int, default=1, help="seed of sources and faults")
    stress.add_argument(
        "--time-scale", type=float, default=0.001, help="multiply every interval (default 0.001)"
    )
    stress.add_argument(
        "--concurrency", type=int, default=64, help="packages in flight at once (default 64)"
    )
    stress.add_argument("--no-faults", action="store_true", help="inject no fault")
    stress.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one operation may take"
    )
    stress.add_argument("--json", action="store_true", help="one JSON object, no progress")
    bench = commands.add_parser(
        "bench",
        help="run a benchmark of the source checkout (python -m bench NAME [--json] [ARGS])",
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, metavar="NAME [ARGS]")
    return parser


def _hierarchy_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--hierarchy",
        "--config",
        dest="hierarchy",
        help="hierarchy file (default: the one packaged with cmdist)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo" and (args.packages < 1 or args.scale <= 0 or args.time_scale <= 0):
        parser.error("--packages must be >= 1, --scale and --time-scale > 0")
    if args.command == "stress" and (
        args.packages < 1 or args.concurrency < 1 or args.time_scale <= 0 or args.timeout <= 0
    ):
        parser.error("--packages and --concurrency must be >= 1, --time-scale and --timeout > 0")
    # no terminal (CI, a pipe): rich prints plain text; 120 columns keep the tables whole
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        code = _COMMANDS[args.command](args, console)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except (DataRootError, HierarchyConfigError, UsageError) as exc:
        return _fail(args.command, f"error: {exc}", 2)
    except CmdistError as exc:
        return _fail(args.command, f"{type(exc).__name__}: {exc}", 1)
    except Interrupted as exc:
        return _fail(args.command, f"interrupted; {exc}", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`cmdist status --json | head -1`): nothing more to say to
        # it, and Python's own flush at exit must not complain either.
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _fail(command: str, message: str, code: int) -> int:
    print(f"cmdist {command}: {message}", file=sys.stderr)
    return code


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return  # not a real file (a test's capture): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
