"""CMTrace logs: the components' ``.log`` files in the format the product's tools read."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from actors.status._catalog import LOG_FILES
from actors.status._message import StatusMessage
from actors.status._threads import current_thread_id

__all__ = [
    "CMTraceLog",
    "ComponentLogs",
    "format_statmsg",
]


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

# A line (or lines with one stamp) waiting to be written: messages, time, thread, type.
_Entry = tuple[tuple[str, ...], float, int, int]


class CMTraceLog:
    """One component's log file in CMTrace format, appended to.

    Lines are buffered and reach the file within ``flush_delay`` seconds (one write call
    for everything logged in between), at :meth:`flush`, or at :meth:`close`. Written from
    a thread with no event loop, a line is flushed at once. Safe to use from several threads.

    Half a second: a busy site's dozen logs written every 50 ms cost a write call each,
    ~8% of a distribution's CPU; readers (tests, ``cmdist``) flush first or read after
    the close.
    """

    def __init__(self, path: Path, component: str, *, flush_delay: float = 0.5) -> None:
        self.path = path
        self.component = component
        self.flush_delay = flush_delay
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._pending: list[_Entry] = []
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
        """Several lines with one time stamp (cheaper than one :meth:`write` each).

        The lines are formatted when they are flushed, off the caller's path (the time
        stamp, thread and severity are taken now)."""
        ts = time.time() if when is None else when.timestamp()
        tid = thread if thread is not None else current_thread_id()
        self._add((tuple(messages), ts, tid, _CMTRACE_TYPE.get(severity, 1)))

    def write_at(self, message: str, ts: float, thread: int, severity: str = "I") -> None:
        """One line stamped ``ts`` (POSIX seconds) for ``thread``: :meth:`write` without
        building a datetime (a component's trace line, the hot path)."""
        self._add(((message,), ts, thread, _CMTRACE_TYPE.get(severity, 1)))

    def _add(self, entry: _Entry) -> None:
        with self._lock:
            self._pending.append(entry)
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

    def _format(self, entries: list[_Entry]) -> str:
        out: list[str] = []
        component = self.component
        for messages, ts, tid, kind in entries:
            second = int(ts)
            if second != self._second:  # format the date and time once per second
                t = time.gmtime(second)
                self._stamp = (time.strftime("%H:%M:%S", t), time.strftime("%m-%d-%Y", t))
                self._second = second
            hms, date = self._stamp
            tail = (
                f']LOG]!><time="{hms}.{int((ts - second) * 1000):03d}+000" date="{date}"'
                f' component="{component}" context="" type="{kind}"'
                f' thread="{tid}" file="">\n'
            )
            out.extend(f"<![LOG[{m}{tail}" for m in messages)
        return "".join(out)

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if not self._pending:
                return
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
            self._file.write(self._format(self._pending))
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
