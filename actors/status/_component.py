"""The base of every product component: an actor with its CMTrace log."""

from __future__ import annotations

from actors.status._catalog import Severity
from actors.status._cmtrace import CMTraceLog
from actors.status._threads import adopt_thread_id, current_thread_id, new_thread_id
from bus import Actor

__all__ = [
    "Component",
]


class Component(Actor):
    """A site-server or DP component: writes its log (``distmgr.log``, ``PkgXferMgr.log``,
    ...) with :meth:`trace`, the product's words in CMTrace format."""

    trace_log: CMTraceLog | None = None
    _main_thread: int | None = None

    @property
    def main_thread_id(self) -> int:
        """The component's main thread: its handlers and its own background tasks."""
        if self._main_thread is None:
            self._main_thread = new_thread_id()
        return self._main_thread

    def thread_id(self) -> int:
        """The thread the caller logs as: a processing, DP or sending thread inside
        ``as_thread``, else the component's main thread."""
        adopt_thread_id(self.main_thread_id)
        return current_thread_id()

    def trace(self, line: str, *, severity: Severity = "I") -> None:
        """One line of the component's log (a ``~`` prefix marks the product's verbose lines)."""
        if self.trace_log is not None:
            # The bus clock's time: one clock stamps every line, row and status message.
            self.trace_log.write_at(line, self.clock.wall_time(), self.thread_id(), severity)
