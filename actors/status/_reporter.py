"""The reporter: a status message stored (with the row change it reports), logged and
published, in that order; and the stored ones read back."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from actors.sitedb import SiteDatabase, StatusMessageRow, WriteOp, ops
from actors.status._catalog import MESSAGES, STATUS_TOPIC, Severity
from actors.status._cmtrace import ComponentLogs, format_statmsg
from actors.status._message import StatusMessage, message_dp
from actors.status._threads import current_thread_id, site_pid

__all__ = [
    "StatusReporter",
    "last_message",
    "last_message_id",
    "stored_message",
    "stored_messages",
]


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
        self._pid = site_pid(site)

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
        log: bool = True,
    ) -> StatusMessage:
        """Raise one message; ``op`` is the row change it reports, stored in the same
        transaction (one commit, and no reader sees the change without its message).
        ``log=False``: the caller writes its STATMSG line later (:meth:`log`), where the
        product's log has it."""
        msg = self.message(message_id, strings, attributes, severity=severity, component=component)
        (record_id,) = await self.raise_messages((msg,), thread=thread, op=op, log=log)
        return msgspec.structs.replace(msg, record_id=record_id)

    def log(self, msg: StatusMessage, *, thread: int | None = None) -> None:
        """The message's STATMSG line in its component's log (buffered: it reaches the file
        within the log's flush delay, not per message)."""
        tid = thread if thread is not None else current_thread_id()
        line = format_statmsg(msg, pid=self._pid, tid=tid)
        self.logs[msg.component].write(line, severity=msg.severity, when=msg.time, thread=tid)

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
        log: bool = True,
    ) -> list[int]:
        """Store messages (and ``op``) in one transaction, then log (unless ``log`` is
        False) and publish them in order; returns their RecordIDs."""

        def write(conn: sqlite3.Connection) -> list[int]:
            if op is not None:
                op(conn)
            return [_store(conn, m) for m in msgs]

        record_ids = await self.db.write(write)
        msgs = [
            msgspec.structs.replace(m, record_id=rid)
            for m, rid in zip(msgs, record_ids, strict=True)
        ]
        if log:
            for msg in msgs:
                self.log(msg, thread=thread)
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
    row = await db.last_message(pkg_id, nal_path)
    return None if row is None else stored_message(row)


async def last_message_id(db: SiteDatabase, pkg_id: str, nal_path: str) -> int | None:
    """The ID of :func:`last_message`, if any."""
    msg = await last_message(db, pkg_id, nal_path)
    return None if msg is None else msg.message_id


async def stored_messages(
    db: SiteDatabase, *, since_record: int = 0, limit: int = -1
) -> list[StatusMessage]:
    """Status messages stored in a site database after ``since_record``, oldest first
    (at most ``limit``; -1: all)."""
    return [stored_message(row) for row in await db.status_messages(since_record, limit)]


def stored_message(row: StatusMessageRow) -> StatusMessage:
    """A stored message as it was raised."""
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
