"""``python -m bench hierarchy``: packages across the hierarchy vs within one site.

N packages of 1 MiB each (half compressible text, half random bytes) are created at the
CAS and distributed to one DP at each of PS1, PS2, SS1 (through PS1) and P01: DRS, the
PCK mini-jobs, Scheduler, Sender, Despooler, then each site's DistMgr and PkgXferMgr. In
the same run the same packages are created at PS1 and distributed to its 4 DPs: the
baseline. Links are taken out of the hierarchy (this measures cmdist, not the simulated
network), time_scale 0.001 (the 120 s replication delay is 0.12 s a hop). Reported: seconds
from the first distribute to the last Installed, MB/s delivered, latency per package
(p50/p99), the bytes the senders put between sites vs the bytes of the sources, and
``ratio`` = cross-site seconds / one-site seconds.
"""

from __future__ import annotations

import argparse
import os
import random
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
_ACROSS = ("PS1DP1.CONTOSO.COM", "PS2DP1.CONTOSO.COM", "SS1DP1.CONTOSO.COM", "P01DP1.CONTOSO.COM")
_ONE_SITE = (
    "PS1DP1.CONTOSO.COM",
    "PS1DP2.CONTOSO.COM",
    "PS1SYS.CONTOSO.COM",
    "PS1SITE.CONTOSO.COM",
)
_MIB = 1024 * 1024
_WORDS = b"package content distribution point site server despooler sender scheduler".split()


def _make_sources(root: Path, packages: int, size: int) -> list[Path]:
    rng = random.Random(7)
    out = []
    for i in range(packages):
        src = root / f"pkg{i:05d}"
        src.mkdir(parents=True)
        text = bytearray()
        while len(text) < size // 2:
            text += b" ".join(rng.choice(_WORDS) for _ in range(12)) + b"\n"
        (src / "readme.txt").write_bytes(bytes(text[: size // 2]))
        (src / "payload.bin").write_bytes(os.urandom(size - size // 2))
        out.append(src)
    return out


async def _run(sources: list[Path], work: Path, site: str, dps: Sequence[str]) -> dict[str, Any]:
    config = msgspec.structs.replace(load_hierarchy(_HIERARCHY, root=work), links=())
    tracker = InstallTracker(len(dps), source_site=site)
    tracker.expected_created = tracker.expected = len(sources)
    async with Hierarchy.open(config, time_scale=0.001, shutdown_timeout=0) as h:
        async with tracking(h, tracker):
            pkgs: list[Package] = [
                await h.create_package(f"Bench{i}", src, site=site) for i, src in enumerate(sources)
            ]
            await tracker.created.wait()
            t0 = time.perf_counter()
            for pkg in pkgs:
                tracker.started[pkg.pkg_id] = time.perf_counter()
                await h.distribute(pkg, list(dps))
            await tracker.all_done.wait()
            seconds = time.perf_counter() - t0
        between = sum(s.sender.bytes_on_links for s in h.servers.values() if s.sender is not None)
        for pkg in pkgs[:3]:  # spot check: every DP holds it
            status = await h.content_status(pkg)
            assert len(status) == len(dps), status
            assert all(s.state == "Installed" for s in status), status
    lat = sorted(tracker.latency.values())
    return {
        "seconds": round(seconds, 3),
        "lat_p50_ms": round(percentile(lat, 50) * 1000, 1),
        "lat_p99_ms": round(percentile(lat, 99) * 1000, 1),
        "bytes_between_sites": between,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="cmdist-bench-", dir=args.dir))
    try:
        sources = await anyio.to_thread.run_sync(
            _make_sources, base / "src", args.packages, args.size
        )
        source_bytes = args.packages * args.size
        across = await _run(sources, base / "across", "CS1", _ACROSS)
        one = await _run(sources, base / "one", "PS1", _ONE_SITE)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    delivered = source_bytes * 4
    return {
        "packages": args.packages,
        "size": args.size,
        "source_bytes": source_bytes,
        "cross_site_s": across["seconds"],
        "cross_site_mb_s": round(delivered / across["seconds"] / 1e6, 1),
        "cross_site_lat_p50_ms": across["lat_p50_ms"],
        "cross_site_lat_p99_ms": across["lat_p99_ms"],
        "bytes_between_sites": across["bytes_between_sites"],
        "one_site_s": one["seconds"],
        "one_site_mb_s": round(delivered / one["seconds"] / 1e6, 1),
        "one_site_lat_p50_ms": one["lat_p50_ms"],
        "one_site_lat_p99_ms": one["lat_p99_ms"],
        "ratio": round(across["seconds"] / one["seconds"], 3),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hierarchy")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--packages", type=int, default=200)
    parser.add_argument("--size", type=int, default=_MIB, help="bytes per package")
    parser.add_argument("--dir", default=None, help="where to put the temporary data")
    args = parser.parse_args(list(argv))
    r = run(_main, args)
    rows = [
        ("CS1 -> PS1, PS2, SS1, P01", r["cross_site_s"], r["cross_site_mb_s"],
         r["cross_site_lat_p50_ms"], r["cross_site_lat_p99_ms"], r["bytes_between_sites"]),
        ("PS1 -> 4 DPs of PS1", r["one_site_s"], r["one_site_mb_s"],
         r["one_site_lat_p50_ms"], r["one_site_lat_p99_ms"], 0),
    ]  # fmt: skip
    emit(
        f"hierarchy: {r['packages']} x {r['size']} B packages to 4 DPs (sources"
        f" {r['source_bytes']} B); ratio cross/one = {r['ratio']}",
        ["run", "s", "MB/s", "p50 ms", "p99 ms", "bytes between sites"],
        rows,
        r,
        args.json,
    )
    return 0
