"""The catalog: what each status message ID means in the product, which component
raises it, and where its log goes. :data:`MESSAGES` is the one table of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

__all__ = [
    "ATTR_DP_NAL_PATH",
    "ATTR_PACKAGE_ID",
    "ATTR_PACKAGE_VERSION",
    "DATA_TRANSFER_SERVICE",
    "DESPOOLER",
    "DISTMGR",
    "DP_MONITOR",
    "DP_PROVIDER",
    "LOG_FILES",
    "MESSAGES",
    "MP_RELAY",
    "PKGXFERMGR",
    "PROVIDER",
    "PULLDP",
    "REPLICATION",
    "SCHEDULER",
    "SENDER",
    "SMSDBMON",
    "STATE_SYSTEM",
    "STATUS_TOPIC",
    "MessageInfo",
    "Severity",
]


Severity = Literal["I", "W", "E"]


STATUS_TOPIC = "status"


# Components, as the reference's log lines name them
DISTMGR = "SMS_DISTRIBUTION_MANAGER"


PKGXFERMGR = "SMS_PACKAGE_TRANSFER_MANAGER"


SENDER = "SMS_LAN_SENDER"


DESPOOLER = "SMS_DESPOOLER"


SCHEDULER = "SMS_SCHEDULER"


SMSDBMON = "SMS_DATABASE_NOTIFICATION_MONITOR"


PROVIDER = "SMS Provider"


DP_PROVIDER = "SMS_DP_PROVIDER"


PULLDP = "PullDP"


STATE_SYSTEM = "SMS_STATE_SYSTEM"


MP_RELAY = "MP_RelayEndpoint"


DATA_TRANSFER_SERVICE = "DataTransferService"  # the pull DP's downloads


DP_MONITOR = "SMS_DISTRIBUTION_POINT_MONITOR"  # content validation (smsdpmon.log)


REPLICATION = "SMS_REPLICATION_CONFIGURATION_MONITOR"  # DRS (rcmctrl.log)


LOG_FILES: Mapping[str, str] = {
    DISTMGR: "distmgr.log",
    PKGXFERMGR: "PkgXferMgr.log",
    SENDER: "sender.log",
    DESPOOLER: "despool.log",
    SCHEDULER: "sched.log",
    SMSDBMON: "smsdbmon.log",
    PROVIDER: "SMSProv.log",
    DP_PROVIDER: "SMSDPProv.log",
    PULLDP: "PullDP.log",
    STATE_SYSTEM: "statesys.log",
    MP_RELAY: "MP_Relay.log",
    DATA_TRANSFER_SERVICE: "DataTransferService.log",
    DP_MONITOR: "smsdpmon.log",
    REPLICATION: "rcmctrl.log",
}


# Attribute IDs (AIDn=...): what AVALn holds
ATTR_PACKAGE_ID = 400


ATTR_DP_NAL_PATH = 404


ATTR_PACKAGE_VERSION = 410


class MessageInfo(NamedTuple):
    severity: Severity
    component: str
    text: str  # %1..%10 are ISTR0..ISTR9
    source: Literal["reference", "documentation"] = "reference"
    """Where the ID and its meaning come from: a STATMSG line of the reference, or the
    product's documentation (the failures and content validation the reference never shows)."""


_DOC: Literal["documentation"] = "documentation"


