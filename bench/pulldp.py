"""``python -m bench pulldp [--json] [--small N] [--large N] [--large-mib M]``: packages to
the pull DP P01PDP1 over HTTP, against plain file copies of the same bytes, and the bytes an
update fetches (RDC: signature + missing chunks) against rsync's on the same change.

Every package is created at P01 and first installed on its source DP P01DP1; then all are
distributed to P01PDP1 (links removed: the figures are the HTTP path's, not a simulated
bandwidth's). ``http_mb_s`` is the large packages' bytes over the time from their
distribution to their Installed status (notification, downloads, hash checks, single
instancing and the state message included); ``copy_mb_s`` is ``shutil.copyfile`` + fsync
of the same files in the same run (the pull DP's library makes its files durable too).
The update changes three 4 KiB regions of the first large
file; ``update_bytes`` is every byte of the update's HTTP requests and responses on the
pull DP's side (request lines, headers and bodies: the signature rounds and the ranges),
``rsync_bytes`` rsync's ``Total bytes sent`` + ``received`` (its block checksums travel
too, as our signatures do) for the same old and new folders.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors import Hierarchy, Package
from actors.config import load_hierarchy
from bench._report import emit
from bench.delta import _ensure_rsync, _generated, _wheel_case

_HIERARCHY = Path(__file__).resolve().parents[1] / "hierarchy.toml"
SITE, DP, PULL = "P01", "P01DP1.CONTOSO.COM", "P01PDP1.CONTOSO.COM"
MIB = 1 << 20


def _sources(root: Path, count: int, size: int, prefix: str) -> list[Path]:
    rng = random.Random(size + count)
    out = []
    for i in range(count):
        folder = root / f"{prefix}{i:03d}"
        folder.mkdir(parents=True)
        (folder / "payload.bin").write_bytes(rng.randbytes(size))
        out.append(folder)
    return out


def _copy_baseline(files: list[Path], dest: Path) -> float:
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        copy = dest / f"{i}.bin"
        shutil.copyfile(f, copy)
        with open(copy, "rb") as done:  # durable, as the pull DP's library makes its files
            os.fsync(done.fileno())
    return time.perf_counter() - t0


def _rsync_bytes(old: Path, new: Path, work: Path) -> int | None:
    rsync = _ensure_rsync()
    if rsync is None:
        return None
    dest = work / "rsync-dest"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(old, dest)
    out = subprocess.run(
        [
            rsync,
            "-a",
            "--no-whole-file",
            "-z",
            "--compress-choice=zstd",
            "--stats",
            f"{new}/",
            f"{dest}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = 0
    for label in ("sent", "received"):
        m = re.search(rf"Total bytes {label}: ([\d,.]+)", out)
        if m is None:
            raise RuntimeError(f"rsync printed no 'Total bytes {label}':\n{out}")
        total += int(m.group(1).replace(",", "").replace(".", ""))
    return total


async def _to_pull(h: Hierarchy, pkgs: list[Package]) -> float:
    t0 = time.perf_counter()
    for pkg in pkgs:
        await h.distribute(pkg, [PULL])
    for pkg in pkgs:
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=3600)}
        if status.get(PULL) != "Installed":
            raise RuntimeError(f"{pkg.pkg_id} on {PULL}: {status}")
    return time.perf_counter() - t0


async def _update_cases(h: Hierarchy, work: Path, wheel: bool) -> list[dict[str, Any]]:
    """The delta bench's cases (and its real release pair) as pull DP updates: the old tree
    installed on P01PDP1, then updated to the new one; the bytes that crossed the HTTP path
    against rsync's (sent + received) for the same pair."""
    pairs = _generated(work / "gen")
    if wheel and (release := await anyio.to_thread.run_sync(_wheel_case)) is not None:
        pairs.append(release)
    agent = h.servers[SITE].pull_dps[PULL]
    cases = []
    for name, old, new in pairs:
        src = work / "cases" / name
        shutil.copytree(old, src)
        pkg = await h.create_package(name, source=src, site=SITE)
        await h.distribute(pkg, [DP, PULL])
        status = {s.dp: s.state for s in await h.wait(pkg, timeout=3600)}
        if status.get(PULL) != "Installed":
            raise RuntimeError(f"{name} on {PULL}: {status}")
        shutil.rmtree(src)
        shutil.copytree(new, src)
        before = agent.wire_bytes
        await h.update(pkg)
        final = {s.dp: (s.state, s.version) for s in await h.wait(pkg, timeout=3600)}
        if final.get(PULL) != ("Installed", 2):
            raise RuntimeError(f"update of {name} on {PULL}: {final}")
        update = agent.wire_bytes - before
        rsync = await anyio.to_thread.run_sync(_rsync_bytes, old, new, work / "rs" / name)
        cases.append(
            {
                "name": name,
                "update_bytes": update,
                "rsync_bytes": rsync,
                "vs_rsync": None if not rsync else round(update / rsync, 3),
            }
        )
    return cases


