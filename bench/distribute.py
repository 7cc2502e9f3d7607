"""``python -m bench distribute``: packages to the DPs of one site, end to end.

N packages of one file of ``--size`` random bytes each are created on PS1 and distributed
to M of its DPs through the public API (``Hierarchy``); every received byte is
hash-verified by the DP. The baseline, in the same run, copies the same bytes with
``shutil.copyfile`` to M folders. Reported: packages/s and MB/s from the first distribute
to the last Installed, latency from a package's distribute to Installed on all M DPs
(p50/p99, under that load), and, separately, 100 single 64 KiB packages one after another
on an idle hierarchy. The links are taken out of the hierarchy: this measures cmdist, not
the simulated network. Without ``--packages``/``--size`` the issue's three cases run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import Hierarchy, Package
from actors.config import load_hierarchy
from bench._report import emit, percentile
from bench._tracker import InstallTracker, tracking
from bus import run

_HIERARCHY = Path(__file__).resolve().parent.parent / "hierarchy.toml"
_DPS = ("PS1DP1.CONTOSO.COM", "PS1DP2.CONTOSO.COM", "PS1SYS.CONTOSO.COM", "PS1SITE.CONTOSO.COM")
_KIB = 1024
_MIB = 1024 * 1024


class _Case(msgspec.Struct, frozen=True):
    name: str
    packages: int
    size: int
    dps: int


def _make_sources(root: Path, packages: int, size: int) -> list[Path]:
    out = []
    for i in range(packages):
        src = root / f"pkg{i:05d}"
        src.mkdir(parents=True)
        with open(src / "payload.bin", "wb") as f:
            left = size
            while left:
                n = min(left, 8 * _MIB)
                f.write(os.urandom(n))
                left -= n
        out.append(src)
    return out


def _baseline(sources: list[Path], dest: Path, dps: int) -> float:
    """Seconds to copy every source file to ``dps`` folders with shutil."""
    t0 = time.perf_counter()
    for d in range(dps):
        folder = dest / f"dp{d}"
        folder.mkdir(parents=True)
        for i, src in enumerate(sources):
            shutil.copyfile(src / "payload.bin", folder / f"{i}.bin")
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest)
    return elapsed


async def _run_case(case: _Case, work: Path) -> dict[str, Any]:
    sources = await anyio.to_thread.run_sync(_make_sources, work / "src", case.packages, case.size)
    copy_s = await anyio.to_thread.run_sync(_baseline, sources, work / "copies", case.dps)
    total = case.packages * case.size * case.dps
    config = msgspec.structs.replace(load_hierarchy(_HIERARCHY, root=work / "data"), links=())
    targets = list(_DPS[: case.dps])
    tracker = InstallTracker(case.dps, source_site="PS1")  # created: stored at PS1
    async with Hierarchy.open(config, time_scale=0.001) as h:
        async with tracking(h, tracker):
            tracker.expected_created = case.packages
            t_create = time.perf_counter()
            pkgs: list[Package] = []
            for i, src in enumerate(sources):
                pkgs.append(await h.create_package(f"Bench{i}", src, site="PS1"))
            await tracker.created.wait()
            create_s = time.perf_counter() - t_create
            tracker.expected = case.packages
            t0 = time.perf_counter()
            limiter = anyio.CapacityLimiter(100)

            async def distribute(pkg: Package) -> None:
                async with limiter:
                    tracker.started[pkg.pkg_id] = time.perf_counter()
                    await h.distribute(pkg, targets)

            async with anyio.create_task_group() as dtg:
                for pkg in pkgs:
                    dtg.start_soon(distribute, pkg)
            await tracker.all_done.wait()
            elapsed = time.perf_counter() - t0
        for pkg in pkgs[:3]:  # spot check: every DP reports the package installed
            status = await h.content_status(pkg)
            assert all(s.state == "Installed" for s in status), status
    lat = sorted(tracker.latency.values())
    shutil.rmtree(work, ignore_errors=True)
    return {
        "case": case.name,
        "packages": case.packages,
        "size": case.size,
        "dps": case.dps,
        "create_s": round(create_s, 3),
        "seconds": round(elapsed, 3),
        "packages_per_s": round(case.packages / elapsed, 1),
        "mb_s": round(total / elapsed / 1e6, 1),
        "lat_p50_ms": round(percentile(lat, 50) * 1000, 2),
        "lat_p99_ms": round(percentile(lat, 99) * 1000, 2),
        "copy_s": round(copy_s, 3),
        "copy_mb_s": round(total / copy_s / 1e6, 1),
        "ratio": round(copy_s / elapsed, 3),
    }


async def _idle(work: Path, count: int, dps: int) -> list[float]:
    """Distribute-to-Installed of single 64 KiB packages, one after another."""
    sources = await anyio.to_thread.run_sync(_make_sources, work / "src", count, 64 * _KIB)
    config = msgspec.structs.replace(load_hierarchy(_HIERARCHY, root=work / "data"), links=())
    targets = list(_DPS[:dps])
    out: list[float] = []
    async with Hierarchy.open(config, time_scale=0.001) as h:
        for i, src in enumerate(sources):
            pkg = await h.create_package(f"Idle{i}", src, site="PS1")
            await h.wait(pkg, timeout=30)  # snapshot taken: the hierarchy is idle again
            t0 = time.perf_counter()
            await h.distribute(pkg, targets)
            await h.wait(pkg, timeout=30)
            out.append(time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    return sorted(out)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.packages or args.size:
        cases = [
            _Case("custom", args.packages or 100, args.size or 64 * _KIB, args.dps),
        ]
    else:
        cases = [
            _Case("1000 x 64 KiB", 1000, 64 * _KIB, args.dps),
            _Case("10 x 100 MiB", 10, 100 * _MIB, args.dps),
        ]
    base = Path(tempfile.mkdtemp(prefix="cmdist-bench-", dir=args.dir))
    try:
        results = [await _run_case(c, base / f"case{i}") for i, c in enumerate(cases)]
        idle = await _idle(base / "idle", args.idle, args.dps)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    under_load = results[0]
    return {
        **{k: under_load[k] for k in ("packages_per_s", "mb_s", "lat_p50_ms", "lat_p99_ms")},
        "idle_lat_p50_ms": round(percentile(idle, 50) * 1000, 2),
        "idle_lat_p99_ms": round(percentile(idle, 99) * 1000, 2),
        "copy_mb_s": results[-1]["copy_mb_s"],
        "ratio": results[-1]["ratio"],
        "cases": results,
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench distribute")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--packages", type=int, default=0)
    parser.add_argument("--size", type=int, default=0, help="bytes per package")
    parser.add_argument("--dps", type=int, default=4, choices=range(1, len(_DPS) + 1))
    parser.add_argument("--idle", type=int, default=100, help="idle single-package runs")
    parser.add_argument("--dir", default=None, help="where to put the temporary data")
    args = parser.parse_args(list(argv))
    result = run(_main, args)
    rows = [
        (
            c["case"],
            c["dps"],
            c["seconds"],
            c["packages_per_s"],
            c["mb_s"],
            c["lat_p50_ms"],
            c["lat_p99_ms"],
            c["copy_mb_s"],
            c["ratio"],
        )
        for c in result["cases"]
    ]
    rows.append(
        (
            "idle 64 KiB",
            args.dps,
            "",
            "",
            "",
            result["idle_lat_p50_ms"],
            result["idle_lat_p99_ms"],
            "",
            "",
        )
    )
    emit(
        "distribute: packages to the DPs of site PS1, distribute -> Installed",
        ["case", "DPs", "s", "pkg/s", "MB/s", "p50 ms", "p99 ms", "copy MB/s", "ratio"],
        rows,
        result,
        args.json,
    )
    return 0
