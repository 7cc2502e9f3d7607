"""cmdist: Configuration Manager style content distribution, as an asyncio library.

The facade::

    from actors import Hierarchy, errors

    async with Hierarchy.open(root=data_dir) as h:
        pkg = await h.create_package("Dummy1", source=src_dir, site="PS1")
        await h.distribute(pkg, ["PS1DP1.CONTOSO.COM"])
        results = await h.wait(pkg, timeout=60)

Everything else under ``actors`` is the product's components, the site database and the
command line; they are importable, but this module's names are the contract.
"""

from actors import errors
from actors._runtime import (
    CheckReport,
    ContentState,
    ContentStatus,
    Event,
    PackageStatus,
    Subscription,
    SubscriptionStatistics,
    check_root,
    read_status,
    report_lines,
)
from actors._runtime._hierarchy import DPInfo, Hierarchy, Package, SiteInfo
from actors.config import DistributionPoint, HierarchyConfig, default_hierarchy, load_hierarchy
from actors.dp import DPValidation
from actors.site.messages import TransferProgress
from actors.status import StatusMessage, describe

__all__ = [
    "CheckReport",
    "ContentState",
    "ContentStatus",
    "DPInfo",
    "DPValidation",
    "DistributionPoint",
    "Event",
    "Hierarchy",
    "HierarchyConfig",
    "Package",
    "PackageStatus",
    "SiteInfo",
    "StatusMessage",
    "Subscription",
    "SubscriptionStatistics",
    "TransferProgress",
    "check_root",
    "default_hierarchy",
    "describe",
    "errors",
    "load_hierarchy",
    "read_status",
    "report_lines",
]
