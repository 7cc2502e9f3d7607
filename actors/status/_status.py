"""Status messages and component logs.

A :class:`StatusMessage` carries what the reference's ``STATMSG:`` lines carry. A
:class:`StatusReporter` stores it in the site database (``StatusMessages`` and
``StatusMessageAttributes``), publishes it on the bus topic :data:`STATUS_TOPIC`, and writes
its ``STATMSG:`` line to the component's log in CMTrace format (:class:`CMTraceLog`).
:data:`MESSAGES` is the one table of what each message ID means in the product.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import msgspec

from actors.config import server_of_nal
from actors.sitedb import SiteDatabase, StatusMessageRow, WriteOp, ops

__all__ = [
    "ATTR_DP_NAL_PATH",
    "ATTR_PACKAGE_ID",
    "ATTR_PACKAGE_VERSION",
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
    "SCHEDULER",
    "SENDER",
    "SMSDBMON",
    "STATE_SYSTEM",
    "STATUS_TOPIC",
    "CMTraceLog",
    "ComponentLogs",
    "MessageInfo",
    "Severity",
    "StatusMessage",
    "StatusReporter",
    "describe",
    "format_statmsg",
    "last_message",
    "last_message_id",
    "message_dp",
    "stored_messages",
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
DP_MONITOR = "SMS_DISTRIBUTION_POINT_MONITOR"  # content validation (smsdpmon.log)

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
    DP_MONITOR: "smsdpmon.log",
}

# Attribute IDs (AIDn=...): what AVALn holds
ATTR_PACKAGE_ID = 400
ATTR_DP_NAL_PATH = 404
ATTR_PACKAGE_VERSION = 410


class StatusMessage(msgspec.Struct, frozen=True):
    """What a ``STATMSG:`` line carries, plus where it is stored and which DP it concerns."""

    message_id: int  # 2300, 2330, 8210, ...
    severity: Severity  # "I", "W" or "E"
    component: str  # "SMS_DISTRIBUTION_MANAGER", "SMS_PACKAGE_TRANSFER_MANAGER", ...
    site: str  # "PS1"
    system: str  # "PS1SITE.CONTOSO.COM"
    time: dt.datetime
    strings: tuple[str, ...]  # ISTR0..ISTR9
    attributes: dict[int, str]  # 400: package ID, 404: DP NAL path, 410: version
    dp: str | None = None
    """The plain name of the DP the message concerns (the NAL path is attribute 404)."""
    record_id: int = 0
    """``StatusMessages.RecordID`` in the site's database (0 until stored): a subscriber
    that keeps the last one per site can replay from there after a restart."""

    @property
    def pkg_id(self) -> str | None:
        """The package it concerns (attribute 400), if any."""
        return self.attributes.get(ATTR_PACKAGE_ID)

    @property
    def nal_path(self) -> str | None:
        """The NAL path of the DP it concerns (attribute 404), if any."""
        return self.attributes.get(ATTR_DP_NAL_PATH)


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


def describe(msg: StatusMessage) -> str:
    """The message's text with its insertion strings filled in."""
    info = MESSAGES.get(msg.message_id)
    if info is None:
        return f"Status message {msg.message_id}"
    text = info.text
    for i in range(10, 0, -1):  # %10 before %1
        text = text.replace(f"%{i}", msg.strings[i - 1] if i <= len(msg.strings) else "")
    return text


def format_statmsg(msg: StatusMessage, *, pid: int = 0, tid: int = 0) -> str:
    """The reference's ``STATMSG:`` line for a status message."""
    strings = [*msg.strings[:10], *([""] * (10 - len(msg.strings[:10])))]
    istr = " ".join(f'ISTR{i}="{s}"' for i, s in enumerate(strings))
    attrs = "".join(
        f' AID{i}={aid} AVAL{i}="{val}"' for i, (aid, val) in enumerate(msg.attributes.items())
    )
    gmt = msg.time.astimezone(dt.UTC)
    gmtdate = gmt.strftime("%a %b %d %H:%M:%S.") + f"{gmt.microsecond // 1000:03d} {gmt.year}"
    return (
        f'STATMSG: ID={msg.message_id} SEV={msg.severity} LEV=M SOURCE="SMS Server"'
        f' COMP="{msg.component}" SYS={msg.system} SITE={msg.site} PID={pid} TID={tid}'
        f" GMTDATE={gmtdate} {istr} NUMATTRS={len(msg.attributes)}{attrs}"
    )


