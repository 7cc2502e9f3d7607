"""What tests and embedders need to drive a hierarchy: source trees, link settings, probes.

Nothing here is used by the product itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from actors._runtime import Hierarchy

__all__ = ["instant_links", "read_tree", "write_tree"]


def write_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (posix relative path -> bytes) under ``root``; returns ``root``."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by posix relative path (what ``extract`` is compared to)."""
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def instant_links(h: Hierarchy, site: str, *, except_dp: str | None = None) -> None:
    """Make a site's links to its DPs instant (no latency, no bandwidth limit): under a
    ``ManualClock`` only the waits a test means (retry delays, one slow link) then wait for
    the clock."""
    for name, link in h.servers[site].links.items():
        if name != except_dp:
            link.latency, link.bandwidth = 0.0, None
