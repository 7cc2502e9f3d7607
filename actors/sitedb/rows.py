"""Typed rows read from a site database. Field order matches the SELECTs in ``queries.py``."""

from __future__ import annotations

import msgspec

from actors.sitedb.enums import (
    JobAction,
    JobState,
    PackageAction,
    PkgStatusType,
    PkgStatusValue,
    ServerAction,
    SiteType,
)

__all__ = [
    "ChangeNotification",
    "ContentRows",
    "DPTransferBytesRow",
    "DistributionJobRow",
    "DistributionPointRow",
    "MiniJobRow",
    "PackageContentRow",
    "PackageRow",
    "PkgServerRow",
    "PkgStatusRow",
    "PullDPResponseRow",
    "PullResponseDetail",
    "ReplicationRecord",
    "SiteRow",
    "StatusMessageRow",
    "WorkLeft",
]


class SiteRow(msgspec.Struct, frozen=True):
    site_code: str
    site_name: str
    type: SiteType
    report_to_site: str
    site_server: str


class DistributionPointRow(msgspec.Struct, frozen=True):
    dp_id: int
    nal_path: str
    server_name: str
    site_code: str
    is_pull_dp: bool
    is_site_server: bool
    max_active_jobs: int | None
    priority: int = 200


class PackageRow(msgspec.Struct, frozen=True):
    pkg_id: str
    name: str
    source: str
    source_site: str
    source_version: int
    source_date: str
    stored_pkg_path: str
    stored_pkg_version: int
    hash: str
    new_hash: str
    priority: int
    pkg_flags: int
    share_type: int
    package_type: int
    update_mask: int
    update_mask_ex: int
    action: PackageAction
    source_size: int
    source_comp_size: int
    action_seq: int  # bumped by a trigger on every admin request (compare and set)


class PackageContentRow(msgspec.Struct, frozen=True):
    pkg_id: str
    content_id: str
    package_version: int
    related_content_id: str
    hash: str
    signature_hash: str
    size: int


class PkgServerRow(msgspec.Struct, frozen=True):
    pkg_id: str
    nal_path: str
    site_code: str
    site_name: str
    source_site: str
    last_refresh: str
    refresh_trigger: int
    update_mask: int
    action: ServerAction


class DistributionJobRow(msgspec.Struct, frozen=True):
    job_id: int
    dp_id: int
    pkg_id: str
    package_version: int
    state: JobState
    action: JobAction
    send_action: str | None
    creation_time: str
    last_update_time: str | None
    failure_count: int
    restart_time: str | None
    bytes_full: int = 0  # bytes earlier tries of the job sent (whole files)
    bytes_delta: int = 0  # ... and as deltas


class PkgStatusRow(msgspec.Struct, frozen=True):
    pkid: int
    pkg_id: str
    type: PkgStatusType
    site_code: str
    pkg_server: str
    status: PkgStatusValue
    update_time: str
    location: str
    share_name: str
    http_url: str
    source_version: int
    personality: int
    state: int
    sig_url: str
    sig_location: str


class PullDPResponseRow(msgspec.Struct, frozen=True):
    pkg_status_id: int
    message_time: str
    pkg_version: int
    action_state: int
    action_data: str


class PullResponseDetail(msgspec.Struct, frozen=True):
    """The reference's ``.PUL`` query: a ``PullDPResponse`` row with its DP's status row
    and the package."""

    pkg_id: str
    pkg_server: str  # the pull DP's NAL path
    site_code: str
    stored_pkg_version: int
    status: int  # PkgStatus.Status before this response
    pkg_version: int
    action_state: int
    action_data: str
    pkg_flags: int
    share_type: int
    message_time: str


class DPTransferBytesRow(msgspec.Struct, frozen=True):
    """A ``DPTransferBytes`` row: what crossed the DP's link for its latest install."""

    pkg_id: str
    nal_path: str
    version: int
    bytes_full: int
    bytes_delta: int


class ChangeNotification(msgspec.Struct, frozen=True):
    """A ``TableChangeNotifications`` row: what a trigger told SMSDBMON."""

    row_id: int
    table: str
    operation: str
    rule: str
    key: str
    key2: str
    arg1: int
    arg2: int
    arg3: int
    arg4: int


class StatusMessageRow(msgspec.Struct, frozen=True):
    """A ``StatusMessages`` row with its ``StatusMessageAttributes``."""

    record_id: int
    message_id: int
    severity: str
    component: str
    site: str
    system: str
    time: str  # ISO 8601, UTC
    strings: tuple[str, ...]
    attributes: dict[int, str]


class ContentRows(msgspec.Struct, frozen=True):
    """What a package's content status on one site's DPs is made of, read together."""

    status: tuple[PkgStatusRow, ...]  # the site's DP rows (Type 2) for the package
    servers: tuple[PkgServerRow, ...]  # the site's DPs the package targets
    busy: frozenset[int]  # DPIDs with an open job for the package
    sent: tuple[DPTransferBytesRow, ...]  # per DP, the bytes of its latest install
    percents: dict[int, int]  # per DPID, an open pull job's download percentage
    messages: dict[str, StatusMessageRow]  # per NAL path, the last message about it


class ReplicationRecord(msgspec.Struct, frozen=True):
    """One ``DrsLog`` row as it travels to a neighbouring site."""

    row_id: int  # in the sending site's log
    table: str
    operation: str  # INSERT / UPDATE / DELETE
    row_json: str
    origin: str  # the site where the change was made
    via: str  # the neighbour the sending site had it from ('' = made there)


class MiniJobRow(msgspec.Struct, frozen=True):
    """A ``MiniJobs`` row: a package file to send to a site, hop by hop."""

    job_id: int
    pkg_id: str
    version: int
    dest_site: str
    final_site: str
    transfer_root: str
    priority: int
    state: int
    send_request_id: str
    size: int
    attempts: int
    base_version: int  # a DLT from this version (0: a PCK)


class WorkLeft(msgspec.Struct, frozen=True):
    """What a site's database still holds to do, counted (a settled site: every count 0
    but ``drs_log_end``, its replication log's last RowID, for comparing with what each
    neighbour acknowledged)."""

    jobs: int  # DistributionJobs rows
    minijobs: int  # MiniJobs not complete: a package file still to send (a send request)
    pull_dp_responses: int  # PullDPResponse rows DistMgr has not processed
    requests: int  # packages with an Action, this site's DPs with an Action or RefreshTrigger
    package_files: int  # PackageFileRefs still counted (a PCK/DLT some send still needs)
    drs_log_end: int
