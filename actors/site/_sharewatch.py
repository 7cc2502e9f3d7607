"""Change notifications for the folders sites share (``SMS_SITE``, the despooler's receive box).

The product's despooler is told by the file system (a change notification on its inbox)
that a sender renamed an instruction into it; it also polls, as the safety net. This is
that notification for the sites of one process: the hierarchy's runtime owns one
``ShareWatch``, a sender says which folder it finished a file in, and whoever watches that
folder is woken to look. What crosses between sites is still only the file; the watch
carries no data, only "look now" and the file's name, keyed by the folder (as inotify or
``ReadDirectoryChangesW`` would be when sites run as separate processes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["ShareWatch"]


class ShareWatch:
    """Watchers by folder; :meth:`changed` calls them (in the event loop)."""

    def __init__(self) -> None:
        self._watchers: dict[Path, list[Callable[[str], None]]] = {}

    def watch(self, folder: Path, wake: Callable[[str], None]) -> Callable[[], None]:
        """``wake(name)`` after each file reported in ``folder``; returns the unwatch."""
        watchers = self._watchers.setdefault(folder, [])
        watchers.append(wake)

        def unwatch() -> None:
            if wake in watchers:
                watchers.remove(wake)

        return unwatch

    def changed(self, folder: Path, name: str) -> None:
        """File ``name`` was finished in ``folder`` (keep the watchers tiny: they run
        here), as a file system's notification names the file renamed in."""
        for wake in tuple(self._watchers.get(folder, ())):
            wake(name)
