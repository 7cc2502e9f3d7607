"""Where things are on a server's disk: one definition for the sender and the receiver.

A site server's folder holds its content library (``SCCMContentLib``), its database and
logs; a DP's folder holds its own library and the ``SMS_DP$`` share that PkgXferMgr writes
staged files into. A site server's own DP role keeps its library in ``<server>/DP/``
beside the site's, so removing a package from that DP never touches the site's copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from actors.config import HierarchyConfig

__all__ = [
    "CONTENT_LIBRARY",
    "STAGING_SHARE",
    "content_library",
    "discard_staged",
    "dp_root",
    "staged_package",
    "staging_folder",
    "staging_name",
]

CONTENT_LIBRARY = "SCCMContentLib"
STAGING_SHARE = "SMS_DP$"


def dp_root(hierarchy: HierarchyConfig, server: str, is_site_server: bool) -> Path:
    """A DP's folder under the data root."""
    root = hierarchy.server_root(server)
    return root / "DP" if is_site_server else root


def content_library(server_folder: Path) -> Path:
    """The content library of a site server's or a DP's folder."""
    return server_folder / CONTENT_LIBRARY


def staging_folder(dp_folder: Path) -> Path:
    """A DP's ``SMS_DP$`` share: files being received, before the DP takes them."""
    return dp_folder / STAGING_SHARE


def staging_name(sha256: str, content_id: str, suffix: str = "temp") -> str:
    """``<SHA256>-<ContentID>.temp``, as the reference's "Sending file" line shows."""
    return f"{sha256}-{content_id}.{suffix}"


def discard_staged(staging: Path, pkg_id: str) -> int:
    """Delete every staged file (whole file or delta, any version) of the package in a
    DP's ``SMS_DP$``; returns how many went."""
    try:
        names = os.listdir(staging)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        if staged_package(name) == pkg_id:
            (staging / name).unlink(missing_ok=True)
            removed += 1
    return removed


def staged_package(name: str) -> str | None:
    """The package of a staged file's name (``<SHA256>-<PkgID>.<version>.temp`` or
    ``.delta``, see :func:`staging_name`); None for any other name."""
    _, dash, rest = name.partition("-")
    parts = rest.rsplit(".", 2)
    if not dash or len(parts) != 3 or parts[2] not in ("temp", "delta"):
        return None
    return parts[0]
