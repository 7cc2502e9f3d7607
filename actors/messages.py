"""The bus messages SMSDBMON emits: what the product drops as files in inboxes.

Each carries ``notification_id``, the ``TableChangeNotifications`` RowID the reference logs
in brackets (``RCV: ... [PS100039][1036623]``). IDs grow in commit order, so a consumer
that must not act twice on one notification can drop any ID it has already seen.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "PACKAGE_CHANGED_TOPIC",
    "DistributionJobNotification",
    "PackageChanged",
    "PackageNotification",
    "PullResponseNotification",
    "SmsDbMonNotification",
    "TransferStatus",
]


class PackageNotification(msgspec.Struct, frozen=True):
    """``<PkgID>.PKN`` in ``distmgr.box``: rule PkgNotify_Add, a ``PkgNotification`` row.

    ``type`` is a :class:`~actors.sitedb.NotificationType`: 2 new package, 4 DP change,
    1 package updated. DistMgr reads the package's rows to see what to do.
    """

    notification_id: int
    pkg_id: str
    type: int
    priority: int
    pkg_notification_id: int  # PkgNotification.RowID


class DistributionJobNotification(msgspec.Struct, frozen=True):
    """``<PkgID>.PKN`` in ``PkgTransferMgr.box``: rule DistributionJob_Creation.

    A ``DistributionJobs`` row was created (or put back to pending) for PkgXferMgr.
    """

    notification_id: int
    job_id: int
    pkg_id: str
    dp_id: int
    package_version: int
    action: int  # JobAction: 1 add/update, 2 redistribute


class PullResponseNotification(msgspec.Struct, frozen=True):
    """``<PkgStatusID>.PUL`` in ``distmgr.box\\incoming``: rule PullDPResponse_UpdIns.

    A pull DP's state message reached ``PullDPResponse``; DistMgr updates ``PkgStatus``
    from the row and deletes it.
    """

    notification_id: int
    pkg_status_id: int
    message_time: str
    pkg_version: int
    action_state: int
    operation: str  # "INSERT" or "UPDATE"


SmsDbMonNotification = PackageNotification | DistributionJobNotification | PullResponseNotification


class TransferStatus(msgspec.Struct, frozen=True):
    """An ``.STA`` file in ``distmgr.box\\incoming``: PkgXferMgr's status of a job on a DP.

    ``status`` is a :class:`~actors.sitedb.PkgStatusValue`: 0 when a sending thread starts,
    3 installed, 4 retrying, 5 failed, 6 removed. Sent as a request: the job is finished
    only once DistMgr has stored the status, so a crash in between repeats, never loses, it.
    """

    job_id: int
    pkg_id: str
    version: int
    dp: str  # server name
    nal_path: str
    status: int
    detail: str = ""


PACKAGE_CHANGED_TOPIC = "package_changed"
"""Where a component publishes a package ID whenever one of its ``PkgStatus`` rows changed
or the package was deleted (what ``Hierarchy.wait`` listens to)."""


class PackageChanged(msgspec.Struct, frozen=True):
    """Published by DistMgr on ``package_changed`` when a package's DP status changed or
    the package was deleted; ``Hierarchy.wait`` re-reads the status when it sees one."""

    pkg_id: str
