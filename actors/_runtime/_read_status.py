"""Content status of a data root a run left behind, read without starting the hierarchy,
and the table both ``cmdist status`` and ``cmdist demo`` print.

Nothing here writes: the site databases are opened read-only (never created, migrated or
seeded; a damaged or empty one is an error naming it) and each DP's content library is
read from its DataLib manifests, not opened as a
:class:`~contentlib.ContentLibrary` (that would clean the library's temp folder under a
run that may still be going).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from actors._runtime._content_status import ContentStatus, dp_content_status, held_on_disk
from actors.config import HierarchyConfig, Site
from actors.errors import DataRootError
from actors.sitedb import SiteDatabase

__all__ = ["PackageStatus", "read_status", "site_databases"]


class PackageStatus(msgspec.Struct, frozen=True):
    """One package and the content status of every DP it targets, by DP name."""

    pkg_id: str
    name: str
    site: str
    version: int  # the site's current version of the package (StoredPkgVersion)
    dps: tuple[ContentStatus, ...]

    @property
    def installed(self) -> bool:
        """Installed at the current version on every targeted DP."""
        return bool(self.dps) and all(
            d.state == "Installed" and d.version == self.version for d in self.dps
        )


def site_databases(config: HierarchyConfig) -> list[tuple[Site, Path]]:
    """Each site with a database under the hierarchy's data root (a file there, sound or
    not: opening it says); ``DataRootError`` when there is none."""
    root = config.data_root
    if not root.is_dir():
        raise DataRootError(f"data root {root} does not exist (or is not a folder)")
    found = [
        (site, path)
        for site in config.sites
        if (path := config.server_root(site.server) / "site.db").exists()
    ]
    if not found:
        servers = ", ".join(s.server for s in config.sites)
        raise DataRootError(
            f"data root {root} holds no site database: expected <root>/<site server>/site.db"
            f" for one of {servers} (hierarchy {config.file})"
        )
    return found


async def read_status(config: HierarchyConfig) -> list[PackageStatus]:
    """Every package of every site database under the data root, by package ID: its
    version as its source site stores it, and each site's own DPs (DRS copies a package
    row to every site; only the source site's row says which version is current)."""
    out: dict[str, PackageStatus] = {}
    held = held_on_disk(config)
    for site, path in site_databases(config):
        async with SiteDatabase.open(path, read_only=True) as db:
            for pkg in await db.packages():
                dps = await dp_content_status(db, pkg.pkg_id, site.code, held)
                seen = out.get(pkg.pkg_id)
                version = pkg.stored_pkg_version
                if seen is not None:  # the package as another site sees it: its own DPs
                    dps = tuple(sorted({*seen.dps, *dps}, key=lambda d: d.dp))
                    if pkg.source_site != site.code:
                        version = seen.version
                out[pkg.pkg_id] = PackageStatus(pkg.pkg_id, pkg.name, pkg.source_site, version, dps)
    return [out[k] for k in sorted(out)]