_CMTRACE_TYPE = {"I": 1, "W": 2, "E": 3}


class CMTraceLog:
    """One component's log file in CMTrace format, appended to.

    Lines are buffered and reach the file within ``flush_delay`` seconds (one write call
    for everything logged in between), at :meth:`flush`, or at :meth:`close`. Written from
    a thread with no event loop, a line is flushed at once. Safe to use from several threads.
    """

    def __init__(self, path: Path, component: str, *, flush_delay: float = 0.05) -> None:
        self.path = path
        self.component = component
        self.flush_delay = flush_delay
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pending: list[str] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ("", "")

    def write(
        self,
        message: str,
        *,
        severity: str = "I",
        when: dt.datetime | None = None,
        thread: int | None = None,
    ) -> None:
        self.write_lines((message,), severity=severity, when=when, thread=thread)

    def write_lines(
        self,
        messages: Iterable[str],
        *,
        severity: str = "I",
        when: dt.datetime | None = None,
        thread: int | None = None,
    ) -> None:
        """Several lines with one time stamp (cheaper than one :meth:`write` each)."""
        ts = time.time() if when is None else when.timestamp()
        second = int(ts)
        if second != self._second:  # format the date and time once per second
            t = time.gmtime(second)
            self._stamp = (time.strftime("%H:%M:%S", t), time.strftime("%m-%d-%Y", t))
            self._second = second
        hms, date = self._stamp
        tid = thread if thread is not None else threading.get_native_id()
        tail = (
            f']LOG]!><time="{hms}.{int((ts - second) * 1000):03d}+000" date="{date}"'
            f' component="{self.component}" context="" type="{_CMTRACE_TYPE.get(severity, 1)}"'
            f' thread="{tid}" file="">\n'
        )
        lines = [f"<![LOG[{m}{tail}" for m in messages]
        with self._lock:
            self._pending.extend(lines)
            if self._scheduled:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._scheduled = True
        if loop is None:
            self.flush()
        else:
            loop.call_later(self.flush_delay, self.flush)

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if not self._pending:
                return
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write("".join(self._pending))
            self._pending.clear()
            self._file.flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ComponentLogs:
    """The CMTrace logs of one server's components, in its ``logs/`` folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._logs: dict[str, CMTraceLog] = {}

    def __getitem__(self, component: str) -> CMTraceLog:
        log = self._logs.get(component)
        if log is None:
            name = LOG_FILES.get(component, f"{component}.log")
            log = self._logs[component] = CMTraceLog(self.folder / name, component)
        return log

    def flush(self) -> None:
        for log in self._logs.values():
            log.flush()

    def close(self) -> None:
        for log in self._logs.values():
            log.close()


Publish = Callable[[str, StatusMessage], Awaitable[object]]


class StatusReporter:
    """Raises status messages for one site server: store, publish, log."""

    def __init__(
        self,
        db: SiteDatabase,
        logs: ComponentLogs,
        *,
        site: str,
        system: str,
        publish: Publish | None = None,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.db = db
        self.logs = logs
        self.site = site
        self.system = system
        self.publish = publish
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._pid = os.getpid()

    def message(
        self,
        message_id: int,
        strings: Sequence[str] = (),
        attributes: Mapping[int, str] | None = None,
        *,
        severity: Severity | None = None,
        component: str | None = None,
        time: dt.datetime | None = None,
    ) -> StatusMessage:
        """Build a message; severity and component default to :data:`MESSAGES`' entry."""
        info = MESSAGES.get(message_id)
        if info is None and (severity is None or component is None):
            raise KeyError(
                f"status message {message_id} is not in MESSAGES: give its severity and component"
            )
        if len(strings) > 10:
            raise ValueError(f"status message {message_id}: at most 10 insertion strings")
        component = component or (info.component if info else "")
        attrs = dict(attributes or {})
        return StatusMessage(
            message_id=message_id,
            severity=severity or (info.severity if info else "I"),
            component=component,
            site=self.site,
            system=self.system,
            time=time or self._now(),
            strings=tuple(strings),
            attributes=attrs,
            dp=message_dp(component, tuple(strings), attrs),
        )

    async def report(
        self,
        message_id: int,
        strings: Sequence[str] = (),
        attributes: Mapping[int, str] | None = None,
        *,
        severity: Severity | None = None,
        component: str | None = None,
        thread: int | None = None,
        op: WriteOp[Any] | None = None,
    ) -> StatusMessage:
        """Raise one message; ``op`` is the row change it reports, stored in the same
        transaction (one commit, and no reader sees the change without its message)."""
        msg = self.message(message_id, strings, attributes, severity=severity, component=component)
        (record_id,) = await self.raise_messages((msg,), thread=thread, op=op)
        return msgspec.structs.replace(msg, record_id=record_id)

    async def raise_message(self, msg: StatusMessage, *, thread: int | None = None) -> int:
        """Store, log and publish an already built message; returns its RecordID."""
        (record_id,) = await self.raise_messages((msg,), thread=thread)
        return record_id

    async def raise_messages(
        self,
        msgs: Sequence[StatusMessage],
        *,
        thread: int | None = None,
        op: WriteOp[Any] | None = None,
    ) -> list[int]:
        """Store messages (and ``op``) in one transaction, then log and publish them in
        order; returns their RecordIDs."""

        def write(conn: sqlite3.Connection) -> list[int]:
            if op is not None:
                op(conn)
            return [_store(conn, m) for m in msgs]

        record_ids = await self.db.write(write)
        msgs = [
            msgspec.structs.replace(m, record_id=rid)
            for m, rid in zip(msgs, record_ids, strict=True)
        ]
        tid = thread if thread is not None else threading.get_native_id()
        for msg in msgs:
            line = format_statmsg(msg, pid=self._pid, tid=tid)
            # Buffered: the log reaches the file within its flush delay, not per message.
            self.logs[msg.component].write(line, severity=msg.severity, when=msg.time, thread=tid)
        if self.publish is not None:
            for msg in msgs:
                await self.publish(STATUS_TOPIC, msg)
        return record_ids