async def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    small = _sources(work / "src", args.small, MIB, "small")
    large = _sources(work / "src", args.large, args.large_mib * MIB, "large")
    copy_s = await anyio.to_thread.run_sync(
        _copy_baseline, [d / "payload.bin" for d in large], work / "copies"
    )
    large_bytes = args.large * args.large_mib * MIB
    config = msgspec.structs.replace(load_hierarchy(_HIERARCHY, root=work / "data"), links=())
    update_bytes = rsync_bytes = None
    cases: list[dict[str, Any]] = []
    async with Hierarchy.open(config, time_scale=0.001) as h:
        pkgs = [await h.create_package(d.name, source=d, site=SITE) for d in (*small, *large)]
        for pkg in pkgs:
            await h.distribute(pkg, [DP])
        for pkg in pkgs:
            await h.wait(pkg, timeout=3600)
        small_s = await _to_pull(h, pkgs[: len(small)]) if small else 0.0
        large_s = await _to_pull(h, pkgs[len(small) :]) if large else 0.0
        agent = h.servers[SITE].pull_dps[PULL]
        if large:
            # The update: three 4 KiB regions of the first large file change.
            target = large[0] / "payload.bin"
            old = work / "old"
            shutil.copytree(large[0], old)
            data = bytearray(target.read_bytes())
            rng = random.Random(99)
            for at in (len(data) // 5, len(data) // 2, 4 * len(data) // 5):
                data[at : at + 4096] = rng.randbytes(4096)
            target.write_bytes(bytes(data))
            before = agent.wire_bytes
            await h.update(pkgs[len(small)])
            final = await h.wait(pkgs[len(small)], timeout=3600)
            status = {s.dp: (s.state, s.version) for s in final}
            if status.get(PULL) != ("Installed", 2):
                raise RuntimeError(f"update on {PULL}: {status}")
            update_bytes = agent.wire_bytes - before
            rsync_bytes = await anyio.to_thread.run_sync(_rsync_bytes, old, large[0], work)
        if args.cases:
            cases = await _update_cases(h, work, args.wheel)
    http = large_bytes / MIB / large_s if large else None
    copy = large_bytes / MIB / copy_s if large else None
    return {
        "small_packages": args.small,
        "small_pkgs_s": args.small / small_s if small else None,
        "small_mb_s": args.small * MIB / MIB / small_s if small else None,
        "large_packages": args.large,
        "large_mib": args.large_mib,
        "http_mb_s": http,
        "copy_mb_s": copy,
        "ratio": http / copy if http and copy else None,
        "update_bytes": update_bytes,
        "rsync_bytes": rsync_bytes,
        "update_vs_rsync": None
        if not rsync_bytes or update_bytes is None
        else update_bytes / rsync_bytes,
        "cases": cases,
        "update_le_rsync_everywhere": all(
            c["rsync_bytes"] is None or c["update_bytes"] <= c["rsync_bytes"] for c in cases
        )
        and (rsync_bytes is None or update_bytes is None or update_bytes <= rsync_bytes),
    }


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench pulldp")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--small", type=int, default=100, help="1 MiB packages (default 100)")
    ap.add_argument("--large", type=int, default=2, help="large packages (default 2)")
    ap.add_argument("--large-mib", type=int, default=100, help="size of each large one")
    ap.add_argument(
        "--no-cases", dest="cases", action="store_false", help="skip the delta bench's cases"
    )
    ap.add_argument(
        "--no-wheel", dest="wheel", action="store_false", help="skip the real release pair"
    )
    args = ap.parse_args(list(argv))
    with tempfile.TemporaryDirectory(prefix="cmdist-bench-pulldp-") as tmp:
        result = anyio.run(_run, args, Path(tmp))
    rows = [
        [
            "small (1 MiB) to pull DP",
            f"{result['small_pkgs_s'] or 0:.1f} pkg/s",
            result["small_mb_s"],
        ],
        ["large over HTTP", f"{args.large} x {args.large_mib} MiB", result["http_mb_s"]],
        ["plain file copy", "same bytes", result["copy_mb_s"]],
        ["ratio http / copy", "", result["ratio"]],
        ["update bytes (RDC)", "", result["update_bytes"]],
        ["rsync bytes (sent+received)", "", result["rsync_bytes"] or "n/a"],
    ]
    for c in result["cases"]:
        rows.append(
            [f"update {c['name']}", f"rsync {c['rsync_bytes'] or 'n/a'}", c["update_bytes"]]
        )
    emit("pull DP over HTTP", ["case", "", "MB/s or bytes"], rows, result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
