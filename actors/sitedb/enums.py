"""The product's coded values stored in the site database, one IntEnum per column."""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "ContentAccessType",
    "JobAction",
    "JobState",
    "NotificationType",
    "PackageAction",
    "PkgStatusType",
    "PkgStatusValue",
    "ServerAction",
    "SiteType",
    "UpdateMask",
    "UpdateMaskEx",
]


class SiteType(IntEnum):
    """``Sites.Type``."""

    SECONDARY = 1
    PRIMARY = 2
    CAS = 4


class PackageAction(IntEnum):
    """``SMSPackages.Action``: what DistMgr must do with the package ("The Package Action is 2")."""

    NONE = 0
    UPDATE = 1  # RefreshPkgSource, or new content stored by the despooler
    ADD = 2  # a new package
    DELETE = 3  # the package is being deleted: remove it from every DP, then drop its rows


class ServerAction(IntEnum):
    """``PkgServers.Action``: what DistMgr must do with the package on that DP."""

    NONE = 0  # reset by the DP thread once the PkgXferMgr job exists
    UPDATE = 1
    ADD = 2  # AddDistributionPoints
    REMOVE = 3  # RemoveDistributionPoints ("... and Action <> 3")


class NotificationType(IntEnum):
    """``PkgNotification.Type``."""

    PACKAGE_UPDATED = 1  # SMSPackages updated (refresh, content stored, delete)
    PACKAGE_NEW = 2  # SMSPackages inserted (created here or replicated in)
    SERVER_CHANGED = 4  # PkgServers inserted or its Action / RefreshTrigger set


class JobAction(IntEnum):
    """``DistributionJobs.Action``."""

    ADD_OR_UPDATE = 1  # copy what the DP lacks ("Redistribute=0")
    REDISTRIBUTE = 2  # copy everything again ("Redistribute=1", pull DP action "redist")
    REMOVE = 5  # excluded from the pull DP capacity count ("job.Action<>5")


class JobState(IntEnum):
    """``DistributionJobs.State``. 2, 3, 4 count against a pull DP's capacity."""

    PENDING = 0
    STARTED = 1
    SENDING = 2
    NOTIFIED = 3  # pull DP told; status polling (SendAction = 'PullQueryResultAction')
    RETRYING = 4
    FAILED = 5


class PkgStatusType(IntEnum):
    """``PkgStatus.Type``: a row per site (1) and per DP (2)."""

    SITE = 1
    DP = 2


class PkgStatusValue(IntEnum):
    """``PkgStatus.Status``: the product's values (SMS_PackageStatus.Status)."""

    NONE = 0  # also "in progress": PkgXferMgr's "status 0" STA when a sending thread starts
    SENT = 1
    RECEIVED = 2  # the despooler stored the package at a site ("update PkgStatus set Status = 2")
    INSTALLED = 3  # on the DP ("Successfully updated the package server status ... Status 3")
    RETRY = 4
    FAILED = 5
    REMOVED = 6
    PENDING_REMOVE = 7


class ContentAccessType(IntEnum):
    """``ContentDPMap.AccessType``: 1 = the DP can serve the content (pull DP sources query)."""

    UNAVAILABLE = 0
    AVAILABLE = 1


class UpdateMask(IntFlag):
    """``SMSPackages.UpdateMask``: what changed in a package."""

    NONE = 0
    SOURCE = 32  # RefreshPkgSource: the source changed ("UpdateMask = 32")
    CONTENT_ARRIVED = 128  # the despooler stored new content (with SOURCE: "UpdateMask = 160")


class UpdateMaskEx(IntFlag):
    """``SMSPackages.UpdateMaskEx``: the extended mask; DistMgr consumes REFRESH_SOURCE
    when it snapshots the source, so it logs "UpdateMaskEx is 0" after 2376."""

    NONE = 0
    REFRESH_SOURCE = 0x800000  # RefreshPkgSource ("UpdateMaskEx = 8388608")