# The product's meaning of each message ID the reference uses (and the failures that go
# with them). Texts follow the product's wording; %n is insertion string n-1.
MESSAGES: Mapping[int, MessageInfo] = {
    2300: MessageInfo(
        "I", DISTMGR, 'Distribution Manager is beginning to process package "%1" (package ID = %2).'
    ),
    2301: MessageInfo(
        "I", DISTMGR, 'Distribution Manager successfully processed package "%1" (package ID = %2).'
    ),
    2302: MessageInfo(
        "E",
        DISTMGR,
        'Distribution Manager failed to process package "%1" (package ID = %2). %3',
        _DOC,
    ),
    2306: MessageInfo(
        "E",
        DISTMGR,
        'The source directory "%2" for package "%1" does not exist or cannot be read. %3',
        _DOC,
    ),
    2311: MessageInfo(
        "I", DISTMGR, 'Distribution Manager successfully created or updated the package "%1".'
    ),
    2330: MessageInfo(
        "I",
        DISTMGR,
        'Distribution Manager successfully distributed package "%1" to distribution point "%2".',
    ),
    2332: MessageInfo(
        "I",
        DISTMGR,
        'Distribution Manager successfully removed package "%1" from distribution point "%2".',
        _DOC,
    ),
    2333: MessageInfo(
        "I",
        DISTMGR,
        'Distribution Manager is sending a compressed copy of package "%1" to site "%2".',
    ),
    2342: MessageInfo(
        "I",
        DISTMGR,
        'Distribution Manager is starting to distribute package "%1" to distribution point "%2".',
    ),
    2357: MessageInfo(
        "I",
        DISTMGR,
        'Distribution Manager instructed Package Transfer Manager to send package "%1"'
        ' to distribution point "%2".',
    ),
    2376: MessageInfo(
        "I",
        DISTMGR,
        'Distribution Manager created a snapshot of package "%1" and added its content to the'
        " content library.",
    ),
    2378: MessageInfo(
        "W",
        DISTMGR,
        'The contents of package "%1" have not arrived from site "%2" yet; Distribution Manager'
        " will retry later.",
        _DOC,
    ),
    4400: MessageInfo(
        "I",
        DESPOOLER,
        'Despooler successfully received the compressed copy of package "%1" and stored it in'
        ' "%2".',
    ),
    4404: MessageInfo(
        "W",
        DESPOOLER,
        'Despooler could not execute the instruction for package "%1" version %2 (error code'
        " %3); it will retry later.",
        _DOC,
    ),
    4405: MessageInfo(
        "E",
        DESPOOLER,
        'Despooler refused the instruction "%1" from site "%2": %3.',
        _DOC,
    ),
    8200: MessageInfo(
        "I",
        PKGXFERMGR,
        'Package Transfer Manager is beginning to send package "%1" version %2 to distribution'
        " point %3.",
    ),
    8203: MessageInfo(
        "W",
        PKGXFERMGR,
        'Package Transfer Manager failed to send package "%1" version %2 to distribution point'
        " %3 (%4); it will retry.",
        _DOC,
    ),
    8204: MessageInfo(
        "E",
        PKGXFERMGR,
        'Package Transfer Manager failed to send package "%1" version %2 to distribution point'
        " %3 (%4) and will not retry.",
        _DOC,
    ),
    # Content validation (the DP's hashes checked against the content library's), as the
    # product's documentation names the messages; the reference has no validation flow.
    2380: MessageInfo(
        "I",
        DP_MONITOR,
        'Start to evaluate package "%1" on distribution point "%2".',
        _DOC,
    ),
    2383: MessageInfo(
        "E",
        DP_MONITOR,
        'Failed to validate package "%1" on distribution point "%2". The package may not be'
        " present or may be corrupt. Please redistribute it. %3",
        _DOC,
    ),
    2384: MessageInfo(
        "I",
        DP_MONITOR,
        'Package "%1" on distribution point "%2" has been verified successfully.',
        _DOC,
    ),
    8210: MessageInfo(
        "I",
        PKGXFERMGR,
        'Package Transfer Manager successfully sent package "%1" version %2 to distribution'
        " point %3.",
    ),
    8211: MessageInfo(
        "E",
        PKGXFERMGR,
        'Pull distribution point %3 has reached its maximum capacity; package "%1" version %2'
        " will be retried later.",
    ),
    8212: MessageInfo(
        "I",
        PKGXFERMGR,
        "This pull distribution point has no sources from which it can download content."
        " We will try again later.",
    ),
}
