"""Helpers for content library tests: real folders with real files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def make_tree(root: Path, files: Mapping[str, bytes], mode: int = 0o644) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def listing(root: Path) -> list[tuple[str, int]]:
    """Every path under root with its size (0 for folders): compare before/after."""
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size if p.is_file() else 0)
        for p in root.rglob("*")
    )
