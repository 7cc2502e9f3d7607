"""The composition root: site servers, the running Hierarchy, reading a data root."""

from actors._runtime._check import (
    Checked,
    CheckReport,
    Problem,
    ProblemKind,
    check_root,
    report_lines,
)
from actors._runtime._content_status import (
    ContentState,
    ContentStatus,
    HeldVersion,
    dp_content_status,
    held_on_disk,
)
from actors._runtime._hierarchy import DPInfo, Hierarchy, Package, SiteInfo
from actors._runtime._read_status import PackageStatus, read_status, site_databases
from actors._runtime._subscription import Event, Subscription, SubscriptionStatistics

__all__ = [
    "CheckReport",
    "Checked",
    "ContentState",
    "ContentStatus",
    "DPInfo",
    "Event",
    "HeldVersion",
    "Hierarchy",
    "Package",
    "PackageStatus",
    "Problem",
    "ProblemKind",
    "SiteInfo",
    "Subscription",
    "SubscriptionStatistics",
    "check_root",
    "dp_content_status",
    "held_on_disk",
    "read_status",
    "report_lines",
    "site_databases",
]
