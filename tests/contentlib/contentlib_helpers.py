"""Helpers for content library tests: real folders with real files."""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from contentlib import _fs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def make_tree(root: Path, files: Mapping[str, bytes], mode: int = 0o644) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
    return root


def listing(root: Path) -> list[tuple[str, int]]:
    """Every path under root with its size (0 for folders): compare before/after."""
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size if p.is_file() else 0)
        for p in root.rglob("*")
    )


def no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDisk:
    """A file opened for writing whose writes fail as on a full disk."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        raise no_space()

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def fill_disk(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Writes through ``open`` in contentlib._fs to files in folder fail with ENOSPC.

    The full disk is the OS, outside the system under test: only the write is faked."""
    real = builtins.open

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and "r" not in mode and Path(file).parent == folder:
            return _FullDisk(f)
        return f

    monkeypatch.setattr(_fs, "open", fake_open, raising=False)
