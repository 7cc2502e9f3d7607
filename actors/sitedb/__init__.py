"""The site database: schema and triggers, the single group-committing writer, typed queries."""

from actors.sitedb import ops
from actors.sitedb._times import product_time, refresh_time
from actors.sitedb._writer import SiteDatabaseClosed, WriteOp
from actors.sitedb.database import SMSDBMON_CONSUMER, SiteDatabase
from actors.sitedb.enums import (
    ContentAccessType,
    JobAction,
    JobState,
    NotificationType,
    PackageAction,
    PkgStatusType,
    PkgStatusValue,
    ServerAction,
    SiteType,
    UpdateMask,
    UpdateMaskEx,
)
from actors.sitedb.rows import (
    ChangeNotification,
    DistributionJobRow,
    DistributionPointRow,
    DPTransferBytesRow,
    MiniJobRow,
    PackageContentRow,
    PackageRow,
    PkgServerRow,
    PkgStatusRow,
    PullDPResponseRow,
    PullResponseDetail,
    ReplicationRecord,
    SiteRow,
    StatusMessageRow,
)
from actors.sitedb.schema import SCHEMA_VERSION, SCOPES, TableScope

__all__ = [
    "SCHEMA_VERSION",
    "SCOPES",
    "SMSDBMON_CONSUMER",
    "ChangeNotification",
    "ContentAccessType",
    "DPTransferBytesRow",
    "DistributionJobRow",
    "DistributionPointRow",
    "JobAction",
    "JobState",
    "MiniJobRow",
    "NotificationType",
    "PackageAction",
    "PackageContentRow",
    "PackageRow",
    "PkgServerRow",
    "PkgStatusRow",
    "PkgStatusType",
    "PkgStatusValue",
    "PullDPResponseRow",
    "PullResponseDetail",
    "ReplicationRecord",
    "ServerAction",
    "SiteDatabase",
    "SiteDatabaseClosed",
    "SiteRow",
    "SiteType",
    "StatusMessageRow",
    "TableScope",
    "UpdateMask",
    "UpdateMaskEx",
    "WriteOp",
    "ops",
    "product_time",
    "refresh_time",
]
