"""The base of every product component: an actor with its CMTrace log."""

from __future__ import annotations

from actors.status._catalog import Severity
from actors.status._cmtrace import CMTraceLog
from bus import Actor

__all__ = [
    "Component",
]


class Component(Actor):
    """A site-server or DP component: writes its log (``distmgr.log``, ``PkgXferMgr.log``,
    ...) with :meth:`trace`, the product's words in CMTrace format."""

    trace_log: CMTraceLog | None = None

    def trace(self, line: str, *, severity: Severity = "I") -> None:
        """One line of the component's log (a ``~`` prefix marks the product's verbose lines)."""
        if self.trace_log is not None:
            # The bus clock's time: one clock stamps every line, row and status message.
            self.trace_log.write(line, severity=severity, when=self.clock.wall())