def _store(conn: sqlite3.Connection, msg: StatusMessage) -> int:
    return ops.insert_status_message(
        conn,
        StatusMessageRow(
            record_id=0,
            message_id=msg.message_id,
            severity=msg.severity,
            component=msg.component,
            site=msg.site,
            system=msg.system,
            time=msg.time.astimezone(dt.UTC).isoformat(timespec="milliseconds"),
            strings=msg.strings,
            attributes=msg.attributes,
        ),
    )


async def last_message(db: SiteDatabase, pkg_id: str, nal_path: str) -> StatusMessage | None:
    """The latest status message about this package on this DP: one that names the DP, or
    an error about the whole package (its processing failed, so nothing reaches the DP)."""
    record = await db.last_message_record(pkg_id, nal_path)
    if record is None:
        return None
    found = await stored_messages(db, since_record=record - 1, limit=1)
    return found[0] if found else None


async def last_message_id(db: SiteDatabase, pkg_id: str, nal_path: str) -> int | None:
    """The ID of :func:`last_message`, if any."""
    msg = await last_message(db, pkg_id, nal_path)
    return None if msg is None else msg.message_id


async def stored_messages(
    db: SiteDatabase, *, since_record: int = 0, limit: int = -1
) -> list[StatusMessage]:
    """Status messages stored in a site database after ``since_record``, oldest first
    (at most ``limit``; -1: all)."""
    return [_message(row) for row in await db.status_messages(since_record, limit)]


def _message(row: StatusMessageRow) -> StatusMessage:
    severity: Severity = "E" if row.severity == "E" else "W" if row.severity == "W" else "I"
    return StatusMessage(
        message_id=row.message_id,
        severity=severity,
        component=row.component,
        site=row.site,
        system=row.system,
        time=dt.datetime.fromisoformat(row.time),
        strings=row.strings,
        attributes=row.attributes,
        dp=message_dp(row.component, row.strings, row.attributes),
        record_id=row.record_id,
    )


def message_dp(
    component: str, strings: tuple[str, ...], attributes: Mapping[int, str]
) -> str | None:
    """The DP a message concerns, by plain name: from its NAL path attribute, or for
    PkgXferMgr's messages (whose 8200 names no DP attribute) from its third string."""
    nal = attributes.get(ATTR_DP_NAL_PATH)
    if nal is not None:
        return server_of_nal(nal)
    if component == PKGXFERMGR and len(strings) > 2 and strings[2]:
        return strings[2]
    return None
