"""The bus messages SMSDBMON emits: what the product drops as files in inboxes.

Each carries ``notification_id``, the ``TableChangeNotifications`` RowID the reference logs
in brackets (``RCV: ... [PS100039][1036623]``). IDs grow in commit order, so a consumer
that must not act twice on one notification can drop any ID it has already seen.
"""

from __future__ import annotations

import msgspec

from actors.status import StatusMessage

__all__ = [
    "PACKAGE_CHANGED_TOPIC",
    "TRANSFER_PROGRESS_TOPIC",
    "CancelTransfer",
    "DistributionJobNotification",
    "MiniJobCreated",
    "PackageChanged",
    "PackageNotification",
    "PullResponseNotification",
    "SendRequest",
    "SendResult",
    "SmsDbMonNotification",
    "StatusFile",
    "TransferProgress",
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
    """The content of an ``.STA`` file in ``distmgr.box\\incoming``: PkgXferMgr's status of
    a job on a DP (see ``StatusFile``).

    ``status`` is a :class:`~actors.sitedb.PkgStatusValue`: 0 when a sending thread starts,
    3 installed, 4 retrying, 5 failed, 6 removed.

    ``bytes_full`` / ``bytes_delta`` (with an installed status): the bytes that crossed the
    DP's link for the job, whole files and deltas apart, over every try of it (a resumed
    send counts what each try moved, so after a cut the sum can pass the files' size).
    DistMgr stores them with the status, in the same commit (``DPTransferBytes``).
    """

    job_id: int
    pkg_id: str
    version: int
    dp: str  # server name
    nal_path: str
    status: int
    detail: str = ""
    bytes_full: int = 0
    bytes_delta: int = 0


class StatusFile(msgspec.Struct, frozen=True):
    """An ``.STA`` file dropped in ``distmgr.box\\incoming`` (the file's path): a request,
    answered once DistMgr has stored the status and deleted the file. A file a crash left
    unprocessed is taken at DistMgr's next start.

    ``status``: what the sender wrote in the file, so that DistMgr need not read it back
    (None: DistMgr reads the file). ``messages``: the sender's status messages about it
    (8200 / 8210), stored in DistMgr's commit before its own (one commit per final status,
    not two); the sender logs them. A file a crash left carries none."""

    path: str
    status: TransferStatus | None = None
    messages: tuple[StatusMessage, ...] = ()


PACKAGE_CHANGED_TOPIC = "package_changed"
"""Where a component publishes a package ID whenever one of its ``PkgStatus`` rows changed
or the package was deleted (what ``Hierarchy.wait`` listens to)."""


class PackageChanged(msgspec.Struct, frozen=True):
    """Published by DistMgr on ``package_changed`` when a package's DP status changed or
    the package was deleted; ``Hierarchy.wait`` re-reads the status when it sees one."""

    pkg_id: str


TRANSFER_PROGRESS_TOPIC = "transfer_progress"
"""Where PkgXferMgr publishes :class:`TransferProgress` while it sends a job's files."""


class TransferProgress(msgspec.Struct, frozen=True):
    """How far a job's send to a DP has got: one growing bar per DP and package version.

    ``bytes_total`` is what the job sends over the link (every file of the version it
    sends, each whole or as its delta); ``bytes_sent`` how much of it is on the DP's side,
    never decreasing, equal to ``bytes_total`` in the job's last event. A file that turns
    out to go as a delta (smaller than the file) lowers ``bytes_total`` when its delta is
    computed; a file sent again (a damaged copy mended) raises it. ``delta``: the bytes
    moving now are a delta. A retried job starts a new bar; bytes a cut try left staged
    count as sent from its first event on.

    Published at most once per ``PkgXferMgr.progress_interval`` clock seconds per job, and
    always for its first and last chunk. Publishing never waits for a ``"drop_oldest"``
    subscriber; a ``"block"`` subscriber whose buffer is full holds the send until it reads
    (backpressure it chose).
    """

    pkg_id: str
    version: int
    dp: str  # the DP's plain server name, PS1DP1.CONTOSO.COM
    bytes_sent: int
    bytes_total: int
    delta: bool


class CancelTransfer(msgspec.Struct, frozen=True):
    """Ask ``<SITE>/PkgXferMgr`` to stop the package's transfer to a DP (``dp``: its server
    name) and cancel its pending and retrying jobs there. The answer is a ``bool``: True if
    something was cancelled. Once answered, the DP holds what it held before the job and
    its status is final (see ``PkgXferMgr.cancel_transfer``)."""

    pkg_id: str
    dp: str


class MiniJobCreated(msgspec.Struct, frozen=True):
    """To ``<SITE>/Scheduler``: a mini-job row to turn into a send request (the product
    drops a ``.JOB`` file into ``schedule.box``)."""

    job_id: int


class SendRequest(msgspec.Struct, frozen=True):
    """From the scheduler to ``<SITE>/Sender``: send the package file and its instruction
    into the destination site's ``despoolr.box/receive``. The answer is a
    :class:`SendResult`."""

    send_request_id: str
    pkg_id: str
    version: int
    dest_site: str
    priority: int
    package_file: str  # the local PCK
    instruction_file: str  # the local .Icl


class SendResult(msgspec.Struct, frozen=True):
    ok: bool
    bytes_on_link: int  # what crossed the link for this request, every try included
    seconds: float  # clock seconds from the first try to the end
    reason: str = ""
