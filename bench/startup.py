"""``python -m bench startup [--packages N] [--json] [--dir DIR]``: opening a data root
whose content libraries hold N packages each, and what it does to the event loop.

The root is made by a first, empty run of the hierarchy (the site databases), then every
content library a site server opens (its own and each standard DP's) gets N one-file
packages written straight to disk (FileLib, DataLib, PkgLib). Timed, twice:
``Hierarchy.start`` to ready on that root (``unclean``: no library was closed cleanly, so
every manifest is read and checked, as after a crash), then, after a clean close, the
restart (``open_s``: what a service restarted with that many packages waits for). Each
while a ticker task on the same loop asks to wake every millisecond; its longest gap is
how long the loop was blocked. The baselines, in the same run: reading every manifest file
of those libraries (no decode) with one thread, i.e. what the disk and the page cache
alone cost; and the ticker's longest gap for 3 s with nothing else on the loop (what the
machine's load alone does to it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec

from actors import Hierarchy
from actors.config import HierarchyConfig, load_hierarchy
from actors.dp import content_library, dp_root
from bench._report import emit
from bus import run
from contentlib import FileEntry
from contentlib._model import PkgEntry, make_manifest

_HIERARCHY = Path(__file__).resolve().parent.parent / "hierarchy.toml"


def _libraries(config: HierarchyConfig) -> list[Path]:
    """Every content library a site server opens: its own and its standard DPs'."""
    out = []
    for site in config.sites:
        out.append(content_library(config.server_root(site.server)))
        for dp in config.dps_of(site.code):
            if not dp.pull:
                is_server = dp.name.upper() == site.server.upper()
                out.append(content_library(dp_root(config, dp.name, is_server)))
    return sorted(set(out))


def _fill(libraries: list[Path], packages: int, site_code: str) -> int:
    """N one-file packages in each library (files hard-linked from the first); bytes of
    manifests written per library."""
    first = libraries[0]
    manifest_bytes = 0
    for lib in libraries:
        for d in ("FileLib", "DataLib", "PkgLib"):
            (lib / d).mkdir(parents=True, exist_ok=True)
    for i in range(packages):
        pkg_id = f"{site_code}{i + 1:05X}"
        data = f"package {pkg_id}\n".encode() * 8
        sha = hashlib.sha256(data).hexdigest().upper()
        cid = f"{pkg_id}.1"
        manifest = msgspec.json.encode(
            make_manifest(cid, pkg_id, 1, [FileEntry("setup/readme.txt", len(data), sha, 0o644)])
        )
        entry = msgspec.json.encode(PkgEntry(pkg_id, (cid,)))
        manifest_bytes += len(manifest)
        src = first / "FileLib" / sha[:4] / sha
        for lib in libraries:
            target = lib / "FileLib" / sha[:4] / sha
            target.parent.mkdir(exist_ok=True)
            if lib == first:
                target.write_bytes(data)
            else:
                os.link(src, target)
            (lib / "DataLib" / f"{cid}.json").write_bytes(manifest)
            (lib / "PkgLib" / f"{pkg_id}.json").write_bytes(entry)
    return manifest_bytes


def _read_all(libraries: list[Path]) -> float:
    t0 = time.perf_counter()
    for lib in libraries:
        for path in (lib / "DataLib").glob("*.json"):
            path.read_bytes()
    return time.perf_counter() - t0


T = TypeVar("T")


async def _ticking(work: Awaitable[T]) -> tuple[float, T]:
    """Await work while a ticker on the same loop asks to wake every millisecond: the
    longest the loop was blocked (seconds), and work's result."""
    lag = 0.0
    done = anyio.Event()

    async def ticker() -> None:
        nonlocal lag
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = time.perf_counter()
            lag = max(lag, now - last - 0.001)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.01)
        result = await work
        done.set()
    return lag, result


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="cmdist-startup-", dir=args.dir))
    try:
        config = msgspec.structs.replace(load_hierarchy(_HIERARCHY, root=base / "data"), links=())
        async with Hierarchy.open(config, time_scale=0.001):
            pass  # the databases of a first run
        libraries = _libraries(config)
        await anyio.to_thread.run_sync(_fill, libraries, args.packages, "PS1")
        await anyio.to_thread.run_sync(os.sync)
        read_s = await anyio.to_thread.run_sync(_read_all, libraries)  # also warms the cache
        idle_lag, _ = await _ticking(anyio.sleep(3))
        t0 = time.perf_counter()
        unclean_lag, h = await _ticking(Hierarchy.start(config, time_scale=0.001))
        unclean_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await h.aclose()
        close_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lag, h = await _ticking(Hierarchy.start(config, time_scale=0.001))
        open_s = time.perf_counter() - t0
        await h.aclose()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    total = args.packages * len(libraries)
    return {
        "packages": args.packages,
        "libraries": len(libraries),
        "manifests": total,
        "open_s": round(open_s, 3),
        "manifests_per_s": round(total / open_s),
        "max_loop_block_ms": round(lag * 1000, 1),
        "unclean_open_s": round(unclean_s, 3),
        "unclean_max_loop_block_ms": round(unclean_lag * 1000, 1),
        "close_s": round(close_s, 3),
        "idle_loop_block_ms": round(idle_lag * 1000, 1),
        "read_only_s": round(read_s, 3),
        "ratio": round(read_s / open_s, 3),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench startup")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--packages", type=int, default=10_000, help="packages per library")
    parser.add_argument("--dir", default=None, help="where to put the temporary data")
    args = parser.parse_args(list(argv))
    result = run(_main, args)
    emit(
        f"startup: open a root, {result['libraries']} libraries x {args.packages:,} packages",
        ["what", "seconds", "manifests/s", "max loop block ms"],
        [
            ["read the manifest files (1 thread)", result["read_only_s"], "", ""],
            ["nothing (the ticker alone, 3 s)", "", "", result["idle_loop_block_ms"]],
            [
                "Hierarchy.start, unclean (every manifest checked)",
                result["unclean_open_s"],
                round(result["manifests"] / result["unclean_open_s"]),
                result["unclean_max_loop_block_ms"],
            ],
            ["Hierarchy.aclose (writes the open indexes)", result["close_s"], "", ""],
            [
                "Hierarchy.start after a clean close",
                result["open_s"],
                result["manifests_per_s"],
                result["max_loop_block_ms"],
            ],
        ],
        result,
        args.json,
    )
    return 0
