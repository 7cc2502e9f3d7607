"""Where things are on a server's disk: one definition for the sender and the receiver.

A site server's folder holds its content library (``SCCMContentLib``), its database and
logs; a DP's folder holds its own library and the ``SMS_DP$`` share that PkgXferMgr writes
staged files into. A site server's own DP role keeps its library in ``<server>/DP/``
beside the site's, so removing a package from that DP never touches the site's copy.
"""

from __future__ import annotations

from pathlib import Path

from actors.config import HierarchyConfig

__all__ = [
    "CONTENT_LIBRARY",
    "STAGING_SHARE",
    "content_library",
    "dp_root",
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
