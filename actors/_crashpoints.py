"""Named crash points: where a crash-consistency test may kill the process on purpose.

``CMDIST_CRASH_AT=distmgr.version_committed`` (or ``name:N``, the Nth time the point is
reached; several separated by commas) makes :func:`crash_point` SIGKILL the process there,
with no cleanup, as a power cut or ``kill -9`` would. Unset (the normal case), a crash point
is one dictionary lookup. The points name the windows between one commit and the next
that the reliability rules are about: whatever must happen after the kill has to be found
again in the database or on disk, never in memory.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_AT_ENV", "crash_point"]

CRASH_AT_ENV = "CMDIST_CRASH_AT"


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition(":")
        points[name] = int(nth) if nth else 1
    return points


_armed = _parse(os.environ.get(CRASH_AT_ENV, ""))
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Kill the process here if ``CMDIST_CRASH_AT`` names this point (and its count is due)."""
    if not _armed or name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
