"""``python -m bench delta [--json] [--old DIR --new DIR]``: bytes an update moves (DLT size)
vs the full PCK and vs rsync on the same pair of folders.

Cases: generated edits (scattered small overwrites, an insertion near the start that shifts
everything, one changed region), two releases of a real wheel (rich 13.6.0 -> 13.7.0,
fetched with pip into ~/.cache/cmdist-bench), and any --old/--new pair given. rsync runs as
``rsync -a --delete --no-whole-file -z --compress-choice=zstd --stats NEW/ DEST/`` with DEST a
copy of OLD; if rsync is missing and we are root it is installed with apt-get, else
``rsync_bytes`` is null.
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
import zipfile
from pathlib import Path
from typing import Any

import anyio

from bench._report import emit
from bench._trees import binary, text
from contentlib import ContentLibrary

_WHEEL = ("rich", "13.6.0", "13.7.0")
_T0 = 1_700_000_000  # fixed mtime of generated files
_CACHE = Path.home() / ".cache" / "cmdist-bench"


def _ensure_rsync() -> str | None:
    if shutil.which("rsync") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-qq", "rsync"]
        if subprocess.call(install, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            subprocess.call(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
            subprocess.call(install, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which("rsync")


def _rsync_args(rsync: str) -> list[str]:
    return [rsync, "-a", "--delete", "--no-whole-file", "-z", "--compress-choice=zstd", "--stats"]


def _rsync(rsync: str | None, old: Path, new: Path, work: Path) -> tuple[int | None, float]:
    if rsync is None:
        return None, 0.0
    dest = work / "rsync-dest"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(old, dest)
    t0 = time.perf_counter()
    out = subprocess.run(
        [*_rsync_args(rsync), f"{new}/", f"{dest}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    took = time.perf_counter() - t0
    m = re.search(r"Total bytes sent: ([\d,.]+)", out)
    if m is None:
        raise RuntimeError(f"rsync printed no 'Total bytes sent':\n{out}")
    return int(m.group(1).replace(",", "").replace(".", "")), took


def _generated(root: Path) -> list[tuple[str, Path, Path]]:
    """A base tree (text and binary files, ~24 MiB) and three edited copies of it."""
    rng = random.Random(7)
    base = root / "base"
    files: dict[str, bytes] = {
        f"docs/page{i:02d}.txt": text(rng, rng.randint(2_000, 60_000)) for i in range(40)
    }
    files |= {
        f"bin/mod{i:02d}.dll": binary(rng, rng.randint(100_000, 1_500_000)) for i in range(12)
    }
    files["setup.exe"] = binary(rng, 8 << 20)
    files["data/big.cab"] = binary(rng, 6 << 20)
    _write(base, files)

    def variant(name: str, edit: dict[str, bytes]) -> tuple[str, Path, Path]:
        _write(root / name, files | edit)
        for rel in edit:  # edited files look edited to rsync's size+mtime quick check
            os.utime(root / name / rel, (_T0 + 3600, _T0 + 3600))
        return name, base, root / name

    scattered = {}
    for rel in sorted(files)[::3]:
        data = bytearray(files[rel])
        for _ in range(4):
            at = rng.randrange(len(data))
            data[at : at + 16] = rng.randbytes(16)
        scattered[rel] = bytes(data)
    exe = files["setup.exe"]
    region = rng.randrange(len(exe) - (256 << 10))
    return [
        variant("scattered_overwrites", scattered),
        variant("insert_near_start", {"setup.exe": exe[:100] + rng.randbytes(777) + exe[100:]}),
        variant(
            "changed_region",
            {"setup.exe": exe[:region] + rng.randbytes(256 << 10) + exe[region + (256 << 10) :]},
        ),
    ]


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (_T0, _T0))


def _wheel_case() -> tuple[str, Path, Path] | None:
    name, old_v, new_v = _WHEEL
    dirs = []
    for v in (old_v, new_v):
        target = _CACHE / f"{name}-{v}"
        if not target.exists():
            wheels = _CACHE / "wheels"
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary"]
            cmd += [":all:", "-d", str(wheels), f"{name}=={v}"]
            if subprocess.call(cmd) != 0:
                return None
            wheel = next(wheels.glob(f"{name}-{v}-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                z.extractall(target)
        dirs.append(target)
    return f"wheel_{name}_{old_v}_to_{new_v}", dirs[0], dirs[1]


async def _ours(old: Path, new: Path, work: Path) -> tuple[int, int, float]:
    lib = ContentLibrary(work / "lib")
    await lib.snapshot("CS100001", old, "CS100001.1")
    await lib.snapshot("CS100001", new, "CS100001.2")
    await lib.write_pck("CS100001.2", work / "full.PCK")
    t0 = time.perf_counter()
    await lib.write_dlt("CS100001.1", "CS100001.2", work / "update.DLT")
    took = time.perf_counter() - t0
    # the DLT must rebuild the new version exactly on a library holding only the old one
    dp = ContentLibrary(work / "dp")
    await lib.write_pck("CS100001.1", work / "old.PCK")
    await dp.add_from_pck(work / "old.PCK")
    assert (await dp.add_from_dlt(work / "update.DLT")) == lib.manifest("CS100001.2")
    return (work / "update.DLT").stat().st_size, (work / "full.PCK").stat().st_size, took


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench delta")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--old", type=Path)
    ap.add_argument("--new", type=Path)
    args = ap.parse_args(argv)
    rsync = _ensure_rsync()
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cmdist-delta-") as tmp:
        pairs = _generated(Path(tmp) / "gen")
        if (wheel := _wheel_case()) is not None:
            pairs.append(wheel)
        if args.old and args.new:
            pairs.append(("given", args.old, args.new))
        for name, old, new in pairs:
            work = Path(tmp) / f"run-{name}"
            work.mkdir()
            delta, full, took = anyio.run(_ours, old, new, work)
            rs, rs_took = _rsync(rsync, old, new, work)
            cases.append(
                {
                    "name": name,
                    "delta_bytes": delta,
                    "full_bytes": full,
                    "rsync_bytes": rs,
                    "delta_s": round(took, 3),
                    "rsync_s": round(rs_took, 3),
                    "vs_rsync": round(delta / rs, 3) if rs else None,
                }
            )
    wins = all(c["rsync_bytes"] is None or c["delta_bytes"] <= c["rsync_bytes"] for c in cases)
    result = {
        "cases": cases,
        "rsync": rsync is not None,
        "delta_le_rsync_everywhere": wins,
        "method": "zstd with the old file as raw-content dictionary; copy/literal beyond 64 MiB",
    }
    emit(
        "delta: bytes an update moves (DLT) vs full PCK vs rsync"
        + ("" if rsync else " (rsync not installed: rsync_bytes null)"),
        ["case", "DLT bytes", "PCK bytes", "rsync bytes", "DLT/rsync", "DLT s", "rsync s"],
        [
            [
                c["name"],
                c["delta_bytes"],
                c["full_bytes"],
                c["rsync_bytes"] or "n/a",
                c["vs_rsync"] or "n/a",
                c["delta_s"],
                c["rsync_s"],
            ]
            for c in cases
        ],
        result,
        args.json,
    )
    return 0
