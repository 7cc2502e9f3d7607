"""``python -m bench ingest [--json] [--size MIB] [--dir DIR]``: content library snapshot
of a generated tree of mixed file sizes, against two baselines measured in the same run:
bare ``hashlib.sha256`` over the same bytes (the CPU side, no disk writes) and ``cp -a`` of
the same tree followed by ``sync`` (the disk side: what copying the bytes durably costs,
without hashing). ``ratio`` is against SHA-256, ``copy_ratio`` against ``cp -a`` + ``sync``."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

from bench._report import emit
from bench._trees import write_mixed_tree
from contentlib import ContentLibrary

_BUF = 4 << 20


def _sha256_tree(files: list[Path]) -> tuple[float, int]:
    """The baseline: one thread, big buffers, every file hashed in order."""
    buf = bytearray(_BUF)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                total += n
        h.hexdigest()
    return time.perf_counter() - t0, total


def _copy_tree(src: Path, dest: Path) -> float:
    """The disk baseline: ``cp -a`` of the tree, then ``sync`` (the snapshot's data is on
    disk when it returns too); the copy is deleted afterwards, outside the timing."""
    os.sync()  # nothing of earlier steps left to write back inside the measurement
    t0 = time.perf_counter()
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    os.sync()
    took = time.perf_counter() - t0
    shutil.rmtree(dest)
    os.sync()
    return took


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench ingest")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--size", type=int, default=1024, help="tree size in MiB (default 1024)")
    ap.add_argument("--dir", type=Path, default=None, help="where to generate (default /tmp)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cmdist-ingest-", dir=args.dir))
    try:
        src = work / "src"
        write_mixed_tree(src, args.size << 20)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        os.sync()  # the generated tree's writeback must not land inside either measurement
        _sha256_tree(files)  # warm the page cache: both sides read from memory
        base1, total = _sha256_tree(files)

        async def ingest() -> tuple[float, int, int]:
            lib = await ContentLibrary.open(work / "lib")
            os.sync()
            t0 = time.perf_counter()
            rep = await lib.snapshot("CS100001", src, "CS100001.1")
            return time.perf_counter() - t0, rep.bytes_read, rep.bytes_stored

        copy1 = _copy_tree(src, work / "copy")
        took, read, stored = anyio.run(ingest)
        copy2 = _copy_tree(src, work / "copy")
        copy_s = min(copy1, copy2)  # the faster copy: the ratio errs against us
        base2, _ = _sha256_tree(files)
        base = min(base1, base2)  # the faster baseline: the ratio errs against us
        sha_mb_s = total / base / 1e6
        ingest_mb_s = read / took / 1e6
        result = {
            "bytes": total,
            "files": len(files),
            "bytes_stored": stored,
            "ingest_s": round(took, 3),
            "sha256_s": round(base, 3),
            "ingest_mb_s": round(ingest_mb_s, 1),
            "sha256_mb_s": round(sha_mb_s, 1),
            "ratio": round(ingest_mb_s / sha_mb_s, 3),
            "cp_sync_s": round(copy_s, 3),
            "cp_sync_mb_s": round(total / copy_s / 1e6, 1),
            "copy_ratio": round(copy_s / took, 3),
        }
        emit(
            f"ingest: snapshot of {total / 2**20:,.0f} MiB in {len(files)} files",
            ["side", "seconds", "MB/s"],
            [
                ["hashlib.sha256 (1 thread)", base, sha_mb_s],
                ["cp -a + sync", copy_s, total / copy_s / 1e6],
                ["ContentLibrary.snapshot", took, ingest_mb_s],
                ["ratio to sha256", "", result["ratio"]],
                ["ratio to cp -a + sync", "", result["copy_ratio"]],
            ],
            result,
            args.json,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0
